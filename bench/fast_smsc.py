"""A fast SMPP 3.4 SMSC for benchmarks only: answers and receipts, nothing recorded.

    python bench/fast_smsc.py --port 0 [--host 127.0.0.1] [--receipt-delay 0] [--bind-tps N]
                              [--engine batched|smpp34] [--loop uvloop|asyncio]

Why: the test SMSC (tests/smsc/server.py: pure Python, the smpp.pdu3 codec,
one JSON record per event) spends ~0.3 ms of CPU per message with its
receipt, so on a two-core machine it, not the clients, set the pace of
bench/dispatch.py (~3,000-4,000 msg/s). This one spends ~15-20 µs.

Like the test SMSC it prints ``PORT <n>`` once it listens and stops on
SIGTERM / SIGINT. It binds anyone (transceiver, transmitter, receiver),
answers every submit_sm with a fresh hex id (a counter, never repeated) and,
when the submit asks for a receipt on success (registered_delivery & 3 == 1;
2 asks on failure only, and every message here is delivered), sends after
the answer (``--receipt-delay`` s later; 0: right after it) a DELIVRD
receipt to the newest receiver of the same system_id (parked until one
binds): esm_class 0x04, the addresses swapped, the SMPP 3.4 Appendix B
text, the TLVs receipted_message_id and message_state (2, DELIVERED).
``--bind-tps N`` paces each connection's answers to N a second.

Engines: ``batched`` (default), an asyncio protocol (uvloop when installed)
with a minimal ``struct`` codec of its own that answers all the PDUs of one
read in one write, receipts included; ``smpp34``, smpp34's Rust server,
kept to compare: its Python bridge resolves an asyncio future per
submit_sm and per receipt from its tokio threads (a GIL hand-over and a
thread wake-up each), ~0.16-0.2 ms of CPU per message here.

Not done: query_sm (generic_nack), MO, re-delivery of receipts never
answered, the test SMSC's misbehaviours. The tests keep using
tests/smsc/server.py: its codec is independent of smpp34's (which
ftpbatch's connector uses) on purpose, so a codec bug cannot hide on both
sides.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import math
import os
import signal
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable
from itertools import count
from typing import Any

FIRST_ID = 0x10000000  # ids of 8+ hex digits; counting up, never repeated in a process
SYSTEM_ID = b"FASTSMSC"

# SMPP 3.4 command ids and statuses used here
GENERIC_NACK = 0x80000000
RESP = 0x80000000
BIND_RECEIVER = 0x01
BIND_TRANSMITTER = 0x02
SUBMIT_SM = 0x04
DELIVER_SM = 0x05
UNBIND = 0x06
BIND_TRANSCEIVER = 0x09
ENQUIRE_LINK = 0x15
ESME_RINVCMDLEN = 0x02
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESM_DELIVERY_RECEIPT = 0x04
TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MESSAGE_STATE = 0x0427
DELIVERED = 2

HEADER = struct.Struct("!LLLL")


def receipt_text(message_id: bytes, stamp: bytes) -> bytes:
    """The receipt's short_message (SMPP 3.4 Appendix B), the message delivered."""
    return b"id:%s sub:001 dlvrd:001 submit date:%s done date:%s stat:DELIVRD err:000 text:" % (
        message_id, stamp, stamp)


class Clock:
    """The receipts' submit and done date (YYMMDDhhmm, UTC), renewed every second rather than per receipt."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.stamp = b""
        self._renew()

    def _renew(self) -> None:
        self.stamp = dt.datetime.now(dt.UTC).strftime("%y%m%d%H%M").encode()
        self.loop.call_later(1.0, self._renew)


class Due:
    """Receipts sent ``--receipt-delay`` after their answers: one timer per millisecond, not per receipt."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, send: Callable[[Any], None]) -> None:
        self.loop = loop
        self.delay = delay
        self.send = send
        self.buckets: dict[int, list[Any]] = {}

    def add(self, item: Any) -> None:
        tick = math.ceil((self.loop.time() + self.delay) * 1000)  # never early, at most 1 ms late
        bucket = self.buckets.get(tick)
        if bucket is None:
            bucket = self.buckets[tick] = []
            self.loop.call_at(tick / 1000, self._fire, tick)
        bucket.append(item)

    def _fire(self, tick: int) -> None:
        for item in self.buckets.pop(tick, ()):
            self.send(item)


