"""The ledger: the only code that speaks SQL, and the single source of truth.

``Ledger`` joins the stores (products, batches, messages) over one
:class:`~ftpbatch.ledger.db.Database`; every state change is one transaction.
"""

from __future__ import annotations

from pathlib import Path

from .answers import AnswerStore
from .bans import BanStore
from .batches import BatchStore
from .blockqueue import BlockQueue
from .blocks import BlockCache
from .db import Database
from .inbound import InboundStore
from .leases import LeaseStore
from .messages import MessageStore
from .migrations import migrate
from .outbox import OutboxStore
from .products import ProductStore
from .records import AddressBan
from .reports import ReportStore
from .usage import UsageStore

__all__ = ["AddressBan", "Ledger"]


class Ledger(
    ProductStore, BatchStore, MessageStore, BlockQueue, LeaseStore, AnswerStore, ReportStore, BanStore, OutboxStore, UsageStore
):
    def __init__(self, path: Path, receipt_timeout: float = 48 * 3600.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = Database(path)
        self.receipt_timeout = receipt_timeout
        self.block_cache = BlockCache()
        migrate(self.db)
        #: MO messages, receipt queries, parked-receipt retries (composed, not mixed in)
        self.inbound = InboundStore(self.db)

    def bump_counter(self, name: str, by: int = 1) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
                (name, by),
            )

    def counter(self, name: str) -> int:
        row = self.db.connection().execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.db.close()
