"""Build and run the pyftpdlib server for the products in the ledger."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from ..config import FtpSettings
from ..ledger import Ledger
from ..storage import LocalStorage
from .authorizer import ProductAuthorizer
from .handler import GatewayFTPHandler, HandlerContext
from .waker import LoopWaker

log = logging.getLogger(__name__)


class GatewayFTPServer:
    """pyftpdlib's server on its own loop, with settings injected per instance."""

    def __init__(
        self,
        settings: FtpSettings,
        ledger: Ledger,
        storage: LocalStorage,
        on_upload: Callable[[Path, str], None],
    ) -> None:
        self.settings = settings
        self.ioloop = IOLoop()
        self.auth_pool = ThreadPoolExecutor(max_workers=settings.auth_threads, thread_name_prefix="ftp-auth")
        self.waker = LoopWaker(self.ioloop)
        authorizer = ProductAuthorizer(ledger, storage)
        context = HandlerContext(authorizer, self.auth_pool, self.waker, on_upload, settings.auth_failed_delay)
        # A subclass per server instead of mutating FTPHandler's class
        # attributes: two servers in one process (tests) never share settings.
        attributes: dict[str, object] = {
            "context": context,
            "authorizer": authorizer,
            "banner": "ftpbatch ready.",
            "timeout": settings.idle_timeout,
            "permit_foreign_addresses": False,
            "permit_privileged_ports": False,
            "use_sendfile": False,
        }
        passive = settings.passive_range()
        if passive is not None:
            attributes["passive_ports"] = passive
        if settings.masquerade_address:
            attributes["masquerade_address"] = settings.masquerade_address
        handler = type("BoundGatewayFTPHandler", (GatewayFTPHandler,), attributes)
        self.server = FTPServer((settings.host, settings.port), handler, ioloop=self.ioloop)
        self.server.max_cons = settings.max_cons
        self.server.max_cons_per_ip = settings.max_cons_per_ip
        self._stop = threading.Event()
        self._stopped = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.address[:2]
        return host, port

    @property
    def sessions(self) -> int:
        return max(0, len(self.ioloop.socket_map) - 2)  # minus the listener and the waker

    def serve(self) -> None:
        """Run the loop until :meth:`stop` (from any thread)."""
        log.info("FTP server listening on %s:%d", *self.address)
        try:
            while not self._stop.is_set():
                self.server.serve_forever(timeout=0.5, blocking=False, handle_exit=False)
        finally:
            self.server.close_all()
            self.auth_pool.shutdown(wait=False, cancel_futures=True)
            self._stopped.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.waker.call_soon(lambda: None)  # wake the loop so it sees the flag
        self._stopped.wait(timeout)
