"""The FTP command handler: logins off the loop, atomic uploads, inbox-only writes, limits.

pyftpdlib runs every client on one loop thread, so nothing here may block:
password hashes are checked on a thread pool and answered through the
:class:`~ftpbatch.ftp.waker.LoopWaker`; bans, disk space and quotas are
in-memory snapshots kept fresh by the guard thread; the upload hook only
renames a file and hands its path to intake.

The same class serves plain FTP and explicit FTPS: ``server.py`` mixes it
with pyftpdlib's ``TLS_FTPHandler`` when a certificate is configured.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

from pyftpdlib.handlers import FTPHandler

from .. import codes
from ..config import FtpSettings
from ..errors import LoginRefused, NoPassivePort
from ..models import Product
from ..security.bans import normal_address
from ..security.guard import Guard
from ..security.storage_guard import UploadBudget
from ..storage import UPLOAD_TEMP_PREFIX, is_temporary_name
from ..access import names
from ..access.folders import UPLOADS_ONLY_THERE
from .authorizer import Login, ProductAuthorizer
from .waker import LoopWaker

log = logging.getLogger(__name__)

_UPLOAD_COMMANDS = ("STOR", "APPE", "STOU")
#: Commands that create a name: checked for length and reserved prefixes.
_NAMING_COMMANDS = ("STOR", "APPE", "RNTO", "MKD", "XMKD")
#: Commands taking a path argument (control characters refused in all of them).
_PATH_COMMANDS = frozenset(
    {"CWD", "XCWD", "LIST", "NLST", "MLSD", "MLST", "RETR", "STOR", "APPE", "STOU", "DELE", "RNFR", "RNTO",
     "MKD", "XMKD", "RMD", "XRMD", "SIZE", "MDTM", "MFMT", "STAT", "SITE CHMOD"}
)
_DATA_COMMANDS = ("PASV", "EPSV", "PORT", "EPRT")


@dataclass(frozen=True)
class HandlerContext:
    """What every session of one server shares (injected, never class-level globals)."""

    authorizer: ProductAuthorizer
    auth_pool: Executor
    waker: LoopWaker
    #: Called with (final path, product) when an upload is complete and in place.
    on_upload: Callable[[Path, str], None]
    settings: FtpSettings
    guard: Guard
    tls_available: bool = False
    #: Called on the FTP loop with ``ok`` or ``failed`` after each login (the gateway counts them).
    on_login: Callable[[str], None] = lambda result: None  # a bare server (tests) counts nothing

    def check_login(self, username: str, password: str, address: str, tls: bool) -> Login:
        """On a worker thread: the hash check; failures are counted towards bans by the shared decision."""
        return self.authorizer.authenticate(username, password, address, tls=tls, tls_available=self.tls_available)


class GatewayFTPHandler(FTPHandler):
    context: HandlerContext  # set on the per-server subclass by server.py
    tls_enabled = False  # True on the subclass mixed with TLS_FTPHandler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # temporary upload path -> final path, for transfers in progress
        self._uploads: dict[str, str] = {}
        #: The logged-in product (as read at login; ``product set`` applies at the next login).
        self.product: Product | None = None
        self._budget: UploadBudget | None = None

    # --- connection ----------------------------------------------------
    def handle(self) -> None:
        if self._refuse_if_banned():
            return
        super().handle()

    def _refuse_if_banned(self) -> bool:
        until = self.context.guard.bans.banned_until(self.remote_ip)
        if until is None:
            return False
        when = dt.datetime.fromtimestamp(until, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        self.respond(
            f"421 Too many failed logins from {normal_address(self.remote_ip)}: this address is banned until "
            f"{when} UTC. Ask the operator to lift it if this is a mistake."
        )
        self.close_when_done()
        return True

    def process_command(self, cmd: str, *args: Any, **kwargs: Any) -> None:
        secure = self.tls_enabled and self._ssl_established
        if cmd in ("USER", "PASS") and self.context.settings.tls_required and not secure:
            self.respond("530 This server requires TLS: send AUTH TLS first (explicit FTPS, e.g. curl --ssl-reqd).")
            return
        if secure and cmd in _DATA_COMMANDS and not self._prot:
            self.respond(
                "522 Data connections must be encrypted too: send 'PBSZ 0' and 'PROT P' first "
                "(curl --ssl-reqd does; lftp: set ftp:ssl-protect-data true)."
            )
            return
        if secure and cmd == "PROT" and args and args[0].strip().upper() == "C":
            self.respond("534 Clear data connections are refused on a TLS session: use PROT P.")
            return
        super().process_command(cmd, *args, **kwargs)

    # --- login ---------------------------------------------------------
    def ftp_PASS(self, line: str) -> None:
        if self.authenticated:
            self.respond("503 User already authenticated.")
            return
        if not self.username:
            self.respond("503 Login with USER first.")
            return
        if self._refuse_if_banned():
            return
        username = self.username
        tls = self.tls_enabled and self._ssl_established
        # Stop reading commands until the hash is checked; a client that
        # pipelines commands after PASS must not get them run unauthenticated.
        self.del_channel()
        future = self.context.auth_pool.submit(self.context.check_login, username, line, self.remote_ip, tls)
        future.add_done_callback(lambda f: self.context.waker.call_soon(self._login_checked, username, f))

    def _login_checked(self, username: str, future: Future[Login]) -> None:
        if self._closed:
            return
        self.add_channel()
        try:
            login = future.result()
        except LoginRefused as refusal:
            log.info("login refused for %r from %s: %s", username, self.remote_ip, refusal.message)
            self._refuse(username, refusal.message)
            return
        except Exception:
            log.exception("login check for %r failed", username)
            self._refuse(username, "Login failed: internal error (code 901); try again later.")
            return
        self.username = username
        self.product = login.product
        # pyftpdlib keeps the password it is given on the session; give it nothing.
        self.handle_auth_success(login.home, "", self.authorizer.get_msg_login(username))

    def _refuse(self, username: str, message: str) -> None:
        # Answer after a delay (slows password guessing) without holding the loop.
        self.del_channel()
        self.username = ""

        def answer() -> None:
            if self._closed:
                return
            self.add_channel()
            if self._refuse_if_banned():
                return
            self.attempted_logins += 1
            if self.attempted_logins >= self.max_login_attempts:
                self.respond(f"530 {message} Disconnecting.")
                self.close_when_done()
            else:
                self.respond(f"530 {message}")
            self.on_login_failed(username, "")

        self.ioloop.call_later(self.context.settings.auth_failed_delay, answer, _errback=self.handle_error)

    def flush_account(self) -> None:
        super().flush_account()
        self.product = None

    def on_login(self, username: str) -> None:
        self.context.on_login("ok")

    def on_login_failed(self, username: str, password: str) -> None:
        self.context.on_login("failed")

    # --- what names and places a session may use --------------------------
    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        if self.authenticated and arg:
            refusal = self._name_refusal(cmd, arg)
            if refusal:
                self.respond(refusal)
                return
        if self.authenticated and cmd in _UPLOAD_COMMANDS:
            target = self.fs.ftp2fs(arg or self.fs.cwd)
            if cmd == "STOU" or not self.context.authorizer.in_upload_folder(self.username, target):
                self.respond(f"550 {UPLOADS_ONLY_THERE}")
                return
        super().pre_process_command(line, cmd, arg)

    def _name_refusal(self, cmd: str, arg: str) -> str | None:
        name_cmd = cmd if cmd != "SITE" else "SITE " + arg.split(" ", 1)[0].upper()
        if name_cmd not in _PATH_COMMANDS:
            return None
        if names.has_control_characters(arg):
            return f"501 {names.CONTROL_CHARACTERS}"
        name = os.path.basename(arg.rstrip("/"))
        if names.is_reserved(name):
            return f"553 {names.RESERVED}" if cmd in _NAMING_COMMANDS else "550 No such file or directory."
        too_long = names.too_long(name, self.context.settings.max_name_bytes)
        if cmd in _NAMING_COMMANDS and too_long:
            return f"553 {too_long}"
        return None

    # --- data connections -----------------------------------------------
    def _make_eport(self, ip: str, port: int) -> None:
        own = normal_address(self.remote_ip)
        if normal_address(ip) != own:
            self.respond_w_warning(
                f"501 Data connections go only to your own address ({own}), not {ip}: "
                "FTP bounce is refused. Use passive mode (PASV)."
            )
            return
        if port < 1024:
            self.respond_w_warning(f"501 Data connections to privileged ports (below 1024) are refused, not {port}: use passive mode.")
            return
        if self.product is not None and not self.product.allows_address(ip):
            self.respond(
                f"501 Data connection to {ip} refused (code {codes.E_IP_LOCKDOWN}): "
                "the address is not in the IP lock-down list of this product."
            )
            return
        super()._make_eport(ip, port)

    def _make_epasv(self, extmode: bool = False) -> None:
        try:
            super()._make_epasv(extmode)
        except NoPassivePort:
            self._dtp_acceptor = None
            log.warning("every passive port of %s is in use", self.context.settings.passive_ports)
            self.respond("425 No free passive port: the server is busy; try again in a moment.")

    # --- atomic uploads --------------------------------------------------
    def ftp_STOR(self, file: str, mode: str = "w") -> str | None:
        if self.product is not None:
            refusal = self.context.guard.disk.upload_refusal(self.product)
            if refusal:
                self._restart_position = 0
                self.respond(refusal)
                return None
        name = os.path.basename(file)
        if is_temporary_name(name):
            # The client renames it when done (DESIGN §3); resuming it is fine.
            return super().ftp_STOR(file, mode)
        if "a" in mode or self._restart_position:
            self._restart_position = 0
            self.respond(
                "550 Appending or resuming is only possible for temporary names (.part, .tmp, ...): "
                "upload as NAME.part, then rename it to NAME."
            )
            return None
        # Write under a hidden name (never claimed) and rename only once the
        # transfer completed: an aborted upload leaves nothing behind.
        temporary = os.path.join(os.path.dirname(file), f"{UPLOAD_TEMP_PREFIX}{secrets.token_hex(6)}-{name}")
        started = super().ftp_STOR(temporary, mode)
        if started:
            self._uploads[temporary] = file
        return started

    def start_upload_budget(self, file_obj: IO[bytes]) -> UploadBudget | None:
        """Called by the data channel when bytes start to arrive."""
        if self.product is None:
            return None
        try:
            offset = file_obj.tell()  # APPE and REST continue an existing file
        except (OSError, ValueError):
            offset = 0
        self._budget = self.context.guard.disk.budget(self.product, offset)
        return self._budget

    def _end_budget(self, kept: bool) -> UploadBudget | None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget.close(kept)
        return budget

    def on_file_received(self, file: str) -> None:
        self._end_budget(kept=True)
        final = self._uploads.pop(file, None)
        if final is None:
            return  # a temporary name written directly: the client's RNTO submits it
        os.replace(file, final)
        self.context.on_upload(Path(final), self.username)

    def on_incomplete_file_received(self, file: str) -> None:
        budget = self._end_budget(kept=False)
        cut = budget is not None and budget.cut is not None
        # Our hidden file goes; so does a .part the client wrote itself when
        # it went over a limit (resuming it could only go over again).
        if self._uploads.pop(file, None) is not None or cut:
            try:
                os.remove(file)
            except FileNotFoundError:
                pass
            log.info("incomplete upload by %r discarded%s", self.username, " (over a limit)" if cut else "")

    def ftp_RNTO(self, path: str) -> tuple[str, str] | None:
        renamed = super().ftp_RNTO(path)
        if renamed and not is_temporary_name(os.path.basename(path)) and self.context.authorizer.in_upload_folder(self.username, path):
            self.context.on_upload(Path(path), self.username)
        return renamed

    def close(self) -> None:
        was_open = not self._closed
        super().close()
        if was_open:
            self._end_budget(kept=False)
            # STOR answered but the data connection never came: the hidden file stays empty forever
            for temporary in list(self._uploads):
                try:
                    os.remove(temporary)
                except OSError:
                    pass
            self._uploads.clear()
