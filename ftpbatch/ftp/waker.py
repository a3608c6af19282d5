"""Run a function on pyftpdlib's loop thread from any other thread.

pyftpdlib's loop is not thread-safe; a socketpair registered with the loop
wakes it, and the queued calls run on the loop thread, in order.
"""

from __future__ import annotations

import collections
import logging
import socket
from typing import Any, Callable

from pyftpdlib.ioloop import AsyncChat

log = logging.getLogger(__name__)


class LoopWaker(AsyncChat):
    def __init__(self, ioloop: Any) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._calls: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = collections.deque()
        super().__init__(self._reader, ioloop)

    def call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        """Thread-safe: ``fn(*args)`` runs on the loop thread shortly."""
        self._calls.append((fn, args))
        try:
            self._writer.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or the loop is closing

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        try:
            self._reader.recv(4096)
        except (BlockingIOError, OSError):
            pass
        while self._calls:
            fn, args = self._calls.popleft()
            try:
                fn(*args)
            except Exception:
                log.exception("loop call %r failed", fn)

    def close(self) -> None:
        super().close()
        self._writer.close()
