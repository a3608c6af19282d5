"""Products as FTP virtual users: the shared login decision and folder permissions, in pyftpdlib's terms.

The slow part, :meth:`ProductAuthorizer.authenticate`, runs on a worker
thread (see ``handler.py``); everything pyftpdlib calls on its loop
(``has_perm``, ``get_home_dir``) is a few string operations.
Products are read from the ledger at every login, so ``product set`` applies
to the next login without a restart.
"""

from __future__ import annotations

import os

from .. import codes
from ..access.folders import perms_at, upload_folder
from ..access.login import Login, LoginDecision
from ..errors import LoginRefused
from ..ledger import Ledger
from ..models import Product
from ..security.bans import BanBook
from ..storage import LocalStorage

WELCOME = "Welcome, {name}. Upload batches to /inbox (dry runs to /check); reports appear in /reports."

__all__ = ["Login", "ProductAuthorizer", "TlsRequired"]


class TlsRequired(LoginRefused):
    """The right password on a plain connection for a product that requires TLS (not counted for bans)."""


class ProductAuthorizer:
    def __init__(self, ledger: Ledger, storage: LocalStorage, bans: BanBook | None = None) -> None:
        self.ledger = ledger
        self.storage = storage
        self.decision = LoginDecision(ledger, storage, bans)

    # --- called on a worker thread -------------------------------------
    def authenticate(
        self, username: str, password: str, remote_ip: str, *, tls: bool = False, tls_available: bool = False
    ) -> Login:
        """Check a login (see :mod:`ftpbatch.access.login`); return the home and product or raise :class:`LoginRefused`.

        ``require_tls`` is checked last: only the right password learns that
        the product needs TLS, and that refusal is not counted as a guess.
        """

        def tls_rule(product: Product) -> None:
            if not product.require_tls or tls:
                return
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

        return self.decision.by_password(username, password, remote_ip, tls_rule)

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
        return perms_at(self.storage.home(username), path)

    def in_upload_folder(self, username: str, path: str) -> bool:
        """``path`` sits directly in /inbox, /check, /optout or /control of the product."""
        return upload_folder(self.storage.home(username), path) is not None

    def impersonate_user(self, username: str, password: str) -> None:
        pass

    def terminate_impersonation(self, username: str) -> None:
        pass
