"""The login decision shared by FTP, FTPS and SFTP.

Runs on worker threads (it reads the ledger and checks argon2id hashes),
never on a protocol's event loop. Unknown users and wrong credentials cost
the same work and get the same refusal, so the answer reveals nothing about
which products exist; lock-down and disabled products are told only to a
client that gave the right credentials. Every refusal of a wrong credential
or a locked-down address is counted towards a ban of the address (the ban
book is shared by every protocol).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .. import codes
from ..errors import LoginRefused
from ..ledger import Ledger
from ..models import Product
from ..passwords import VerifiedCache
from ..security.bans import BanBook
from ..storage import LocalStorage

WRONG_CREDENTIALS = "Login incorrect (code 001)."


@dataclass(frozen=True)
class Login:
    home: str
    product: Product


class LoginDecision:
    def __init__(self, ledger: Ledger, storage: LocalStorage, bans: BanBook | None = None) -> None:
        self.ledger = ledger
        self.storage = storage
        self.bans = bans
        self.verified = VerifiedCache()

    def by_password(self, username: str, password: str, remote_ip: str,
                    extra: Callable[[Product], None] | None = None) -> Login:
        """Check a password login; ``extra`` may refuse the product further (e.g. FTP's TLS rule)."""
        product = self.ledger.get_product(username)
        valid = self.verified.verify(product.password_hash if product else None, password)
        return self._admit(product if valid else None, remote_ip, username, extra, True)

    def by_key(self, username: str, key_matches: Callable[[Product], bool], remote_ip: str,
               count_failure: bool = True) -> Login:
        """Check an SSH key login: ``key_matches`` says whether the product lists the client's key.

        ``count_failure=False``: the protocol counts refusals itself (an SSH
        client offers several keys in one login).
        """
        product = self.ledger.get_product(username)
        matched = product if product is not None and key_matches(product) else None
        return self._admit(matched, remote_ip, username, None, count_failure)

    def failed(self, remote_ip: str, username: str) -> None:
        """Count a failed login the protocol noticed itself (e.g. SSH keys all refused)."""
        if self.bans is not None:
            self.bans.failed(remote_ip, username)

    def _admit(self, product: Product | None, remote_ip: str, username: str,
               extra: Callable[[Product], None] | None, count_failure: bool) -> Login:
        try:
            if product is None:
                raise LoginRefused(WRONG_CREDENTIALS, code=codes.E_AUTH)
            if not product.allows_address(remote_ip):
                raise LoginRefused(
                    f"Login refused (code 007): address {remote_ip} is not in the IP lock-down list of this product.",
                    code=codes.E_IP_LOCKDOWN,
                )
            if not product.enabled:
                raise LoginRefused("Login refused (code 001): this product is disabled; ask the operator.", code=codes.E_AUTH)
        except LoginRefused:
            if count_failure:
                self.failed(remote_ip, username)
            raise
        if extra is not None:
            extra(product)  # the right credentials: not counted as a guess
        return Login(str(self.storage.ensure_home(product.name)), product)
