"""The event loop the SMPP connector runs on: uvloop where it is installed.

Every submit answer and every receipt reaches the connector from smpp34's
Rust threads through ``loop.call_soon_threadsafe``. The standard asyncio
loop then reads its wake-up socket, two ``recv`` calls per wake-up, each one
giving the GIL up and waiting to get it back while the gateway's other
threads (ledger writes, the FTP loop) want it too. Profiled with cProfile in
``bench/dispatch.py``, that wake-up socket alone took a tenth of the
connector thread's time, and the loop's own machinery most of the rest.
uvloop (libuv, written in C) wakes and runs the loop without those round
trips: the same benchmark went from 4,700-5,100 to 7,300-7,500 msg/s.
"""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new uvloop loop, or the standard one where uvloop is not available (Windows)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def describe(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