# --- engine "batched": an asyncio protocol with its own minimal codec ------------------------


class BatchedSmsc:
    """What the connections share: the id counter, the receivers, parked and delayed receipts."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receipt_delay: float, bind_tps: float) -> None:
        self.loop = loop
        self.ids = count(FIRST_ID)
        self.interval = 1.0 / bind_tps if bind_tps > 0 else 0.0
        self.clock = Clock(loop)
        self.due = Due(loop, receipt_delay, self._deliver_due) if receipt_delay > 0 else None
        self.receivers: dict[bytes, list[Connection]] = {}  # system_id -> receiving connections, newest last
        self.parked: dict[bytes, list[bytes]] = {}  # system_id -> receipt bodies waiting for a receiver
        self.connections: set[Connection] = set()

    def receiver(self, system_id: bytes) -> Connection | None:
        receivers = self.receivers.get(system_id)
        return receivers[-1] if receivers else None

    def deliver(self, system_id: bytes, body: bytes) -> None:
        """A receipt (a deliver_sm body) to the newest receiver of ``system_id``, or parked until one binds."""
        target = self.receiver(system_id)
        if target is None:
            self.parked.setdefault(system_id, []).append(body)
        else:
            target.push_deliver(body)

    def _deliver_due(self, item: tuple[bytes, bytes]) -> None:
        self.deliver(*item)


class Connection(asyncio.Protocol):
    def __init__(self, smsc: BatchedSmsc) -> None:
        self.smsc = smsc
        self.transport: asyncio.Transport | None = None
        self.rest = b""  # the start of a PDU not complete yet
        self.out: list[bytes] = []  # PDUs written at the end of this loop turn
        self.flush_scheduled = False
        self.system_id: bytes | None = None
        self.transmits = False
        self.receives = False
        self.seq = 0  # sequence numbers of our deliver_sm
        self.closing = False
        # --bind-tps: the loop time of the next free answer slot, the submit_sm waiting for theirs
        self.next_at = 0.0
        self.waiting: deque[tuple[int, bytes, bytes]] = deque()
        self.drain_armed = False

    # --- transport ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass it
        self.smsc.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()
        self.smsc.connections.discard(self)
        self.waiting.clear()
        self.out.clear()

    def _leave(self) -> None:
        """No more receipts to this connection: the next ones go to another receiver, or are parked."""
        self.closing = True
        if self.receives and self.system_id is not None:
            receivers = self.smsc.receivers.get(self.system_id, [])
            if self in receivers:
                receivers.remove(self)

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.out:
            if self.transport is not None and not self.closing:
                self.transport.write(b"".join(self.out))
            self.out.clear()

    def push(self, pdu: bytes) -> None:
        """A PDU written at the end of this loop turn, with whatever else is written in it."""
        if self.closing:
            return
        self.out.append(pdu)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.smsc.loop.call_soon(self.flush)

    def push_deliver(self, body: bytes) -> None:
        self.seq = self.seq % 0x7FFFFFFF + 1
        self.push(HEADER.pack(16 + len(body), DELIVER_SM, 0, self.seq) + body)

    def close(self) -> None:
        """Close once what is answered so far is written."""
        self.flush()
        self._leave()
        if self.transport is not None:
            self.transport.close()

    # --- PDUs ---------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        buf = self.rest + data if self.rest else data
        size = len(buf)
        at = 0
        out = self.out
        unpack = HEADER.unpack_from
        while size - at >= 16 and not self.closing:
            length, command_id, _, seq = unpack(buf, at)
            if length < 16 or length > 0x10000:
                self.close()  # framing lost
                return
            end = at + length
            if end > size:
                break
            if command_id == SUBMIT_SM:
                self.on_submit(buf, at, end, seq)
            elif command_id & RESP:
                if command_id == UNBIND | RESP:
                    self.close()
                # deliver_sm_resp and the others: nothing to do
            elif command_id in (BIND_TRANSCEIVER, BIND_TRANSMITTER, BIND_RECEIVER):
                self.on_bind(buf, at, end, command_id, seq)
            elif command_id == ENQUIRE_LINK:
                out.append(HEADER.pack(16, ENQUIRE_LINK | RESP, 0, seq))
            elif command_id == UNBIND:
                out.append(HEADER.pack(16, UNBIND | RESP, 0, seq))
                self.close()
                return
            else:
                out.append(HEADER.pack(16, GENERIC_NACK, ESME_RINVCMDID, seq))
            at = end
        self.rest = buf[at:]
        self.flush()

    def on_bind(self, buf: bytes, at: int, end: int, command_id: int, seq: int) -> None:
        if self.system_id is not None:
            self.out.append(HEADER.pack(16, command_id | RESP, ESME_RALYBND, seq))
            return
        nul = buf.find(b"\0", at + 16, end)
        self.system_id = buf[at + 16 : nul if nul >= 0 else end]
        self.transmits = command_id != BIND_RECEIVER
        self.receives = command_id != BIND_TRANSMITTER
        self.out.append(HEADER.pack(16 + len(SYSTEM_ID) + 1, command_id | RESP, 0, seq) + SYSTEM_ID + b"\0")
        if self.receives:
            smsc = self.smsc
            smsc.receivers.setdefault(self.system_id, []).append(self)
            for body in smsc.parked.pop(self.system_id, ()):
                self.push_deliver(body)

    def on_submit(self, buf: bytes, at: int, end: int, seq: int) -> None:
        if not self.transmits:
            self.out.append(HEADER.pack(16, SUBMIT_SM | RESP, ESME_RINVBNDSTS, seq))
            return
        # service_type, source ton/npi/addr, dest ton/npi/addr, esm_class, protocol_id,
        # priority_flag, schedule_delivery_time, validity_period, registered_delivery, ...
        find = buf.find
        source_at = find(b"\0", at + 16, end) + 1
        source_end = find(b"\0", source_at + 2, end)
        dest_end = find(b"\0", source_end + 3, end)
        schedule_end = find(b"\0", dest_end + 4, end)
        validity_end = find(b"\0", schedule_end + 1, end)
        if min(source_at - 1, source_end, dest_end, schedule_end, validity_end) < 0 or validity_end + 1 >= end:
            self.out.append(HEADER.pack(16, GENERIC_NACK, ESME_RINVCMDLEN, seq))
            return
        if buf[validity_end + 1] & 3 != 1:
            submit = (seq, b"", b"")  # no receipt asked for
        else:
            # the receipt's source is the submit's destination and the other way round, ton/npi included
            submit = (seq, buf[source_end + 1 : dest_end], buf[source_at : source_end])
        if self.smsc.interval:
            self.pace(submit)
        else:
            self.answer(submit)

    def answer(self, submit: tuple[int, bytes, bytes]) -> None:
        seq, source, dest = submit
        smsc = self.smsc
        message_id = b"%X" % next(smsc.ids)
        self.out.append(HEADER.pack(17 + len(message_id), SUBMIT_SM | RESP, 0, seq) + message_id + b"\0")
        if not source:
            return
        # source / dest: ton, npi, address (the address without its NUL)
        text = receipt_text(message_id, smsc.clock.stamp)
        body = b"\0%s\0%s\0\x04\0\0\0\0\0\0\0\0%c%s\x00\x1e\x00%c%s\0\x04\x27\x00\x01\x02" % (
            source, dest, len(text), text, len(message_id) + 1, message_id)
        assert self.system_id is not None
        if smsc.due is not None:
            smsc.due.add((self.system_id, body))
        elif self.receives and smsc.receiver(self.system_id) is self:
            self.seq = self.seq % 0x7FFFFFFF + 1
            self.out.append(HEADER.pack(16 + len(body), DELIVER_SM, 0, self.seq) + body)
        else:
            smsc.deliver(self.system_id, body)

    def pace(self, submit: tuple[int, bytes, bytes]) -> None:
        """``--bind-tps``: answered now when the connection's slot is free, else in its turn."""
        loop = self.smsc.loop
        now = loop.time()
        if not self.waiting and self.next_at <= now:
            self.next_at = now + self.smsc.interval
            self.answer(submit)
            return
        self.waiting.append(submit)
        if not self.drain_armed:
            self.drain_armed = True
            loop.call_at(self.next_at, self._drain)

    def _drain(self) -> None:
        self.drain_armed = False
        if self.closing:
            return
        loop = self.smsc.loop
        now = loop.time()
        while self.waiting and self.next_at <= now:  # a late timer answers what is overdue: N a second on average
            self.next_at += self.smsc.interval
            self.answer(self.waiting.popleft())
        self.flush()
        if self.waiting:
            self.drain_armed = True
            loop.call_at(self.next_at, self._drain)


