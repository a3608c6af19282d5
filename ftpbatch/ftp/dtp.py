"""Data channels: uploads counted while they run, passive ports kept to their range.

* :class:`LimitedDTPMixin` counts received bytes against the session's
  :class:`~ftpbatch.security.storage_guard.UploadBudget` and cuts the
  transfer the moment it goes over (the product's ``max_file_bytes``, its
  storage quota, or the free-disk floor) with the budget's reply; a cut
  transfer is never reported complete.
* :class:`GuardedPassiveDTP` re-checks the product's IP lock-down for every
  passive data connection (pyftpdlib already refuses peers other than the
  control connection's address) and refuses PASV with 425 when every port of
  the configured range is busy, instead of pyftpdlib's fallback to a random
  port a firewall would block.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from pyftpdlib.exceptions import _RetryError
from pyftpdlib.handlers.ftp.dispatchers import PassiveDTP

from .. import codes
from ..errors import NoPassivePort

log = logging.getLogger(__name__)


class LimitedDTPMixin:
    cmd_channel: Any
    _resp: tuple[str, Any]
    _budget: Any = None
    _done = False

    # One readiness event of an upload takes up to 4 MiB (pyftpdlib: 64 KiB):
    # fewer, larger reads cost less per byte. 200 MB uploads on loopback
    # reached 2.8 GB/s at 4 MiB, 2.4 at 1 MiB, 2.2 at 256 KiB and 1.5 GB/s at
    # 64 KiB. The loop reads one socket at a time, so this is also the most a
    # read ever allocates. What keeps a transfer at speed during a login storm
    # is the accept pacing (pacing.py), whatever this size.
    ac_in_buffer_size = 4 << 20

    # DTPHandler sets ``transfer_finished`` from several places (handle_close
    # among them); a cut transfer must stay unfinished whatever comes after.
    @property
    def transfer_finished(self) -> bool:
        return self._done and (self._budget is None or self._budget.cut is None)

    @transfer_finished.setter
    def transfer_finished(self, value: bool) -> None:
        self._done = value

    def enable_receiving(self, type: str, cmd: str) -> None:
        super().enable_receiving(type, cmd)  # type: ignore[misc]  # pyftpdlib's DTPHandler is untyped
        self._budget = self.cmd_channel.start_upload_budget(self.file_obj)  # type: ignore[attr-defined]  # our FTPHandler subclass defines it

    def recv(self, buffer_size: int) -> bytes:
        chunk: bytes = super().recv(buffer_size)  # type: ignore[misc]  # pyftpdlib's DTPHandler is untyped
        budget = self._budget
        if chunk and budget is not None and budget.cut is None:
            reply = budget.add(len(chunk))
            if reply is not None:
                log.info("upload cut for %r: %s", self.cmd_channel.username, reply)
                self._resp = (reply, logging.getLogger("pyftpdlib").info)
                self.close()  # type: ignore[attr-defined]  # asyncore-style close of the untyped base
                raise _RetryError  # the chunk over the limit is never written
        return chunk


class HandshakeFirstMixin:
    """For TLS data channels: send nothing before the TLS handshake is done.

    pyftpdlib pushes a listing as soon as the data connection exists; when it
    is empty (an empty folder), ``initiate_send`` writes zero bytes into a
    handshake still in progress, which pyOpenSSL reports as an EOF, so the
    channel is closed mid-handshake and clients such as Python's ftplib fail
    (``SHUTDOWN_WHILE_IN_INIT``). The handshake's own write event sends the
    data once it is done.
    """

    _ssl_accepting: bool
    producer_fifo: Any

    def initiate_send(self) -> None:
        if self._ssl_accepting:
            return
        # a zero-byte write on a TLS connection reads as EOF: skip empty chunks
        fifo = self.producer_fifo
        while fifo and isinstance(fifo[0], (bytes, bytearray, memoryview)) and not fifo[0]:
            fifo.popleft()
        super().initiate_send()  # type: ignore[misc]  # pyftpdlib's DTPHandler is untyped


class GuardedPassiveDTP(PassiveDTP):
    _range_tried = False

    def bind(self, addr: tuple[Any, ...]) -> None:
        if addr[1] != 0:
            self._range_tried = True
        elif self._range_tried:
            # pyftpdlib's fallback after the whole range was busy
            self.close()
            raise NoPassivePort("every port of the passive range is in use")
        super().bind(addr)

    def handle_accepted(self, sock: socket.socket, addr: tuple[Any, ...]) -> None:
        product = getattr(self.cmd_channel, "product", None)
        if product is not None and not product.allows_address(addr[0]):
            sock.close()
            self.cmd_channel.respond(
                f"425 Data connection from {addr[0]} refused (code {codes.E_IP_LOCKDOWN}): "
                "the address is not in the IP lock-down list of this product."
            )
            return
        super().handle_accepted(sock, addr)
