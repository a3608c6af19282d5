"""Build and run the pyftpdlib server for the products in the ledger."""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from pyftpdlib.handlers import DTPHandler
from pyftpdlib.ioloop import IOLoop

from ..config import FtpSettings
from ..errors import ConfigError
from ..ledger import Ledger
from ..lifecycle import all_alive
from ..security.guard import Guard
from ..storage import LocalStorage
from .authorizer import ProductAuthorizer
from .dtp import GuardedPassiveDTP, HandshakeFirstMixin, LimitedDTPMixin
from .filesystem import GatewayFS
from .handler import GatewayFTPHandler, HandlerContext
from .pacing import PacedFTPServer
from .waker import LoopWaker

log = logging.getLogger(__name__)


def tls_files(settings: FtpSettings, root: Path) -> tuple[Path, Path] | None:
    """The configured certificate and key (relative paths are under the data root), or None."""
    if not settings.tls_cert and not settings.tls_key:
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise ConfigError("TLS needs both a certificate and a key: set [ftp] tls_cert and tls_key (or --tls-cert/--tls-key)")
    return root / settings.tls_cert, root / settings.tls_key  # an absolute path stays as it is


class GatewayFTPServer:
    """pyftpdlib's server on its own loop, with settings injected per instance.

    A service (``ftp``): :meth:`start` runs :meth:`serve` on a thread of its own.
    """

    name = "ftp"

    def __init__(
        self,
        settings: FtpSettings,
        ledger: Ledger,
        storage: LocalStorage,
        on_upload: Callable[[Path, str], None],
        guard: Guard | None = None,
        on_login: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._own_guard = guard is None
        self.guard = guard if guard is not None else Guard(ledger, storage, settings)
        tls = tls_files(settings, storage.root)
        if settings.tls_required and tls is None:
            raise ConfigError("[ftp] tls_required needs a certificate: set tls_cert and tls_key (ftpbatch init makes a self-signed pair)")
        if tls is not None:
            from ..security.tls import server_context

            ssl_context = server_context(*tls)  # before any socket exists: a bad pair fails cleanly
        self.ioloop = IOLoop()
        self.auth_pool = ThreadPoolExecutor(max_workers=settings.auth_threads, thread_name_prefix="ftp-auth")
        self.waker = LoopWaker(self.ioloop)
        authorizer = ProductAuthorizer(ledger, storage, self.guard.bans)
        context = HandlerContext(authorizer, self.auth_pool, self.waker, on_upload, settings, self.guard, tls is not None)
        if on_login is not None:
            context = dataclasses.replace(context, on_login=on_login)
        # A subclass per server instead of mutating FTPHandler's class
        # attributes: two servers in one process (tests) never share settings.
        attributes: dict[str, object] = {
            "context": context,
            "authorizer": authorizer,
            "abstracted_fs": GatewayFS,
            "passive_dtp": GuardedPassiveDTP,
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
        if tls is None:
            bases: tuple[type, ...] = (GatewayFTPHandler,)
            attributes["dtp_handler"] = type("GatewayDTPHandler", (LimitedDTPMixin, DTPHandler), {})
        else:
            from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler

            bases = (GatewayFTPHandler, TLS_FTPHandler)
            attributes["tls_enabled"] = True
            attributes["ssl_context"] = ssl_context
            attributes["dtp_handler"] = type("GatewayTLSDTPHandler", (LimitedDTPMixin, HandshakeFirstMixin, TLS_DTPHandler), {})
        handler = type("BoundGatewayFTPHandler", bases, attributes)
        self.tls = tls is not None
        # A deep accept queue: hundreds of clients connecting at once must wait
        # for the loop, not have their SYNs dropped and retried seconds later.
        self.server = PacedFTPServer(
            (settings.host, settings.port), handler, ioloop=self.ioloop, backlog=1024,
            accept_rate=settings.accept_rate, accept_burst=settings.accept_burst,
        )
        self.server.max_cons = settings.max_cons
        self.server.max_cons_per_ip = settings.max_cons_per_ip
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.address[:2]
        return host, port

    @property
    def sessions(self) -> int:
        return max(0, len(self.ioloop.socket_map) - 2)  # minus the listener and the waker

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve, name="ftp-loop", daemon=True)
        self._thread.start()

    @property
    def healthy(self) -> bool:
        return all_alive([self._thread])

    def details(self) -> dict[str, Any]:
        try:
            host, port = self.address
            address: str | None = f"{host}:{port}"
        except OSError:  # the listener is closed: the server is stopping
            address = None
        return {"address": address, "sessions": self.sessions}

    def serve(self) -> None:
        """Run the loop until :meth:`stop` (from any thread)."""
        if self._own_guard:
            self.guard.start()
        log.info("FTP server listening on %s:%d%s", *self.address, " (explicit FTPS available)" if self.tls else "")
        try:
            # One poll per turn, straight on the loop: pyftpdlib's
            # serve_forever(blocking=False) formats a start-up log line (two
            # getsockname calls) on every call, i.e. on every poll.
            loop = self.ioloop.loop
            while not self._stop.is_set():
                loop(0.5, False)
        finally:
            self.server.close_all()
            self.auth_pool.shutdown(wait=False, cancel_futures=True)
            if self._own_guard:
                self.guard.stop()
            self._stopped.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.waker.call_soon(lambda: None)  # wake the loop so it sees the flag
        self._stopped.wait(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