async def serve_batched(host: str, port: int, receipt_delay: float, bind_tps: float, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    smsc = BatchedSmsc(loop, receipt_delay, bind_tps)
    server = await loop.create_server(lambda: Connection(smsc), host, port)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()
    for connection in list(smsc.connections):
        connection.close()
    await server.wait_closed()


# --- engine "smpp34": smpp34's Rust server, one Python call per event -----------------------


def listening_port(port: int) -> int:
    """The port this process listens on: smpp34's Server does not say which one port 0 gave it.

    Read from /proc (Linux): the one listening TCP socket among this process's file descriptors.
    """
    if port:
        return port
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                return int(fields[1].rsplit(":", 1)[1], 16)
    raise RuntimeError("smpp34's server listens on no socket this process can find in /proc")


class Smpp34Smsc:
    """Events from ``smpp34.Server.next()``: binds (``Esme``), ``SubmitSmEvent``, ``Unbound``."""

    def __init__(self, smpp34: Any, server: Any, loop: asyncio.AbstractEventLoop, receipt_delay: float,
                 bind_tps: float) -> None:
        self.smpp34 = smpp34
        self.server = server
        self.loop = loop
        self.interval = 1.0 / bind_tps if bind_tps > 0 else 0.0
        self.ids = count(FIRST_ID)
        self.clock = Clock(loop)
        self.due = Due(loop, receipt_delay, self.receipt) if receipt_delay > 0 else None
        self.state_tlv = smpp34.Tlv(TLV_MESSAGE_STATE, bytes([DELIVERED]))
        self.system_of: dict[str, str] = {}  # session_id -> system_id
        self.receivers: dict[str, list[Any]] = {}  # system_id -> receiving Esme handles, newest last
        self.route: dict[str, Any] = {}  # session_id -> the Esme its receipts go to (a cache, cleared on binds)
        self.parked: dict[str, list[tuple[str, bytes, Any]]] = {}  # system_id -> receipts waiting for a receiver
        # --bind-tps, per session: [next free answer slot, waiting events, timer armed]
        self.pacers: dict[str, list[Any]] = {}

    async def run(self) -> None:
        next_event = self.server.next
        submit_event = self.smpp34.SubmitSmEvent
        answer = self.answer
        paced = self.interval > 0
        while True:
            event = await next_event()  # one call at a time: with several pending, clients got ESME_RSYSERR
            if event.__class__ is not submit_event:
                self.on_session(event)
            elif paced:
                self.pace(event)
            else:
                answer(event)

    def on_session(self, event: Any) -> None:
        smpp34 = self.smpp34
        if isinstance(event, smpp34.Esme):
            session, system_id = event.session_id, event.system_id
            self.system_of[session] = system_id
            if event.can_receive:
                self.receivers.setdefault(system_id, []).append(event)
                self.route.clear()
                for item in self.parked.pop(system_id, ()):
                    self.receipt(item)
        elif isinstance(event, smpp34.Unbound):
            session = event.session_id
            system_id = self.system_of.pop(session, None)
            pacer = self.pacers.pop(session, None)
            if pacer is not None:
                pacer[1].clear()  # its waiting submit_sm went with the connection
            if system_id in self.receivers:
                self.receivers[system_id] = [e for e in self.receivers[system_id] if e.session_id != session]
            self.route.clear()

    def answer(self, event: Any) -> None:
        message_id = "%X" % next(self.ids)
        event.accept(message_id)
        if event.registered_delivery & 3 == 1:
            item = (event.session_id, message_id.encode(), event)
            if self.due is not None:
                self.due.add(item)
            else:
                self.receipt(item)

    def receipt(self, item: tuple[str, bytes, Any]) -> None:
        session, message_id, submit = item
        try:
            esme = self.route[session]
        except KeyError:
            system_id = self.system_of.get(session)
            receivers = self.receivers.get(system_id) if system_id is not None else None
            esme = self.route[session] = receivers[-1] if receivers else None
        if esme is None:
            system_id = self.system_of.get(session)
            if system_id is not None:  # still bound: kept until a receiver of its system_id binds
                self.parked.setdefault(system_id, []).append(item)
            return
        # Not awaited: the core sends it at once; a failure reaches the loop's exception handler.
        esme.deliver_sm(
            submit.source_addr, receipt_text(message_id, self.clock.stamp),
            source_addr=submit.destination_addr, source_addr_ton=submit.dest_addr_ton,
            source_addr_npi=submit.dest_addr_npi, dest_addr_ton=submit.source_addr_ton,
            dest_addr_npi=submit.source_addr_npi, esm_class=ESM_DELIVERY_RECEIPT,
            tlvs=[self.smpp34.Tlv(TLV_RECEIPTED_MESSAGE_ID, message_id + b"\0"), self.state_tlv])

    def pace(self, event: Any) -> None:
        """``--bind-tps``: answered now when the session's slot is free, else in its turn."""
        pacer = self.pacers.get(event.session_id)
        if pacer is None:
            pacer = self.pacers[event.session_id] = [0.0, deque(), False]
        now = self.loop.time()
        if not pacer[1] and pacer[0] <= now:
            pacer[0] = now + self.interval
            self.answer(event)
            return
        pacer[1].append(event)
        if not pacer[2]:
            pacer[2] = True
            self.loop.call_at(pacer[0], self._drain, pacer)

    def _drain(self, pacer: list[Any]) -> None:
        pacer[2] = False
        now = self.loop.time()
        waiting = pacer[1]
        while waiting and pacer[0] <= now:
            pacer[0] += self.interval
            self.answer(waiting.popleft())
        if waiting:
            pacer[2] = True
            self.loop.call_at(pacer[0], self._drain, pacer)


async def serve_smpp34(host: str, port: int, receipt_delay: float, bind_tps: float, stop: asyncio.Event) -> None:
    # One tokio thread for the Rust core. accept() and deliver_sm() reach the connection by different
    # tasks: with two threads (smpp34's default) 2-9% of the receipts overtook their answers on the
    # wire; with one, none did (in ~20,000 checked), and it costs no throughput here.
    os.environ["SMPP34_WORKER_THREADS"] = "1"
    import smpp34

    loop = asyncio.get_running_loop()
    server = smpp34.Server(host, port, system_id=SYSTEM_ID.decode(), inbound_capacity=65536)
    await server.start()
    smsc = Smpp34Smsc(smpp34, server, loop, receipt_delay, bind_tps)

    def quiet_failed_receipts(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """A receipt whose connection went away fails its (never awaited) future: not worth a log line."""
        if isinstance(context.get("exception"), smpp34.SmppError) and "future" in context:
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(quiet_failed_receipts)
    print(f"PORT {listening_port(port)}", flush=True)
    worker = asyncio.create_task(smsc.run())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({worker, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if worker.done():
        worker.result()  # the event loop failed: say why
    worker.cancel()
    await server.stop()


# --- process -------------------------------------------------------------------------------


async def serve(engine: str, host: str, port: int, receipt_delay: float, bind_tps: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    run = serve_smpp34 if engine == "smpp34" else serve_batched
    await run(host, port, receipt_delay, bind_tps, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/fast_smsc.py", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port (printed)")
    parser.add_argument("--receipt-delay", type=float, default=0.0, help="seconds from an answer to its receipt")
    parser.add_argument("--bind-tps", type=float, default=0.0,
                        help="answer at most N submit_sm a second per bind (0: no cap)")
    parser.add_argument("--engine", choices=("batched", "smpp34"), default="batched")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="uvloop when installed")
    args = parser.parse_args(argv)
    coro = serve(args.engine, args.host, args.port, args.receipt_delay, args.bind_tps)
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is not None:
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
