"""Address bans after repeated failed FTP logins (see ``ftpbatch.security.bans``)."""

from __future__ import annotations

from .db import Database
from .records import AddressBan


class BanStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record_ban(self, address: str, banned_until: float, failures: int, reason: str, now: float) -> None:
        """Ban ``address`` until ``banned_until`` (a later ban replaces an earlier one)."""
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO address_bans (address, banned_until, failures, reason, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (address) DO UPDATE SET banned_until = excluded.banned_until, "
                "failures = excluded.failures, reason = excluded.reason, created_at = excluded.created_at",
                (address, banned_until, failures, reason, now),
            )

    def active_bans(self, now: float) -> list[AddressBan]:
        rows = self.db.connection().execute(
            "SELECT address, banned_until, failures, reason, created_at FROM address_bans "
            "WHERE banned_until > ? ORDER BY banned_until",
            (now,),
        ).fetchall()
        return [AddressBan(*row) for row in rows]

    def lift_ban(self, address: str) -> bool:
        """Remove the ban of ``address``; False if it had none (or it had expired)."""
        with self.db.transaction() as tx:
            cur = tx.execute("DELETE FROM address_bans WHERE address = ?", (address,))
        return cur.rowcount > 0

    def prune_bans(self, now: float) -> int:
        with self.db.transaction() as tx:
            cur = tx.execute("DELETE FROM address_bans WHERE banned_until <= ?", (now,))
        return cur.rowcount
