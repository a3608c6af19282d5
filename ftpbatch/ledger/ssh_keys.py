"""SSH access per product: its authorized public keys and whether it may log in by key only.

A composed store (``Ledger.ssh_keys``), not a mix-in: it owns one table
(migration 7). Key lines are stored as the operator gave them, after
``ftpbatch.sftp.keys`` checked them; the ledger does not parse keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..errors import NotFound
from .db import Database


@dataclass(frozen=True)
class SshAccess:
    #: OpenSSH ``authorized_keys`` lines (``type base64 [comment]``), in the order given.
    keys: tuple[str, ...] = ()
    #: True: SFTP logins by password are refused for this product.
    keys_only: bool = False


class SshKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, product: str) -> SshAccess:
        row = self.db.connection().execute(
            "SELECT authorized_keys, keys_only FROM product_ssh WHERE product = ?", (product,)
        ).fetchone()
        if row is None:
            return SshAccess()
        return SshAccess(tuple(line for line in row[0].splitlines() if line), bool(row[1]))

    def update(self, product: str, keys: tuple[str, ...] | None = None, keys_only: bool | None = None) -> SshAccess:
        """Replace the keys and/or the keys-only flag (None: unchanged) of an existing product."""
        with self.db.transaction() as tx:
            if tx.execute("SELECT 1 FROM products WHERE name = ?", (product,)).fetchone() is None:
                raise NotFound(f"no product named {product!r}")
            row = tx.execute("SELECT authorized_keys, keys_only FROM product_ssh WHERE product = ?", (product,)).fetchone()
            text = "\n".join(keys) if keys is not None else (row[0] if row else "")
            only = int(keys_only) if keys_only is not None else (row[1] if row else 0)
            tx.execute(
                "INSERT INTO product_ssh (product, authorized_keys, keys_only, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (product) DO UPDATE SET authorized_keys = excluded.authorized_keys, "
                "keys_only = excluded.keys_only, updated_at = excluded.updated_at",
                (product, text, only, time.time()),
            )
        return self.get(product)
