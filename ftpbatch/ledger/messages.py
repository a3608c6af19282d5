"""Messages: the dispatch state machine (DESIGN.md §12).

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
import sqlite3
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import pandas as pd

from .. import codes
from ..dispatch.connector import OutboundMessage, Receipt, SubmitResult
from ..errors import LedgerError
from .db import Database
from .outbox import queue_callbacks_for_batch, queue_callbacks_for_messages, queue_callbacks_for_upstream

# SQLite's default limit of host parameters per statement is 32766; stay well below.
_IN_CHUNK = 500
_PENDING = (codes.QUEUED, codes.SCHEDULED)
_OPEN = (codes.QUEUED, codes.SCHEDULED, codes.SUBMITTED)

# Product names are checked at creation (models.check_product_name); this
# guards the one place a name is written into SQL text rather than bound.
_SAFE_LITERAL = re.compile(r"^[A-Za-z0-9_.-]+$")


def _chunks(items: Sequence[object], size: int = _IN_CHUNK) -> Iterator[Sequence[object]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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


@dataclass(frozen=True)
class StatusTally:
    status: str
    sent: bool  # leased for sending at least once (so not rejected at intake)
    messages: int
    parts: int
    receipt_timeouts: int
    possible_duplicates: int


class MessageStore:
    db: Database
    #: Seconds after a submit when a missing receipt stops holding its batch open.
    receipt_timeout: float
    touch_batches: Callable[[sqlite3.Connection, Iterable[int], float], None]  # from BatchStore

    # --- intake ---------------------------------------------------------
    def insert_messages(self, batch_seq: int, product: str, frame: pd.DataFrame) -> None:
        """Store one chunk of rule-checked rows (all of them, rejected ones too) in one transaction.

        This is the hot path of a big upload (a million rows must land in
        seconds), so values the chunk shares are written into the statement
        instead of being bound a million times, and columns that are empty
        for the whole chunk are left to their default.
        """
        n = len(frame)
        if n == 0:
            return
        now = time.time()
        if not _SAFE_LITERAL.match(product):
            raise LedgerError(f"product name {product!r} cannot be stored")
        constants = {"batch_seq": str(int(batch_seq)), "product": f"'{product}'", "updated_at": repr(float(now))}
        not_before = _epoch(frame["not_before"])
        per_row: dict[str, list[object]] = {
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
        rows = per_row["row_no"]
        with self.db.transaction() as tx:
            tx.executemany(
                f"INSERT INTO messages ({', '.join(names)}) VALUES ({', '.join(values)})", zip(*per_row.values())
            )
            # rows born scheduled (011) or rejected (005) are status changes a callback may report
            queue_callbacks_for_batch(tx, batch_seq, now, (int(rows[0]), int(rows[-1])))
            self.touch_batches(tx, [batch_seq], now)

    def max_row(self, batch_seq: int) -> int:
        row = self.db.connection().execute("SELECT MAX(row_no) FROM messages WHERE batch_seq = ?", (batch_seq,)).fetchone()
        return int(row[0] or 0)

    # --- dispatch -------------------------------------------------------
    def lease(self, owner: str, product: str, limit: int, now: float, lease_seconds: float) -> list[OutboundMessage]:
        """Take up to ``limit`` due messages of ``product``, oldest first.

        A message whose previous lease expired (its sender crashed or hung)
        may already have reached the SMSC: it is flagged possible duplicate.
        """
        with self.db.transaction() as tx:
            rows = tx.execute(
                "UPDATE messages SET lease_owner = ?, lease_until = ?, attempt = attempt + 1, "
                "possible_duplicate = CASE WHEN lease_until IS NOT NULL THEN 1 ELSE possible_duplicate END "
                # The statuses are literals, not parameters: only then can SQLite see that the
                # partial index messages_queue applies (bound, it scans and sorts the whole table).
                "WHERE id IN (SELECT id FROM messages WHERE product = ? AND status IN ('002', '011') "
                "AND not_before <= ? AND (lease_until IS NULL OR lease_until < ?) "
                "ORDER BY not_before, id LIMIT ?) "
                "RETURNING id, attempt, destination, sender, text, encoding, parts, validity_minutes, climsgid",
                (owner, now + lease_seconds, product, now, now, limit),
            ).fetchall()
        rows.sort(key=lambda r: r[0])
        return [
            OutboundMessage(
                message_id=r[0],
                attempt=r[1],
                product=product,
                destination=r[2],
                sender=r[3],
                text=r[4],
                encoding=r[5],
                parts=r[6],
                validity_minutes=r[7],
                reference=r[8],
            )
            for r in rows
        ]

    def expire_leases_of(self, owner: str) -> int:
        """At start-up: this node's leases died with its previous process.

        Making them expire now (instead of after ``lease_seconds``) resumes
        the batch at once; the next lease flags them possible duplicates.
        """
        with self.db.transaction() as tx:
            cur = tx.execute(
                # literal statuses: the partial queue index applies (see lease)
                "UPDATE messages SET lease_until = 0 WHERE lease_owner = ? AND status IN ('002', '011') "
                "AND lease_until IS NOT NULL",
                (owner,),
            )
        return cur.rowcount

    def record_results(self, account: str, results: Sequence[SubmitResult]) -> None:
        """Apply submit answers in one transaction; stale attempts are ignored."""
        if not results:
            return
        now = time.time()
        due = now + float(self.receipt_timeout)
        ok = [(account, r.upstream_id, now, now, due, r.message_id, r.attempt) for r in results if r.upstream_id and not r.retry]
        failed = [
            (
                codes.ROUTING_ERROR if r.error_code == codes.ROUTING_ERROR else codes.ERROR,
                r.error_code or codes.E_INTERNAL,
                r.error_text,
                now,
                r.message_id,
                r.attempt,
            )
            for r in results
            if not r.retry and not r.upstream_id
        ]
        retry = [(r.message_id, r.attempt) for r in results if r.retry]
        with self.db.transaction() as tx:
            if ok:
                tx.executemany(
                    "UPDATE messages SET status = '003', account = ?, upstream_id = ?, submitted_at = ?, "
                    "updated_at = ?, lease_owner = NULL, lease_until = NULL, receipt_due = ? "
                    "WHERE id = ? AND attempt = ? AND status IN ('002', '011')",
                    ok,
                )
            if failed:
                tx.executemany(
                    "UPDATE messages SET status = ?, error_code = ?, error_text = ?, updated_at = ?, "
                    "lease_owner = NULL, lease_until = NULL WHERE id = ? AND attempt = ? AND status IN ('002', '011')",
                    failed,
                )
            if retry:
                tx.executemany(
                    "UPDATE messages SET lease_owner = NULL, lease_until = NULL "
                    "WHERE id = ? AND attempt = ? AND status IN ('002', '011')",
                    retry,
                )
            ids = [r.message_id for r in results]
            queue_callbacks_for_messages(tx, [r.message_id for r in results if not r.retry], now)
            self.touch_batches(tx, self._batches_of(tx, ids), now)
            if ok:
                self._apply_parked(tx, account, [str(row[1]) for row in ok], now)

    def record_receipts(self, receipts: Sequence[Receipt]) -> int:
        """Apply delivery receipts; park those whose message is not known yet. Returns the number parked."""
        if not receipts:
            return 0
        now = time.time()
        parked = 0
        with self.db.transaction() as tx:
            by_account: dict[str, list[Receipt]] = {}
            for receipt in receipts:
                by_account.setdefault(receipt.account, []).append(receipt)
            for account, items in by_account.items():
                known = self._find_upstream(tx, account, [r.upstream_id for r in items])
                updates = []
                orphans = []
                for r in items:
                    hit = known.get(r.upstream_id)
                    if hit is None:
                        orphans.append((account, r.upstream_id, r.status, r.error_text, now))
                    else:
                        updates.append((r.status, r.error_text, now, hit[0]))
                if updates:
                    tx.executemany(
                        "UPDATE messages SET status = ?, error_text = COALESCE(?, error_text), updated_at = ? "
                        "WHERE id = ? AND status IN ('002', '003', '011')",
                        updates,
                    )
                    queue_callbacks_for_messages(tx, [u[3] for u in updates], now)
                    self.touch_batches(tx, {v[1] for v in known.values()}, now)
                if orphans:
                    tx.executemany(
                        "INSERT INTO parked_receipts (account, upstream_id, status, error_text, received_at) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (account, upstream_id) DO UPDATE SET "
                        "status = excluded.status, error_text = excluded.error_text, received_at = excluded.received_at",
                        orphans,
                    )
                    parked += len(orphans)
        return parked

    def _find_upstream(self, tx: sqlite3.Connection, account: str, upstream_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        for part in _chunks(list(upstream_ids)):
            marks = ", ".join("?" for _ in part)
            for row in tx.execute(
                f"SELECT upstream_id, id, batch_seq FROM messages WHERE account = ? AND upstream_id IN ({marks})",
                (account, *part),
            ):
                found[row[0]] = (row[1], row[2])
        return found

    def _apply_parked(self, tx: sqlite3.Connection, account: str, upstream_ids: Sequence[str], now: float) -> None:
        for part in _chunks(list(upstream_ids)):
            marks = ", ".join("?" for _ in part)
            parked = tx.execute(
                f"SELECT upstream_id, status, error_text FROM parked_receipts WHERE account = ? AND upstream_id IN ({marks})",
                (account, *part),
            ).fetchall()
            if not parked:
                continue
            tx.executemany(
                "UPDATE messages SET status = ?, error_text = COALESCE(?, error_text), updated_at = ? "
                "WHERE account = ? AND upstream_id = ? AND status = '003'",
                [(p[1], p[2], now, account, p[0]) for p in parked],
            )
            queue_callbacks_for_upstream(tx, account, [p[0] for p in parked], now)
            tx.executemany(
                "DELETE FROM parked_receipts WHERE account = ? AND upstream_id = ?", [(account, p[0]) for p in parked]
            )

    def _batches_of(self, tx: sqlite3.Connection, message_ids: Sequence[int]) -> set[int]:
        seqs: set[int] = set()
        for part in _chunks(list(message_ids)):
            marks = ", ".join("?" for _ in part)
            seqs.update(r[0] for r in tx.execute(f"SELECT DISTINCT batch_seq FROM messages WHERE id IN ({marks})", part))
        return seqs

    def time_out_receipts(self, now: float) -> int:
        """Stop waiting for receipts that are overdue; their batches may complete."""
        with self.db.transaction() as tx:
            seqs = {
                r[0]
                for r in tx.execute(
                    "SELECT DISTINCT batch_seq FROM messages WHERE status = '003' AND receipt_timed_out = 0 "
                    "AND receipt_due < ?",
                    (now,),
                )
            }
            if not seqs:
                return 0
            cur = tx.execute(
                "UPDATE messages SET receipt_timed_out = 1, updated_at = ? "
                "WHERE status = '003' AND receipt_timed_out = 0 AND receipt_due < ?",
                (now, now),
            )
            self.touch_batches(tx, seqs, now)
        return cur.rowcount

    def cancel_pending(self, batch_seq: int) -> int:
        now = time.time()
        with self.db.transaction() as tx:
            cur = tx.execute(
                "UPDATE messages SET status = ?, error_text = 'cancelled by operator', updated_at = ?, "
                "lease_owner = NULL, lease_until = NULL WHERE batch_seq = ? AND status IN (?, ?)",
                (codes.CANCELLED, now, batch_seq, *_PENDING),
            )
            queue_callbacks_for_batch(tx, batch_seq, now)
            self.touch_batches(tx, [batch_seq], now)
        return cur.rowcount

    # --- reporting ------------------------------------------------------
    def status_counts(self, batch_seq: int) -> list[StatusTally]:
        """How many messages of a batch are in each status (split by whether they were ever sent)."""
        rows = self.db.connection().execute(
            "SELECT status, attempt > 0, COUNT(*), COALESCE(SUM(parts), 0), COALESCE(SUM(receipt_timed_out), 0), "
            "COALESCE(SUM(possible_duplicate), 0) FROM messages WHERE batch_seq = ? GROUP BY status, attempt > 0",
            (batch_seq,),
        )
        return [StatusTally(r[0], bool(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    def report_frames(self, batch_seq: int, chunk_rows: int = 200_000) -> Iterator[pd.DataFrame]:
        """The rows of a batch's report.csv, in file order, in bounded chunks."""
        conn = self.db.connection()
        last = 0
        while True:
            frame = pd.read_sql_query(
                "SELECT row_no, destination, climsgid, account, upstream_id, parts, status, error_code, error_text, "
                "submitted_at, updated_at, possible_duplicate FROM messages "
                "WHERE batch_seq = ? AND row_no > ? ORDER BY row_no LIMIT ?",
                conn,
                params=(batch_seq, last, chunk_rows),
            )
            if frame.empty:
                return
            last = int(frame["row_no"].iloc[-1])
            yield frame
            if len(frame) < chunk_rows:
                return
