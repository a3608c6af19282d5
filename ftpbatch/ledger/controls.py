"""Batch controls: pause, resume and cancel (/control files, ``ftpbatch batch pause|resume|cancel``).

A paused batch keeps its place; leases skip its messages (ledger/leases.py)
until it is resumed, and messages already in flight finish. A cancel turns
every message not sent yet into ``006`` (``MessageStore.cancel_pending``).
Every control applied is recorded in ``batch_controls``, in the transaction
that applied it.
"""

from __future__ import annotations

import time

from ..models import DISPATCHING, PROCESSING, RECEIVED
from .db import Connection, Database
from .messages import MessageStore

VERBS = ("pause", "resume", "cancel")
_OPEN_STATES = (RECEIVED, PROCESSING, DISPATCHING)


class ControlStore:
    def __init__(self, db: Database, messages: MessageStore) -> None:
        self.db = db
        self.messages = messages

    def pause_batch(self, seq: int, source: str) -> bool:
        """Stop leasing the batch's messages; False if it was paused already or is finished."""
        return self._set_paused(seq, True, "pause", source)

    def resume_batch(self, seq: int, source: str) -> bool:
        """Lease the batch's messages again; False if it was not paused or is finished."""
        return self._set_paused(seq, False, "resume", source)

    def cancel_batch(self, seq: int, source: str) -> int:
        """Every message of the batch not sent yet becomes 006; returns how many. Also lifts a pause."""
        now = time.time()
        with self.db.transaction() as tx:
            cancelled = self.messages.cancel_pending(seq)  # joins this transaction
            tx.execute("UPDATE batches SET paused = 0 WHERE seq = ?", (seq,))
            _record(tx, seq, "cancel", source, now)
        return cancelled

    def batch_controls(self, seq: int) -> list[tuple[str, str, float]]:
        """(verb, source, applied_at) of every control applied to the batch, in order."""
        rows = self.db.connection().execute(
            "SELECT verb, source, applied_at FROM batch_controls WHERE batch_seq = ? ORDER BY id", (seq,)
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def _set_paused(self, seq: int, paused: bool, verb: str, source: str) -> bool:
        now = time.time()
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE batches SET paused = ?, updated_at = ?, version = version + 1 "
                "WHERE seq = ? AND paused = ? AND state IN (?, ?, ?)",
                (int(paused), now, seq, int(not paused), *_OPEN_STATES),
            ).rowcount
            if changed:
                _record(tx, seq, verb, source, now)
        return changed == 1


def _record(tx: Connection, seq: int, verb: str, source: str, now: float) -> None:
    tx.execute(
        "INSERT INTO batch_controls (batch_seq, verb, source, applied_at) VALUES (?, ?, ?, ?)", (seq, verb, source, now)
    )
