"""The SSH server for SFTP: its own thread and asyncio loop, logins decided off that loop.

Nothing here runs on the FTP loop or in the pipeline; the two servers share
only thread-safe things: the ledger, the guard's snapshots (bans, disk,
quotas) and intake's upload queue. A login is decided by the same
:class:`~ftpbatch.access.login.LoginDecision` as FTP's, on a small thread
pool (argon2id hashing and ledger reads never hold the SFTP loop). SSH
answers every failed attempt the same way (SSH_MSG_USERAUTH_FAILURE), so an
unknown user, a wrong password and an unlisted key look alike; a client that
gave the right credentials from a locked-down address is told why in an
authentication banner, as FTP tells it in its 530 reply.

Only the ``sftp`` subsystem is served: no shell, no commands, no scp, no
port, agent or X11 forwarding.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import asyncssh

from .. import codes
from ..access.login import Login, LoginDecision
from ..config import FtpSettings, SftpSettings
from ..errors import ConfigError, LoginRefused
from ..ledger import Ledger
from ..lifecycle import all_alive
from ..models import Product
from ..security.bans import normal_address
from ..security.guard import Guard
from ..storage import LocalStorage
from .hostkey import load_host_key
from .keys import key_listed
from .session import ProductSFTPServer, SessionContext

log = logging.getLogger(__name__)

#: Seconds a connection over the limits may take to reach its login request, where it is told so.
OVER_LIMIT_GRACE = 5.0
KEYS_ONLY = "Login refused (code 001): this product logs in with an SSH key only; ask the operator to register yours."


class _Connection(asyncssh.SSHServer):
    """One client connection: its address, its login attempts, and the login once accepted."""

    def __init__(self, server: "GatewaySFTPServer") -> None:
        self.server = server
        self.conn: asyncssh.SSHServerConnection | None = None
        self.address = ""
        self.login: Login | None = None
        self.counted = False  # within the connection limits (refused ones are not counted)
        self.over_limit: str | None = None  # why it is refused, when it is over them
        self.banned = False
        self._failure_counted = False
        self._keys_tried = False
        self._key_results: dict[tuple[str, bytes], Login | None] = {}

    # --- connection ------------------------------------------------------
    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.address = normal_address(str(peer[0])) if peer else ""
        self.over_limit = self.server.admit(self)
        if self.over_limit is not None:
            log.info("SFTP connection from %s refused: %s", self.address, self.over_limit)
            # Told at its first login request (begin_auth), once the key exchange is done: a disconnect
            # before it races the client's own key exchange packets, and OpenSSH then reports only a
            # broken pipe. One that never gets that far is dropped soon, uncounted all the while.
            asyncio.get_running_loop().call_later(OVER_LIMIT_GRACE, conn.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted:
            self.server.release(self)
        if self.login is None and self._keys_tried and not self._failure_counted and not self.banned:
            # every key it offered was refused: one failed login, as one wrong password would be
            self.server.on_login("failed")
            self.server.pool.submit(self.server.decision.failed, self.address, "(ssh key)")

    def begin_auth(self, username: str) -> bool:
        if self.over_limit is not None:
            # the SSH counterpart of FTP's "421 Too many connections": OpenSSH prints the reason
            raise asyncssh.DisconnectError(asyncssh.DISC_TOO_MANY_CONNECTIONS, self.over_limit)
        until = self.server.guard.bans.banned_until(self.address)
        if until is not None:
            self.banned = True
            when = dt.datetime.fromtimestamp(until, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            self._banner(
                f"Too many failed logins from {self.address}: this address is banned until {when} UTC. "
                "Ask the operator to lift it if this is a mistake."
            )
        return True  # always ask for credentials: the answer never tells whether the user exists

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    # --- password ------------------------------------------------------
    async def validate_password(self, username: str, password: str) -> bool:
        if self.banned:
            return False
        decision = self.server.decision
        ledger = self.server.ledger

        def keys_only(product: Product) -> None:
            if ledger.ssh_keys.get(product.name).keys_only:
                raise LoginRefused(KEYS_ONLY, code=codes.E_AUTH)

        loop = asyncio.get_running_loop()
        try:
            self.login = await loop.run_in_executor(
                self.server.pool, decision.by_password, username, password, self.address, keys_only
            )
        except LoginRefused as refusal:
            await self._refused(username, refusal, slow=True)
            return False
        except Exception:
            log.exception("SFTP login check for %r failed", username)
            return False
        return True

    # --- keys ------------------------------------------------------------
    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if self.banned:
            return False
        self._keys_tried = True
        # asyncssh asks twice per key (the client's query, then its signature): decide once
        cache_key = (username, key.public_data)
        if cache_key not in self._key_results:
            ledger = self.server.ledger

            def listed(product: Product) -> bool:
                return key_listed(ledger.ssh_keys.get(product.name).keys, key)

            loop = asyncio.get_running_loop()
            try:
                self._key_results[cache_key] = await loop.run_in_executor(
                    self.server.pool, self._key_login, username, listed
                )
            except LoginRefused as refusal:
                self._key_results[cache_key] = None
                await self._refused(username, refusal, slow=False)
        login = self._key_results[cache_key]
        if login is not None:
            self.login = login
        return login is not None

    def _key_login(self, username: str, listed: Callable[[Product], bool]) -> Login:
        # an unlisted key is not counted on its own (clients offer several): connection_lost counts them once
        try:
            return self.server.decision.by_key(username, listed, self.address, count_failure=False)
        except LoginRefused as refusal:
            if refusal.code == codes.E_IP_LOCKDOWN:
                self._failure_counted = True
                self.server.decision.failed(self.address, username)
            raise

    # --- outcome -----------------------------------------------------------
    async def _refused(self, username: str, refusal: LoginRefused, slow: bool) -> None:
        log.info("SFTP login refused for %r from %s: %s", username, self.address, refusal.message)
        if refusal.code == codes.E_IP_LOCKDOWN or refusal.message == KEYS_ONLY:
            self._banner(refusal.message)  # only the right credentials learn this
        if slow:
            self._failure_counted = True
            self.server.on_login("failed")
            # slows password guessing without holding the loop
            await asyncio.sleep(self.server.ftp_settings.auth_failed_delay)

    def auth_completed(self) -> None:
        assert self.login is not None
        self.server.on_login("ok")
        log.info("SFTP login by %r from %s", self.login.product.name, self.address)

    def _banner(self, text: str) -> None:
        if self.conn is not None:
            try:
                self.conn.send_auth_banner(text + "\r\n")
            except (OSError, asyncssh.Error):
                pass


class GatewaySFTPServer:
    """asyncssh's server on a thread of its own; :meth:`start` returns once it listens (or raises).

    A :class:`~ftpbatch.lifecycle.Service` named ``sftp``.
    """

    name = "sftp"

    def __init__(
        self,
        settings: SftpSettings,
        ftp_settings: FtpSettings,
        ledger: Ledger,
        storage: LocalStorage,
        on_upload: Callable[[Path, str, str], None],
        guard: Guard,
        on_login: Callable[[str], None] = lambda result: None,
    ) -> None:
        if settings.port is None:
            raise ConfigError("the SFTP server needs a port: set [sftp] port or give serve --sftp-port")
        self.settings = settings
        self.ftp_settings = ftp_settings
        self.ledger = ledger
        self.guard = guard
        #: counts logins ("ok" / "failed"): the gateway hands in Metrics.sftp_login
        self.on_login = on_login
        self.host_key = load_host_key(storage.root / settings.host_key)  # a bad key fails before anything listens
        self.decision = LoginDecision(ledger, storage, guard.bans)
        self.pool = ThreadPoolExecutor(max_workers=settings.auth_threads, thread_name_prefix="sftp-auth")
        self.context = SessionContext(guard, on_upload, ftp_settings.max_name_bytes)
        self.host = settings.host or ftp_settings.host
        # the limits FTP has ([ftp] max_cons, max_cons_per_ip) unless [sftp] sets its own
        self.max_cons = ftp_settings.max_cons if settings.max_cons is None else settings.max_cons
        self.max_cons_per_ip = ftp_settings.max_cons_per_ip if settings.max_cons_per_ip is None else settings.max_cons_per_ip
        self.sessions = 0
        self._per_address: dict[str, int] = {}  # touched on the SFTP loop only
        self._address: tuple[str, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncssh.SSHAcceptor | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self.thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._address is None:
            raise OSError("the SFTP server is not listening")
        return self._address

    @property
    def fingerprint(self) -> str:
        return str(self.host_key.get_fingerprint("sha256"))

    @property
    def healthy(self) -> bool:
        return all_alive([self.thread])

    def details(self) -> dict[str, Any]:
        try:
            host, port = self.address
            address: str | None = f"{host}:{port}"
        except OSError:  # not listening: stopping
            address = None
        return {"address": address, "sessions": self.sessions, "host_key": self.fingerprint}

    def admit(self, connection: _Connection) -> str | None:
        """Count a new connection in, or say why it is over the limits (as pyftpdlib's 421 does for FTP)."""
        address = connection.address
        if self.max_cons and self.sessions >= self.max_cons:
            return f"Too many connections ({self.max_cons} at most): service temporarily unavailable, try again later."
        if self.max_cons_per_ip and self._per_address.get(address, 0) >= self.max_cons_per_ip:
            return f"Too many connections from {address} ({self.max_cons_per_ip} at most): close some and try again."
        connection.counted = True
        self.sessions += 1
        self._per_address[address] = self._per_address.get(address, 0) + 1
        return None

    def release(self, connection: _Connection) -> None:
        self.sessions -= 1
        left = self._per_address[connection.address] - 1
        if left:
            self._per_address[connection.address] = left
        else:
            del self._per_address[connection.address]

    def start(self, timeout: float = 15.0) -> None:
        self.thread = threading.Thread(target=self._run, name="sftp-loop", daemon=True)
        self.thread.start()
        if not self._ready.wait(timeout):
            raise ConfigError("the SFTP server did not start in time")
        if self._failure is not None:
            raise ConfigError(f"cannot listen for SFTP on {self.host}:{self.settings.port}: {self._failure}") from self._failure

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                self._listener = loop.run_until_complete(self._listen())
                sock = self._listener.sockets[0]
                host, port = sock.getsockname()[:2]
                self._address = (host, port)
            except (OSError, asyncssh.Error) as exc:
                self._failure = exc
                return
            finally:
                self._ready.set()
            log.info("SFTP server listening on %s:%d (host key %s)", *self.address, self.fingerprint)
            loop.run_forever()
        finally:
            if self._listener is not None:
                self._listener.close()
                loop.run_until_complete(self._listener.wait_closed())
            loop.run_until_complete(loop.shutdown_asyncgens())
            # logins checked on the executor's threads (password hashes, the ledger) end first
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            self._address = None

    async def _listen(self) -> asyncssh.SSHAcceptor:
        def sftp_factory(chan: asyncssh.SSHServerChannel) -> ProductSFTPServer:
            owner = chan.get_connection().get_owner()
            assert isinstance(owner, _Connection) and owner.login is not None
            return ProductSFTPServer(chan, owner.login, self.context)

        return await asyncssh.create_server(
            lambda: _Connection(self),
            self.host,
            self.settings.port,
            server_host_keys=[self.host_key],
            sftp_factory=sftp_factory,
            allow_scp=False,
            allow_pty=False,
            agent_forwarding=False,
            x11_forwarding=False,
            login_timeout=self.settings.login_timeout,
            server_version="ftpbatch",
            backlog=1024,
        )

    def stop(self, timeout: float = 5.0) -> None:
        loop = self._loop
        if loop is not None and self.thread is not None and self.thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            self.thread.join(timeout)
        self.pool.shutdown(wait=False, cancel_futures=True)
