"""The FTP command handler: logins off the loop, atomic uploads, inbox-only writes.

pyftpdlib runs every client on one loop thread, so nothing here may block:
password hashes are checked on a thread pool and answered through the
:class:`~ftpbatch.ftp.waker.LoopWaker`; the upload hook only renames a file
and hands its path to intake.
"""

from __future__ import annotations

import logging
import os
import secrets
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pyftpdlib.handlers import FTPHandler

from ..errors import LoginRefused
from ..storage import is_temporary_name
from .authorizer import ProductAuthorizer
from .waker import LoopWaker

log = logging.getLogger(__name__)

_UPLOAD_COMMANDS = ("STOR", "APPE", "STOU")


@dataclass(frozen=True)
class HandlerContext:
    """What every session of one server shares (injected, never class-level globals)."""

    authorizer: ProductAuthorizer
    auth_pool: Executor
    waker: LoopWaker
    #: Called with (final path, product) when an upload is complete and in place.
    on_upload: Callable[[Path, str], None]
    auth_failed_delay: float


class GatewayFTPHandler(FTPHandler):
    context: HandlerContext  # set on the per-server subclass by server.py

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # temporary upload path -> final path, for transfers in progress
        self._uploads: dict[str, str] = {}

    # --- login ---------------------------------------------------------
    def ftp_PASS(self, line: str) -> None:
        if self.authenticated:
            self.respond("503 User already authenticated.")
            return
        if not self.username:
            self.respond("503 Login with USER first.")
            return
        username = self.username
        # Stop reading commands until the hash is checked; a client that
        # pipelines commands after PASS must not get them run unauthenticated.
        self.del_channel()
        future = self.context.auth_pool.submit(self.context.authorizer.authenticate, username, line, self.remote_ip)
        future.add_done_callback(lambda f: self.context.waker.call_soon(self._login_checked, username, f))

    def _login_checked(self, username: str, future: Future[str]) -> None:
        if self._closed:
            return
        self.add_channel()
        try:
            home = future.result()
        except LoginRefused as refusal:
            log.info("login refused for %r from %s: %s", username, self.remote_ip, refusal.message)
            self._refuse(username, refusal.message)
            return
        except Exception:
            log.exception("login check for %r failed", username)
            self._refuse(username, "Login failed: internal error (code 901); try again later.")
            return
        self.username = username
        # pyftpdlib keeps the password it is given on the session; give it nothing.
        self.handle_auth_success(home, "", self.authorizer.get_msg_login(username))

    def _refuse(self, username: str, message: str) -> None:
        # Answer after a delay (slows password guessing) without holding the loop.
        self.del_channel()
        self.username = ""

        def answer() -> None:
            if self._closed:
                return
            self.add_channel()
            self.attempted_logins += 1
            if self.attempted_logins >= self.max_login_attempts:
                self.respond(f"530 {message} Disconnecting.")
                self.close_when_done()
            else:
                self.respond(f"530 {message}")
            self.on_login_failed(username, "")

        self.ioloop.call_later(self.context.auth_failed_delay, answer, _errback=self.handle_error)

    # --- where uploads may go ------------------------------------------
    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        if self.authenticated and cmd in _UPLOAD_COMMANDS:
            target = self.fs.ftp2fs(arg or self.fs.cwd)
            if cmd == "STOU" or not self.context.authorizer.in_inbox(self.username, target):
                self.respond("550 Uploads are only accepted in /inbox: upload there, e.g. 'put batch.csv /inbox/batch.csv'.")
                return
        super().pre_process_command(line, cmd, arg)

    # --- atomic uploads ------------------------------------------------
    def ftp_STOR(self, file: str, mode: str = "w") -> str | None:
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
        temporary = os.path.join(os.path.dirname(file), f".upload-{secrets.token_hex(6)}-{name}")
        started = super().ftp_STOR(temporary, mode)
        if started:
            self._uploads[temporary] = file
        return started

    def on_file_received(self, file: str) -> None:
        final = self._uploads.pop(file, None)
        if final is None:
            return  # a temporary name written directly: the client's RNTO submits it
        os.replace(file, final)
        self.context.on_upload(Path(final), self.username)

    def on_incomplete_file_received(self, file: str) -> None:
        if self._uploads.pop(file, None) is not None:
            try:
                os.remove(file)
            except FileNotFoundError:
                pass
            log.info("incomplete upload by %r discarded", self.username)

    def ftp_RNTO(self, path: str) -> tuple[str, str] | None:
        renamed = super().ftp_RNTO(path)
        if renamed and not is_temporary_name(os.path.basename(path)) and self.context.authorizer.in_inbox(self.username, path):
            self.context.on_upload(Path(path), self.username)
        return renamed
