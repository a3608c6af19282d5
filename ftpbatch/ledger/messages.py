"""Messages: the dispatch state machine (DESIGN.md §12), and how messages are stored.

    in a block (queued, due now: see ledger/blocks.py)
        -- lease -->  a messages row, in flight (attempt 1)
        -- cancel / batch refused -->  a messages row, cancelled (006)
    queued (002) / scheduled (011)
        -- lease (owner, lease_until, attempt + 1) -->  in flight
        -- submit answer, same attempt -->  submitted (003) | error (005/009/...)
        -- retry answer, same attempt -->  back to the queue, lease cleared
        -- lease expired (crash) -->  leasable again, flagged possible duplicate
    submitted (003)
        -- receipt -->  004 / 007 / 010 / 005
        -- receipt_due passed -->  receipt_timed_out (done, status kept)

Every transition is a conditional UPDATE on (status, attempt), so a late or
repeated answer changes nothing. Receipts are matched on
(account, upstream_id) in the ledger; a receipt with no match yet is parked
and applied when its submit answer is recorded.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Sequence

from ..lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: `product list` and `status` never need it
    pd = lazy_module("pandas")

from .. import codes
from ..errors import LedgerError
from .batches import touch_batches
from .blockqueue import BlockQueue
from .blocks import pack
from .db import Connection, Database
from .outbox import queue_callbacks_for_batch
from .sql import dialect_of, greatest

_PENDING = (codes.QUEUED, codes.SCHEDULED)
_CANCELLED_TEXT = "cancelled by operator"

# Product names are checked at creation (models.check_product_name); this
# guards the one place a name is written into SQL text rather than bound.
_SAFE_LITERAL = re.compile(r"^[A-Za-z0-9_.-]+$")


def _values(series: pd.Series) -> list[object]:
    """A column as a Python list with None for missing values (what sqlite3 binds as NULL)."""
    if series.dtype.kind in "iu":
        return series.tolist()
    mask = series.isna().to_numpy()
    values = series.to_numpy(dtype=object, na_value=None) if hasattr(series.array, "to_numpy") else series.to_numpy()
    if mask.any():
        values = values.copy()
        values[mask] = None
    return values.tolist()


def _epoch(series: pd.Series) -> list[float]:
    """tz-aware datetimes as epoch seconds; NaT ("send now") as 0."""
    if series.isna().all():
        return [0.0] * len(series)
    seconds = series.dt.tz_convert("UTC").dt.as_unit("ns").astype("int64").to_numpy() / 1e9
    seconds[series.isna().to_numpy()] = 0.0
    return seconds.tolist()


class MessageStore:
    """Messages stored at intake (rows and blocks), and cancelled by the operator."""

    def __init__(self, db: Database, blocks: BlockQueue) -> None:
        self.db = db
        self.blocks = blocks

    # --- intake ---------------------------------------------------------
    def insert_messages(self, batch_seq: int, product: str, frame: pd.DataFrame) -> None:
        """Store one chunk of rule-checked rows (all of them, rejected ones too) in one transaction.

        This is the hot path of a big upload (a million rows must land in
        seconds): rows due now go into message blocks (ledger/blocks.py) and
        become messages rows when leased; only rows with a state of their
        own from the start (rejected, scheduled) are written one by one.
        """
        if len(frame) == 0:
            return
        if not _SAFE_LITERAL.match(product):
            raise LedgerError(f"product name {product!r} cannot be stored")
        now = time.time()
        due_now = ((frame["status"] == codes.QUEUED) & frame["not_before"].isna()).to_numpy()
        blocks = pack(frame[due_now]) if due_now.any() else []
        individual = frame[~due_now]
        with self.db.transaction() as tx:
            if blocks:
                tx.executemany(
                    "INSERT INTO message_blocks (batch_seq, product, first_row, last_row, size, parts_left, created_at, payload) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(batch_seq, product, first, last, size, parts, now, payload) for first, last, size, parts, payload in blocks],
                )
            if len(individual):
                self._insert_rows(tx, batch_seq, product, individual, now)
                # rows born scheduled (011) or rejected (005) are status changes a callback may report
                rows = individual["row"]
                queue_callbacks_for_batch(tx, batch_seq, now, (int(rows.iloc[0]), int(rows.iloc[-1])))
            if "note" in frame.columns and frame["note"].notna().any():
                noted = frame[frame["note"].notna()]
                tx.executemany(
                    "INSERT INTO message_notes (batch_seq, row_no, note) VALUES (?, ?, ?)",
                    zip([batch_seq] * len(noted), noted["row"].astype("int64").tolist(), _values(noted["note"])),
                )
            touch_batches(tx, [batch_seq], now)

    def _insert_rows(self, tx: Connection, batch_seq: int, product: str, frame: pd.DataFrame, now: float) -> None:
        """One messages row per frame row. Values the rows share are written into the
        statement instead of being bound per row, and columns empty for the whole
        frame are left to their default."""
        constants = {"batch_seq": str(int(batch_seq)), "product": f"'{product}'", "updated_at": repr(float(now))}
        not_before = _epoch(frame["not_before"])
        per_row: dict[str, Sequence[object]] = {
            "row_no": frame["row"].astype("int64").tolist(),
            "destination": _values(frame["destination"]),
            "text": _values(frame["text"]),
            "encoding": _values(frame["encoding"]),
            "parts": frame["parts"].astype("int64").tolist(),
            "status": _values(frame["status"]),
        }
        if any(not_before):
            per_row["not_before"] = not_before
        for name in ("sender", "climsgid", "error_code", "error_text"):
            if frame[name].notna().any():
                per_row[name] = _values(frame[name])
        if frame["validity_minutes"].notna().any():
            per_row["validity_minutes"] = _values(frame["validity_minutes"].astype("Int64").astype(object))
        names = [*constants, *per_row]
        values = [*constants.values(), *("?" for _ in per_row)]
        tx.executemany(
            f"INSERT INTO messages ({', '.join(names)}) VALUES ({', '.join(values)})", zip(*per_row.values())
        )

    def max_row(self, batch_seq: int) -> int:
        """The highest row of a batch stored so far (0: none)."""
        return last_row_stored(self.db.connection(), batch_seq)

    def cancel_pending(self, batch_seq: int) -> int:
        now = time.time()
        with self.db.transaction() as tx:
            drained = self.blocks.drain(tx, batch_seq, codes.CANCELLED, _CANCELLED_TEXT, now)
            # A message leased right now may be on its way to the SMSC already: it
            # keeps its lease, and its answer, when it comes, stands (answers.py
            # takes a 006 that still holds a lease); no answer, or a lease that
            # runs out, leaves it cancelled. Until then it counts as pending.
            cur = tx.execute(
                "UPDATE messages SET status = ?, error_text = ?, updated_at = ?, "
                "lease_owner = CASE WHEN lease_until >= ? THEN lease_owner END, "
                "lease_until = CASE WHEN lease_until >= ? THEN lease_until END "
                "WHERE batch_seq = ? AND status IN (?, ?)",
                (codes.CANCELLED, _CANCELLED_TEXT, now, now, now, batch_seq, *_PENDING),
            )
            queue_callbacks_for_batch(tx, batch_seq, now)
            touch_batches(tx, [batch_seq], now)
        return drained + cur.rowcount


def last_row_stored(conn: Connection, batch_seq: int) -> int:
    """The highest row of a batch stored so far, as a row or in a block (0: none)."""
    row = conn.execute(
        # COALESCE: a multi-argument MAX is NULL as soon as one argument is
        f"SELECT {greatest(dialect_of(conn))}((SELECT COALESCE(MAX(row_no), 0) FROM messages WHERE batch_seq = ?), "
        "(SELECT COALESCE(MAX(last_row), 0) FROM message_blocks WHERE batch_seq = ?))",
        (batch_seq, batch_seq),
    ).fetchone()
    return int(row[0] or 0)
