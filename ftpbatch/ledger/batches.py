"""Batches: one claimed file each, and the state it is in.

Every state change is a conditional update on the state it leaves, so a
repeated or late call (a second worker, a resumed crash) changes nothing.
"""

from __future__ import annotations

import time
from typing import Iterable, Sequence

from .. import codes, logs
from ..errors import LedgerError
from ..models import CHECKED, COMPLETE, DISPATCHING, PROCESSING, RECEIVED, REJECTED, Batch
from .blockqueue import BlockQueue
from .db import Connection, Database, Row
from .outbox import queue_callbacks_for_batch
from .sql import member_of

_BATCH_COLUMNS = (
    "seq, id, product, file_name, spool_path, source, state, received_at, updated_at, sha256, "
    "size_bytes, error_code, error_text, duplicate_of, callback_level, rows, completed_at, dry_run, paused, notes"
)


def _batch(row: Row) -> Batch:
    fields = {k: row[k] for k in row.keys()}
    fields["dry_run"], fields["paused"] = bool(fields["dry_run"]), bool(fields["paused"])
    fields["notes"] = tuple(fields["notes"].splitlines()) if fields["notes"] else ()
    return Batch(**fields)


class BatchStore:
    def __init__(self, db: Database, blocks: BlockQueue) -> None:
        self.db = db
        #: a batch refused half-way drains its blocks
        self.blocks = blocks

    # --- intake ---------------------------------------------------------
    def record_claim(
        self, batch_id: str, product: str, file_name: str, spool_path: str, source: str, received_at: float,
        dry_run: bool = False,
    ) -> Batch:
        """Record a file just claimed into the spool. Idempotent on ``batch_id``.

        ``dry_run``: a file uploaded to /check, checked and reported but never sent.
        """
        with self.db.transaction() as tx:
            cur = tx.execute(
                "INSERT INTO batches (id, product, file_name, spool_path, source, state, received_at, updated_at, dry_run) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (batch_id, product, file_name, spool_path, source, RECEIVED, received_at, received_at, int(dry_run)),
            )
        if cur.rowcount == 1:
            logs.batch_event(logs.RECEIVED, batch_id, product, file=file_name, source=source, **({"dry_run": True} if dry_run else {}))
        batch = self.get_batch(batch_id)
        assert batch is not None
        return batch

    def get_batch(self, batch_id: str) -> Batch | None:
        row = (
            self.db.connection()
            .execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = ?", (batch_id,))
            .fetchone()
        )
        return _batch(row) if row else None

    def get_batch_by_seq(self, seq: int) -> Batch:
        row = self.db.connection().execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise LedgerError(f"no batch with seq {seq}")
        return _batch(row)

    def batches_in_states(self, states: Iterable[str]) -> list[Batch]:
        states = list(states)
        marks = ", ".join("?" for _ in states)
        rows = (
            self.db.connection()
            .execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE state IN ({marks}) ORDER BY seq", states)
            .fetchall()
        )
        return [_batch(r) for r in rows]

    def list_batches(self, product: str | None = None, limit: int = 100) -> list[Batch]:
        sql = f"SELECT {_BATCH_COLUMNS} FROM batches"
        args: tuple[object, ...] = ()
        if product:
            sql += " WHERE product = ?"
            args = (product,)
        rows = self.db.connection().execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [_batch(r) for r in rows]

    # --- processing -----------------------------------------------------
    def start_processing(self, seq: int) -> bool:
        """received -> processing; also true when resuming a batch whose intake did not finish.

        (A batch is ``dispatching`` from its first queued message on, but its
        intake is finished only once ``rows`` is set, see ``finish_intake``.)
        """
        with self.db.transaction() as tx:
            cur = tx.execute(
                "UPDATE batches SET state = ?, updated_at = ?, version = version + 1 WHERE seq = ? AND state = ?",
                (PROCESSING, time.time(), seq, RECEIVED),
            )
            row = tx.execute("SELECT state, id, product, rows FROM batches WHERE seq = ?", (seq,)).fetchone()
        if cur.rowcount == 1:
            logs.batch_event(logs.PROCESSING, row[1], row[2])
        return row is not None and (row[0] == PROCESSING or (row[0] == DISPATCHING and row[3] == 0))

    def start_dispatching(self, seq: int) -> None:
        """processing -> dispatching: the first messages of the file are queued (the rest may still be read)."""
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE batches SET state = ?, updated_at = ?, version = version + 1 WHERE seq = ? AND state = ? "
                "RETURNING id, product",
                (DISPATCHING, time.time(), seq, PROCESSING),
            ).fetchall()
        if changed:
            logs.batch_event(logs.DISPATCHING, changed[0][0], changed[0][1])

    def set_file_facts(self, seq: int, sha256: str, size_bytes: int) -> None:
        with self.db.transaction() as tx:
            tx.execute("UPDATE batches SET sha256 = ?, size_bytes = ? WHERE seq = ?", (sha256, size_bytes, seq))

    def find_duplicate(self, product: str, sha256: str, since: float, seq: int) -> str | None:
        """An earlier, not rejected batch of the same bytes received after ``since`` (dry runs do not count)."""
        row = (
            self.db.connection()
            .execute(
                "SELECT id FROM batches WHERE product = ? AND sha256 = ? AND seq < ? AND received_at >= ? "
                "AND state <> ? AND dry_run = 0 ORDER BY seq DESC LIMIT 1",
                (product, sha256, seq, since, REJECTED),
            )
            .fetchone()
        )
        return row[0] if row else None

    def reject_batch(self, seq: int, code: str, text: str, duplicate_of: str | None = None) -> None:
        now = time.time()
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE batches SET state = ?, error_code = ?, error_text = ?, duplicate_of = ?, "
                "updated_at = ?, completed_at = ?, version = version + 1 "
                "WHERE seq = ? AND (state IN (?, ?) OR (state = ? AND rows = 0)) RETURNING id, product",
                (REJECTED, code, text, duplicate_of, now, now, seq, RECEIVED, PROCESSING, DISPATCHING),
            ).fetchall()
            # a batch refused half-way must not send what was already recorded
            self.blocks.drain(tx, seq, codes.CANCELLED, None, now)
            tx.execute(
                "UPDATE messages SET status = ?, updated_at = ? WHERE batch_seq = ? AND status IN (?, ?)",
                (codes.CANCELLED, now, seq, codes.QUEUED, codes.SCHEDULED),
            )
            queue_callbacks_for_batch(tx, seq, now)
        if changed:
            logs.batch_event(logs.REJECTED, changed[0][0], changed[0][1], code=code, error=text, duplicate_of=duplicate_of)

    def finish_intake(self, seq: int, rows: int, callback_level: int | None) -> None:
        """Every row of the file is in the ledger: ``rows`` is set (so the batch may complete), state dispatching."""
        with self.db.transaction() as tx:
            before = tx.execute("SELECT state FROM batches WHERE seq = ?", (seq,)).fetchone()
            cur = tx.execute(
                "UPDATE batches SET state = ?, rows = ?, callback_level = ?, updated_at = ?, version = version + 1 "
                "WHERE seq = ? AND (state = ? OR (state = ? AND rows = 0)) RETURNING id, product",
                (DISPATCHING, rows, callback_level, time.time(), seq, PROCESSING, DISPATCHING),
            )
            changed = cur.fetchall()  # all of it: a RETURNING statement left open would block the commit
        if changed and before is not None and before[0] == PROCESSING:  # else start_dispatching logged it
            logs.batch_event(logs.DISPATCHING, changed[0][0], changed[0][1], rows=rows)

    def finish_check(self, seq: int, rows: int) -> bool:
        """A dry run is checked whole: processing -> checked (final), its reports written by intake itself.

        The batch counts as reported (its files came from the checked rows,
        not from messages in the ledger), so the reporter leaves them alone.
        """
        now = time.time()
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE batches SET state = ?, rows = ?, completed_at = ?, updated_at = ?, version = version + 1, "
                "reported_version = version + 1 WHERE seq = ? AND state = ? AND dry_run = 1 RETURNING id, product",
                (CHECKED, rows, now, now, seq, PROCESSING),
            ).fetchall()
        if changed:
            logs.batch_event(logs.CHECKED, changed[0][0], changed[0][1], rows=rows)
        return bool(changed)

    def set_callback_level(self, seq: int, callback_level: int | None) -> None:
        """The file's own ``callback:`` level; set it before the first messages are stored.

        Callbacks are queued as statuses change, with the level in force at
        that moment, so a level learnt only at ``finish_intake`` would come
        too late for the first chunks of a big file.
        """
        with self.db.transaction() as tx:
            tx.execute("UPDATE batches SET callback_level = ? WHERE seq = ?", (callback_level, seq))

    def set_notes(self, seq: int, notes: Sequence[str]) -> None:
        """What the sender should know about the whole file (e.g. only its first sheet read): summary.json's notes."""
        text = "\n".join(" ".join(note.split()) for note in notes) or None
        with self.db.transaction() as tx:
            tx.execute("UPDATE batches SET notes = ? WHERE seq = ?", (text, seq))
            touch_batches(tx, [seq], time.time())

    def set_spool_path(self, seq: int, path: str) -> None:
        with self.db.transaction() as tx:
            tx.execute("UPDATE batches SET spool_path = ? WHERE seq = ?", (path, seq))

    def complete_batch(self, seq: int) -> bool:
        now = time.time()
        with self.db.transaction() as tx:
            cur = tx.execute(
                "UPDATE batches SET state = ?, completed_at = ?, updated_at = ?, version = version + 1 "
                "WHERE seq = ? AND state = ? AND rows > 0",  # rows: the whole file is in
                (COMPLETE, now, now, seq, DISPATCHING),
            )
        return cur.rowcount == 1

    # --- reporting ------------------------------------------------------
    def unreported_batches(self, limit: int = 50) -> list[tuple[int, int]]:
        """(seq, version) of batches whose report files are behind the ledger."""
        rows = (
            self.db.connection()
            .execute(
                "SELECT seq, version FROM batches WHERE reported_version < version ORDER BY seq LIMIT ?", (limit,)
            )
            .fetchall()
        )
        return [(r[0], r[1]) for r in rows]

    def report_is_current(self, seq: int) -> bool:
        row = self.db.connection().execute("SELECT reported_version >= version FROM batches WHERE seq = ?", (seq,)).fetchone()
        return bool(row and row[0])

    def mark_reported(self, seq: int, version: int) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE batches SET reported_version = ? WHERE seq = ? AND reported_version < ?", (version, seq, version)
            )


