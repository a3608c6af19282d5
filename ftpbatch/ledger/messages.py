"""Messages: the dispatch state machine (DESIGN.md §12).

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

import itertools
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence, TypeVar

from ..lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: `product list` and `status` never need it
    pd = lazy_module("pandas")

from .. import codes
from ..models import OutboundMessage, Receipt, SubmitResult
from ..errors import LedgerError
from .blocks import BlockCache, BlockRows, pack, unpack
from .db import Database
from .outbox import (
    queue_callbacks_for_batch,
    queue_callbacks_for_messages,
    queue_callbacks_for_upstream,
)

# SQLite's default limit of host parameters per statement is 32766; stay well below.
_IN_CHUNK = 500
_T = TypeVar("_T")
_PENDING = (codes.QUEUED, codes.SCHEDULED)
# Rows per multi-row INSERT when block messages become rows (14 parameters each).
_VALUES_ROWS = 500
_ROW_MARKS = ", ".join("?" * 14)
_CANCELLED_TEXT = "cancelled by operator"
_REPORT_COLUMNS = (
    "row_no, destination, climsgid, account, upstream_id, parts, status, error_code, error_text, "
    "submitted_at, updated_at, possible_duplicate"
)

# Product names are checked at creation (models.check_product_name); this
# guards the one place a name is written into SQL text rather than bound.
_SAFE_LITERAL = re.compile(r"^[A-Za-z0-9_.-]+$")


# rows per UPDATE ... FROM (VALUES ...): within SQLite's 32,766 bound parameters
_VALUES_CHUNK = 2000


def _value_marks(rows: int, width: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return ", ".join([row] * rows)


def _chunks(items: Sequence[_T], size: int = _IN_CHUNK) -> Iterator[Sequence[_T]]:
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
    #: Decoded message blocks of this process (payloads never change).
    block_cache: BlockCache
    #: Seconds after a submit when a missing receipt stops holding its batch open.
    receipt_timeout: float
    touch_batches: Callable[[sqlite3.Connection, Iterable[int], float], None]  # from BatchStore

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
            self.touch_batches(tx, [batch_seq], now)

    def _insert_rows(self, tx: sqlite3.Connection, batch_seq: int, product: str, frame: pd.DataFrame, now: float) -> None:
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
        row = self.db.connection().execute(
            # COALESCE: a multi-argument MAX is NULL as soon as one argument is
            "SELECT MAX((SELECT COALESCE(MAX(row_no), 0) FROM messages WHERE batch_seq = ?), "
            "(SELECT COALESCE(MAX(last_row), 0) FROM message_blocks WHERE batch_seq = ?))",
            (batch_seq, batch_seq),
        ).fetchone()
        return int(row[0] or 0)

    # --- blocks -----------------------------------------------------------
    def _block(self, conn: sqlite3.Connection, block_id: int) -> BlockRows:
        rows = self.block_cache.get(block_id)
        if rows is None:
            (payload,) = conn.execute("SELECT payload FROM message_blocks WHERE id = ?", (block_id,)).fetchone()
            rows = unpack(payload)
            self.block_cache.put(block_id, rows)
        return rows

    def _take_from_block(
        self,
        tx: sqlite3.Connection,
        block: sqlite3.Row,
        count: int,
        now: float,
        *,
        status: str = codes.QUEUED,
        error_text: str | None = None,
        lease: tuple[str, float] | None = None,
    ) -> list[tuple[int, int, BlockRows]]:
        """Make the block's next ``count`` messages rows; returns (message id, index in block, block) each.

        Leased rows start at attempt 1 with the lease set; others (cancelled)
        are written with their final status.
        """
        rows = self._block(tx, block["id"])
        start = int(block["taken"])
        stop = min(start + count, int(block["size"]))
        owner, until = lease if lease else (None, None)
        attempt = 1 if lease else 0
        made: list[tuple[int, int, BlockRows]] = []
        for first in range(start, stop, _VALUES_ROWS):
            indexes = range(first, min(first + _VALUES_ROWS, stop))
            params: list[object] = []
            for i in indexes:
                params += (
                    rows.row_no[i], block["product"], rows.destination[i], rows.text[i], rows.sender[i],
                    rows.climsgid[i], rows.encoding[i], rows.parts[i], rows.validity_minutes[i],
                    status, error_text, now, owner, until,
                )
            # One multi-row INSERT per slice. The new ids are the last one and the
            # ones before it, in VALUES order: SQLite gives a new row the largest
            # rowid + 1 (we hold the write lock). Not RETURNING: that steps once per
            # row, and every step gives up the GIL and waits to get it back.
            values = ", ".join(f"({int(block['batch_seq'])}, {_ROW_MARKS}, {attempt})" for _ in indexes)
            last = tx.execute(
                "INSERT INTO messages (batch_seq, row_no, product, destination, text, sender, climsgid, encoding, "
                "parts, validity_minutes, status, error_text, updated_at, lease_owner, lease_until, attempt) "
                f"VALUES {values}",
                params,
            ).lastrowid
            assert last is not None
            first_id = last - len(indexes) + 1
            self._check_ids(tx, first_id, last, int(block["batch_seq"]), rows.row_no[indexes[0]], rows.row_no[indexes[-1]])
            made.extend((first_id + k, i, rows) for k, i in enumerate(indexes))
        taken_parts = sum(rows.parts[start:stop])
        moved = tx.execute(
            "UPDATE message_blocks SET taken = ?, parts_left = parts_left - ? WHERE id = ? AND taken = ?",
            (stop, taken_parts, block["id"], start),
        ).rowcount
        if moved != 1:  # another writer moved the cursor since it was read: undo the whole transaction
            raise LedgerError(f"message block {block['id']} changed while its messages were taken")
        if stop >= len(rows):
            self.block_cache.forget(block["id"])
        made.sort(key=lambda m: m[0])
        return made

    @staticmethod
    def _check_ids(tx: sqlite3.Connection, first_id: int, last_id: int, batch_seq: int, first_row: int, last_row: int) -> None:
        """The ids first_id..last_id are the rows just inserted, in order (one query, one step).

        Rowids stop being "largest + 1" only when the largest possible one is
        taken; then SQLite picks them at random, and this says so rather than
        pairing messages with the wrong rows.
        """
        found = tx.execute(
            "SELECT count(*), min(row_no), max(row_no), min(batch_seq), max(batch_seq) FROM messages WHERE id BETWEEN ? AND ?",
            (first_id, last_id),
        ).fetchone()
        if tuple(found) != (last_id - first_id + 1, first_row, last_row, batch_seq, batch_seq):
            raise LedgerError(f"message ids {first_id}..{last_id} are not the rows just inserted ({tuple(found)})")

    def _drain_blocks(self, tx: sqlite3.Connection, batch_seq: int, status: str, error_text: str | None, now: float) -> int:
        """Write every untaken message of a batch's blocks as a row with ``status`` (a batch cancelled or refused)."""
        blocks = tx.execute(
            "SELECT id, batch_seq, product, taken, size FROM message_blocks WHERE batch_seq = ? AND taken < size",
            (batch_seq,),
        ).fetchall()
        return sum(
            len(self._take_from_block(tx, block, block["size"], now, status=status, error_text=error_text))
            for block in blocks
        )

    # --- dispatch -------------------------------------------------------
    def lease(self, owner: str, product: str, limit: int, now: float, lease_seconds: float) -> list[OutboundMessage]:
        """Take up to ``limit`` due messages of ``product``.

        Messages that already are rows come first (retries, expired leases,
        scheduled messages now due), oldest first; then the product's
        blocks, oldest first. A message whose previous lease expired (its
        sender crashed or hung) may already have reached the SMSC: it is
        flagged possible duplicate.
        """
        until = now + lease_seconds
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
                (owner, until, product, now, now, limit),
            ).fetchall()
            rows.sort(key=lambda r: r[0])
            leased = [
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
            if len(leased) < limit:
                leased += self._lease_from_blocks(tx, owner, product, limit - len(leased), now, until)
        return leased

    def _lease_from_blocks(
        self, tx: sqlite3.Connection, owner: str, product: str, limit: int, now: float, until: float
    ) -> list[OutboundMessage]:
        leased: list[OutboundMessage] = []
        blocks = tx.execute(
            "SELECT id, batch_seq, product, taken, size FROM message_blocks "
            "WHERE product = ? AND taken < size ORDER BY id LIMIT ?",
            (product, limit),
        ).fetchall()
        for block in blocks:
            if len(leased) >= limit:
                break
            for message_id, i, rows in self._take_from_block(tx, block, limit - len(leased), now, lease=(owner, until)):
                leased.append(
                    OutboundMessage(
                        message_id=message_id,
                        attempt=1,
                        product=product,
                        destination=rows.destination[i],
                        sender=rows.sender[i],
                        text=rows.text[i],
                        encoding=rows.encoding[i],
                        parts=rows.parts[i],
                        validity_minutes=rows.validity_minutes[i],
                        reference=rows.climsgid[i],
                    )
                )
        return leased

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
        self.record_answers(account, results, ())

    def record_receipts(self, receipts: Sequence[Receipt]) -> int:
        """Apply delivery receipts; park those whose message is not known yet. Returns the number parked."""
        return self.record_answers("", (), receipts)

    def record_answers(self, account: str, results: Sequence[SubmitResult], receipts: Sequence[Receipt]) -> int:
        """Submit answers (from ``account``), then receipts, in one transaction; returns the receipts parked.

        The answers go first, so a receipt that came with its answer finds its
        message. One transaction for both: the dispatcher's sink writes every
        few milliseconds, and each commit costs.
        """
        if not results and not receipts:
            return 0
        now = time.time()
        with self.db.transaction() as tx:
            if results:
                self._apply_results(tx, account, results, now)
            return self._apply_receipts(tx, receipts, now) if receipts else 0

    def _apply_results(self, tx: sqlite3.Connection, account: str, results: Sequence[SubmitResult], now: float) -> None:
        due = now + float(self.receipt_timeout)
        ok = list({(r.message_id, r.attempt): (r.upstream_id, r.message_id, r.attempt)
                   for r in results if r.upstream_id and not r.retry}.values())
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
        for part in _chunks(ok, _VALUES_CHUNK):
            tx.execute(
                "UPDATE messages SET status = '003', account = ?, upstream_id = v.column1, submitted_at = ?, "
                "updated_at = ?, lease_owner = NULL, lease_until = NULL, receipt_due = ? "
                f"FROM (VALUES {_value_marks(len(part), 3)}) AS v "
                "WHERE messages.id = v.column2 AND messages.attempt = v.column3 AND messages.status IN ('002', '011')",
                (account, now, now, due, *itertools.chain.from_iterable(part)),
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
        self._touch_batches_of_messages(tx, ids, now)
        if ok:
            self._apply_parked(tx, account, [str(row[0]) for row in ok], now)

    def _apply_receipts(self, tx: sqlite3.Connection, receipts: Sequence[Receipt], now: float) -> int:
        parked = 0
        by_account: dict[str, list[Receipt]] = {}
        for receipt in receipts:
            by_account.setdefault(receipt.account, []).append(receipt)
        for account, items in by_account.items():
            # The first receipt for a message decides; a later one finds it final.
            first: dict[str, Receipt] = {}
            for r in items:
                first.setdefault(r.upstream_id, r)
            upstream_ids = list(first)
            # One statement per 2,000 receipts, joined on (account, upstream id):
            # no read of the messages first, which stepped (and traded the GIL) per row.
            changed = 0
            for part in _chunks(list(first.values()), _VALUES_CHUNK):
                changed += tx.execute(
                    "UPDATE messages SET status = v.column2, error_text = COALESCE(v.column3, messages.error_text), "
                    f"updated_at = ? FROM (VALUES {_value_marks(len(part), 3)}) AS v "
                    "WHERE messages.account = ? AND messages.upstream_id = v.column1 "
                    "AND messages.status IN ('002', '003', '011')",
                    (now, *itertools.chain.from_iterable((r.upstream_id, r.status, r.error_text) for r in part), account),
                ).rowcount
            if changed:
                queue_callbacks_for_upstream(tx, account, upstream_ids, now)  # the messages changed just now
                self._touch_batches_of_upstream(tx, account, upstream_ids, now)
            if changed == len(first):
                continue  # every receipt found its message: nothing to park
            # Some did not: those for a message already final are done; the
            # others overtook their submit answer and wait in the ledger.
            known = self._find_upstream(tx, account, upstream_ids)
            orphans = [(account, r.upstream_id, r.status, r.error_text, now) for r in items if r.upstream_id not in known]
            if orphans:
                tx.executemany(
                    "INSERT INTO parked_receipts (account, upstream_id, status, error_text, received_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (account, upstream_id) DO UPDATE SET "
                    "status = excluded.status, error_text = excluded.error_text, received_at = excluded.received_at",
                    orphans,
                )
                parked += len(orphans)
        return parked

    def _touch_batches_of_messages(self, tx: sqlite3.Connection, message_ids: Sequence[int], now: float) -> None:
        for part in _chunks(list(message_ids)):
            self._touch_batches_where(tx, f"id IN ({', '.join('?' * len(part))})", tuple(part), now)

    def _touch_batches_of_upstream(self, tx: sqlite3.Connection, account: str, upstream_ids: Sequence[str], now: float) -> None:
        for part in _chunks(list(upstream_ids)):
            self._touch_batches_where(tx, f"account = ? AND upstream_id IN ({', '.join('?' * len(part))})", (account, *part), now)

    def _touch_batches_where(self, tx: sqlite3.Connection, condition: str, params: tuple[object, ...], now: float) -> None:
        """Bump the batches holding the messages that match ``condition`` (one statement), so their reports get rewritten."""
        tx.execute(
            "UPDATE batches SET version = version + 1, updated_at = ? "
            f"WHERE seq IN (SELECT batch_seq FROM messages WHERE {condition})",
            (now, *params),
        )

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
            drained = self._drain_blocks(tx, batch_seq, codes.CANCELLED, _CANCELLED_TEXT, now)
            cur = tx.execute(
                "UPDATE messages SET status = ?, error_text = ?, updated_at = ?, "
                "lease_owner = NULL, lease_until = NULL WHERE batch_seq = ? AND status IN (?, ?)",
                (codes.CANCELLED, _CANCELLED_TEXT, now, batch_seq, *_PENDING),
            )
            queue_callbacks_for_batch(tx, batch_seq, now)
            self.touch_batches(tx, [batch_seq], now)
        return drained + cur.rowcount

    # --- reporting ------------------------------------------------------
    def status_counts(self, batch_seq: int) -> list[StatusTally]:
        """How many messages of a batch are in each status (split by whether they were ever sent)."""
        # one snapshot: a lease moving messages from a block into rows must not count them twice
        with self.db.snapshot() as conn:
            rows = conn.execute(
                "SELECT status, attempt > 0, COUNT(*), COALESCE(SUM(parts), 0), COALESCE(SUM(receipt_timed_out), 0), "
                "COALESCE(SUM(possible_duplicate), 0) FROM messages WHERE batch_seq = ? GROUP BY status, attempt > 0",
                (batch_seq,),
            ).fetchall()
            waiting, waiting_parts = conn.execute(
                "SELECT COALESCE(SUM(size - taken), 0), COALESCE(SUM(parts_left), 0) FROM message_blocks "
                "WHERE batch_seq = ? AND taken < size",
                (batch_seq,),
            ).fetchone()
        tallies = {(r[0], bool(r[1])): StatusTally(r[0], bool(r[1]), r[2], r[3], r[4], r[5]) for r in rows}
        if waiting:
            known = tallies.get((codes.QUEUED, False), StatusTally(codes.QUEUED, False, 0, 0, 0, 0))
            tallies[(codes.QUEUED, False)] = StatusTally(
                codes.QUEUED, False, known.messages + waiting, known.parts + waiting_parts, known.receipt_timeouts,
                known.possible_duplicates,
            )
        return list(tallies.values())

    def report_frames(self, batch_seq: int, chunk_rows: int = 200_000) -> Iterator[pd.DataFrame]:
        """The rows of a batch's report.csv, in file order, in bounded chunks of row numbers."""
        last_row = self.max_row(batch_seq)
        low = 0
        while low < last_row:
            high = low + chunk_rows
            with self.db.snapshot() as conn:  # rows and untaken block messages as of one moment
                frame = pd.read_sql_query(
                    f"SELECT {_REPORT_COLUMNS} FROM messages "
                    "WHERE batch_seq = ? AND row_no > ? AND row_no <= ? ORDER BY row_no",
                    conn,
                    params=(batch_seq, low, high),
                )
                waiting = self._waiting_rows(conn, batch_seq, low, high)
            if waiting is not None:
                frame = pd.concat([frame, waiting], ignore_index=True) if len(frame) else waiting
                frame = frame.sort_values("row_no", kind="stable", ignore_index=True)
            if len(frame):
                yield frame
            low = high

    def _waiting_rows(self, conn: sqlite3.Connection, batch_seq: int, low: int, high: int) -> pd.DataFrame | None:
        """Report rows for block messages in (low, high] not taken yet: queued, never sent."""
        pieces = []
        for block in conn.execute(
            "SELECT id, taken, created_at FROM message_blocks "
            "WHERE batch_seq = ? AND taken < size AND first_row <= ? AND last_row > ?",
            (batch_seq, high, low),
        ).fetchall():
            rows = self._block(conn, block["id"])
            taken = int(block["taken"])
            row_no = pd.Series(rows.row_no[taken:], dtype="int64")
            keep = ((row_no > low) & (row_no <= high)).to_numpy()
            n = int(keep.sum())
            pieces.append(
                pd.DataFrame(
                    {
                        "row_no": row_no[keep].to_numpy(),
                        "destination": pd.Series(rows.destination[taken:], dtype=object)[keep].to_numpy(),
                        "climsgid": pd.Series(rows.climsgid[taken:], dtype=object)[keep].to_numpy(),
                        "account": [None] * n,
                        "upstream_id": [None] * n,
                        "parts": pd.Series(rows.parts[taken:], dtype="int64")[keep].to_numpy(),
                        "status": [codes.QUEUED] * n,
                        "error_code": [None] * n,
                        "error_text": [None] * n,
                        "submitted_at": [None] * n,
                        "updated_at": [float(block["created_at"])] * n,
                        "possible_duplicate": [0] * n,
                    }
                )
            )
        return pd.concat(pieces, ignore_index=True) if pieces else None
