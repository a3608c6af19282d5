"""One SMPP 3.4 connection as the ESME sees it: framing, sequence numbers, requests and their responses.

An :class:`asyncio.Protocol` (no streams: one callback per read, not a
coroutine hop per PDU). It knows nothing of messages, windows or receipts:

* :meth:`Session.request` writes a PDU built for the next sequence number and
  returns a future for its response: ``(header, body)``, where a
  generic_nack with that sequence number is a response too (``header.command_id
  == GENERIC_NACK``); the future fails with :class:`SessionClosed` when the
  connection ends first;
* requests from the SMSC: enquire_link is answered here, unbind is answered
  and ends the session, deliver_sm goes to ``on_deliver(sequence, pdu)`` and
  **is not answered here** (the owner answers it with :meth:`respond` once the
  receipt is stored), anything else gets generic_nack ESME_RINVCMDID;
* writes made during one loop turn leave in one ``transport.write`` (fewer
  system calls at thousands of PDUs a second); each PDU is still its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import typing
from collections.abc import Callable

from . import pdu
from .status import describe

log = logging.getLogger("ftpbatch.dispatch.smpp")

Response = tuple[pdu.Header, bytes]


class SessionClosed(ConnectionError):
    """The connection ended before the response came."""


class BindRefused(ConnectionError):
    """The SMSC answered the bind with an error status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"bind refused: {describe(status)}")
        self.status = status


class Session(asyncio.Protocol):
    def __init__(self, name: str, on_deliver: Callable[[Session, int, bytes], None]) -> None:
        self.name = name
        self._on_deliver = on_deliver
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._sequence = 0
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        #: set once the connection is gone; ``reason`` says why
        self.closed = asyncio.Event()
        self.reason = ""
        #: loop time of the last PDU received (enquire_link is sent only after a quiet spell)
        self.last_heard = self._loop.time()

    # --------------------------------------------------------- transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Nagle would hold a submit_sm written while an earlier one is unacknowledged
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(f"connection lost: {exc}" if exc else "the SMSC closed the connection")

    def _end(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.reason = reason
        self.closed.set()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(SessionClosed(reason))
        self._out.clear()

    def close(self, reason: str) -> None:
        """Write what is queued, then close."""
        if self._transport is not None and not self._transport.is_closing():
            self._flush()
            self._transport.close()
        self._end(reason)

    @property
    def alive(self) -> bool:
        return not self.closed.is_set()

    def data_received(self, data: bytes) -> None:
        self.last_heard = self._loop.time()
        buffer = self._buffer
        buffer += data
        offset = 0
        size = len(buffer)
        while size - offset >= pdu.HEADER_SIZE:
            length, command_id, status, sequence = pdu.HEADER.unpack_from(buffer, offset)
            if not pdu.HEADER_SIZE <= length <= pdu.MAX_PDU:
                log.error("%s: PDU of %d octets from the SMSC: framing lost, closing", self.name, length)
                del buffer[:]
                self.close(f"bad PDU length {length}")
                return
            if size - offset < length:
                break
            raw = bytes(buffer[offset : offset + length])
            offset += length
            self._dispatch(pdu.Header(length, command_id, status, sequence), raw)
            if self.closed.is_set():
                return
        del buffer[:offset]

    def _dispatch(self, head: pdu.Header, raw: bytes) -> None:
        command_id = head.command_id
        if command_id & pdu.RESP:  # a response, generic_nack included
            future = self._pending.pop(head.sequence, None)
            if future is not None and not future.done():
                future.set_result((head, raw[pdu.HEADER_SIZE :]))
            elif command_id == pdu.GENERIC_NACK:
                log.warning("%s: generic_nack %s for sequence %d", self.name, describe(head.status), head.sequence)
            return
        if command_id == pdu.DELIVER_SM:
            self._on_deliver(self, head.sequence, raw)
        elif command_id == pdu.ENQUIRE_LINK:
            self.send(pdu.response(pdu.ENQUIRE_LINK, head.sequence))
        elif command_id == pdu.UNBIND:
            self.send(pdu.response(pdu.UNBIND, head.sequence))
            self.close("the SMSC unbound")
        else:
            self.send(pdu.generic_nack(head.sequence, pdu.ESME_RINVCMDID))

    # ------------------------------------------------------------ writing
    def send(self, data: bytes) -> None:
        if self.closed.is_set():
            return
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def next_sequence(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1  # 1 .. 2^31-1 (§3.2)
        return self._sequence

    def request(self, build: Callable[[int], bytes]) -> tuple[int, asyncio.Future[Response]]:
        """Write ``build(sequence)``; the future gets its response."""
        sequence = self.next_sequence()
        future: asyncio.Future[Response] = self._loop.create_future()
        if self.closed.is_set():
            future.set_exception(SessionClosed(self.reason))
            return sequence, future
        self._pending[sequence] = future
        self.send(build(sequence))
        return sequence, future

    def forget(self, sequence: int) -> None:
        """Stop waiting for a response (it timed out); a late one is then ignored."""
        self._pending.pop(sequence, None)

    def respond(self, sequences: list[int], status: int = pdu.ESME_ROK) -> None:
        """deliver_sm_resp for each of ``sequences`` (nothing if the connection is gone: the SMSC re-delivers)."""
        for sequence in sequences:
            self.send(pdu.deliver_sm_resp(sequence, status))

    # ------------------------------------------------------ conversations
    async def call(self, build: Callable[[int], bytes], timeout: float) -> Response:
        sequence, future = self.request(build)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self.forget(sequence)
            raise

    async def bind(self, kind: str, system_id: str, password: str, system_type: str, timeout: float) -> None:
        head, _ = await self.call(lambda seq: pdu.bind(kind, seq, system_id, password, system_type), timeout)
        if head.command_id == pdu.GENERIC_NACK or head.status != pdu.ESME_ROK:
            raise BindRefused(head.status)

    async def unbind(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError, SessionClosed):
            await self.call(lambda seq: pdu.pack(pdu.UNBIND, seq), timeout)
        self.close("unbound")

    async def keepalive(self, interval: float, timeout: float) -> None:
        """enquire_link after ``interval`` seconds of silence; no answer within ``timeout``: the link is dead."""
        while self.alive:
            quiet = self._loop.time() - self.last_heard
            if quiet < interval:
                await asyncio.sleep(interval - quiet)
                continue
            try:
                await self.call(lambda seq: pdu.pack(pdu.ENQUIRE_LINK, seq), timeout)
            except (TimeoutError, SessionClosed):
                self.close(f"no enquire_link_resp within {timeout:g}s")
                return


async def open_session(name: str, host: str, port: int, on_deliver: Callable[[Session, int, bytes], None],
                       *, timeout: float, tls: ssl.SSLContext | None = None) -> Session:
    """Connect a :class:`Session` (not bound yet)."""
    loop = asyncio.get_running_loop()
    _, session = await asyncio.wait_for(
        loop.create_connection(lambda: Session(name, on_deliver), host, port, ssl=tls), timeout)
    return session
