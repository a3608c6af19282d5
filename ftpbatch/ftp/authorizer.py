"""Products as FTP virtual users: credentials, IP lock-down, folders and permissions.

The slow part, :meth:`ProductAuthorizer.authenticate`, runs on a worker
thread (see ``handler.py``); everything pyftpdlib calls on its loop
(``has_perm``, ``get_home_dir``) is a few string operations.
Products are read from the ledger at every login, so ``product set`` applies
to the next login without a restart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .. import codes
from ..errors import LoginRefused
from ..ledger import Ledger
from ..models import Product
from ..passwords import VerifiedCache
from ..storage import LocalStorage

# pyftpdlib permission letters: e=CWD l=LIST r=RETR a=APPE d=DELE f=rename w=STOR
_FOLDER_PERMS = {
    "": "el",
    "inbox": "elradfw",
    "reports": "elrd",
    "archive": "elr",
}

WELCOME = "Welcome, {name}. Upload batches to /inbox; reports appear in /reports."


class TlsRequired(LoginRefused):
    """The right password on a plain connection for a product that requires TLS (not counted for bans)."""


@dataclass(frozen=True)
class Login:
    home: str
    product: Product


class ProductAuthorizer:
    def __init__(self, ledger: Ledger, storage: LocalStorage) -> None:
        self.ledger = ledger
        self.storage = storage
        self.verified = VerifiedCache()

    # --- called on a worker thread -------------------------------------
    def authenticate(
        self, username: str, password: str, remote_ip: str, *, tls: bool = False, tls_available: bool = False
    ) -> Login:
        """Check a login; return the home folder and product or raise :class:`LoginRefused`.

        Unknown users and wrong passwords cost one hash check each and get
        the same answer, so the reply reveals nothing about which products exist.
        ``require_tls`` is checked last, for the same reason: only the right
        password learns that the product needs TLS.
        """
        product = self.ledger.get_product(username)
        valid = self.verified.verify(product.password_hash if product else None, password)
        if product is None or not valid:
            raise LoginRefused("Login incorrect (code 001).", code=codes.E_AUTH)
        if not product.allows_address(remote_ip):
            raise LoginRefused(
                f"Login refused (code 007): address {remote_ip} is not in the IP lock-down list of this product.",
                code=codes.E_IP_LOCKDOWN,
            )
        if not product.enabled:
            raise LoginRefused("Login refused (code 001): this product is disabled; ask the operator.", code=codes.E_AUTH)
        if product.require_tls and not tls:
            if not tls_available:
                raise TlsRequired(
                    "Login refused (code 001): this product requires TLS, but this server has no TLS certificate; "
                    "ask the operator.",
                    code=codes.E_AUTH,
                )
            raise TlsRequired(
                "Login refused (code 001): this product requires TLS. Connect with explicit FTPS (AUTH TLS), "
                "e.g. curl --ssl-reqd, or lftp with 'set ftp:ssl-force true'.",
                code=codes.E_AUTH,
            )
        return Login(str(self.storage.ensure_home(product.name)), product)

    # --- pyftpdlib's authorizer interface (on the loop) -----------------
    def validate_authentication(self, username: str, password: str, handler: object) -> None:
        raise AssertionError("logins are checked off the loop by GatewayFTPHandler.ftp_PASS")

    def get_home_dir(self, username: str) -> str:
        return str(self.storage.home(username))

    def has_user(self, username: str) -> bool:
        return self.ledger.get_product(username) is not None

    def get_msg_login(self, username: str) -> str:
        return WELCOME.format(name=username)

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def get_perms(self, username: str) -> str:
        return "elradfw"

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        if path is None:
            return perm in "el"
        return perm in self.perms_at(username, path)

    def perms_at(self, username: str, path: str) -> str:
        home = os.path.realpath(self.storage.home(username))
        real = os.path.realpath(path)
        if real == home:
            return _FOLDER_PERMS[""]
        relative = os.path.relpath(real, home)
        if relative.startswith(".."):
            return ""
        parts = Path(relative).parts
        if len(parts) == 1:
            # the folders themselves: never removed, renamed or written to
            return _FOLDER_PERMS[""] if parts[0] in _FOLDER_PERMS else ""
        return _FOLDER_PERMS.get(parts[0], "")

    def in_inbox(self, username: str, path: str) -> bool:
        inbox = os.path.realpath(self.storage.inbox(username))
        return os.path.dirname(os.path.realpath(path)) == inbox

    def impersonate_user(self, username: str, password: str) -> None:
        pass

    def terminate_impersonation(self, username: str) -> None:
        pass