def touch_batches(tx: Connection, seqs: Iterable[int], now: float) -> None:
    """Note that these batches changed, so their reports get rewritten."""
    tx.executemany(
        "UPDATE batches SET version = version + 1, updated_at = ? WHERE seq = ?", [(now, s) for s in set(seqs)]
    )


def touch_batches_of_messages(tx: Connection, message_ids: Sequence[int], now: float) -> None:
    """As :func:`touch_batches`, for the batches holding these messages (one statement per chunk).

    Ids that lie close together (a leased window: consecutive rows of a block)
    are one range: one statement that walks that stretch of the table, not an
    IN-list of thousands of bound ids (a batch touched that did not change
    would only get its report rewritten once more).
    """
    if not message_ids:
        return
    low, high = min(message_ids), max(message_ids)
    if high - low < 2 * len(message_ids):
        touch_batches_where(tx, "id BETWEEN ? AND ?", (low, high), now)
        return
    for where, params in member_of(tx, "id", message_ids, "bigint"):
        touch_batches_where(tx, where, tuple(params), now)


def touch_batches_where(tx: Connection, condition: str, params: tuple[object, ...], now: float) -> None:
    """Bump the batches holding the messages that match ``condition`` (one statement), so their reports get rewritten."""
    tx.execute(
        "UPDATE batches SET version = version + 1, updated_at = ? "
        f"WHERE seq IN (SELECT batch_seq FROM messages WHERE {condition})",
        (now, *params),
    )
