"""Taking messages out of blocks: a block's next rows become ``messages`` rows (see blocks.py).

Leases take them for sending; a cancel or a refused batch drains the rest
with a final status. Both advance the block's ``taken`` cursor in the
caller's transaction, so a row is made exactly once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from itertools import chain

from .. import codes
from ..errors import LedgerError
from .blocks import BlockCache, BlockRows, unpack
from .db import POSTGRESQL, Connection, Row
from .sql import dialect_of

# Rows per multi-row INSERT when block messages become rows.
_VALUES_ROWS = 500
_INSERT = (
    "INSERT INTO messages (batch_seq, row_no, product, destination, text, sender, climsgid, encoding, "
    "parts, validity_minutes, status, error_text, updated_at, lease_owner, lease_until, attempt) "
)
# Where each value of a row comes from: the take's constants (bound once) or the block's columns.
_CONSTANTS = ("batch_seq", "product", "status", "error_text", "updated_at", "lease_owner", "lease_until", "attempt")
_ROW_COLUMNS = ("row_no", "destination", "text", "sender", "climsgid", "encoding", "parts", "validity_minutes")
_INSERT_ORDER = ("batch_seq", "row_no", "product", "destination", "text", "sender", "climsgid", "encoding",
                 "parts", "validity_minutes", "status", "error_text", "updated_at", "lease_owner", "lease_until",
                 "attempt")


@functools.lru_cache(maxsize=32)
def _insert_sql(size: int, null_constants: tuple[bool, ...], null_columns: tuple[bool, ...]) -> str:
    """The INSERT of ``size`` rows: constants bound once as ``?1``.., each row's own values after them.

    A value that is None (a constant, or a column in every row of the
    slice) is the literal NULL: binding None costs three times an int in
    Python 3.11's sqlite3 (ledger/sql.py, null_columns). Numbered marks let
    every row share the constants instead of binding them again per row.
    """
    marks: dict[str, str] = {}
    number = 0
    for name, null in zip(_CONSTANTS, null_constants):
        if not null:
            number += 1
        marks[name] = "NULL" if null else f"?{number}"
    rows = []
    for _ in range(size):
        for name, null in zip(_ROW_COLUMNS, null_columns):
            if not null:
                number += 1
            marks[name] = "NULL" if null else f"?{number}"
        rows.append("(" + ", ".join(marks[name] for name in _INSERT_ORDER) + ")")
    return _INSERT + "VALUES " + ", ".join(rows)


@dataclass(slots=True)
class Taken:
    """Messages just made rows from a block: ``ids[k]`` is the message at index ``start + k`` of ``rows``."""

    ids: list[int]
    start: int
    stop: int
    rows: BlockRows


class BlockQueue:
    """The message blocks as queues; every method works in the caller's transaction."""

    def __init__(self, cache: BlockCache | None = None) -> None:
        #: Decoded message blocks of this process (payloads never change).
        self.cache = cache if cache is not None else BlockCache()

    def rows(self, conn: Connection, block_id: int) -> BlockRows:
        rows = self.cache.get(block_id)
        if rows is None:
            (payload,) = conn.execute("SELECT payload FROM message_blocks WHERE id = ?", (block_id,)).fetchone()
            rows = unpack(payload)
            self.cache.put(block_id, rows)
        return rows

    def take(
        self,
        tx: Connection,
        block: Row,
        count: int,
        now: float,
        *,
        status: str = codes.QUEUED,
        error_text: str | None = None,
        lease: tuple[str, float] | None = None,
    ) -> Taken:
        """Make the block's next ``count`` messages rows: their ids, in block order.

        Leased rows start at attempt 1 with the lease set; others (cancelled)
        are written with their final status.
        """
        rows = self.rows(tx, block["id"])
        start = int(block["taken"])
        stop = min(start + count, int(block["size"]))
        owner, until = lease if lease else (None, None)
        attempt = 1 if lease else 0
        if dialect_of(tx) == POSTGRESQL:
            ids = self._insert_pg(tx, block, rows, start, stop, status, error_text, now, owner, until, attempt)
        else:
            ids = self._insert_sqlite(tx, block, rows, start, stop, status, error_text, now, owner, until, attempt)
        taken_parts = sum(rows.parts[start:stop])
        moved = tx.execute(
            "UPDATE message_blocks SET taken = ?, parts_left = parts_left - ? WHERE id = ? AND taken = ?",
            (stop, taken_parts, block["id"], start),
        ).rowcount
        if moved != 1:  # another writer moved the cursor since it was read: undo the whole transaction
            raise LedgerError(f"message block {block['id']} changed while its messages were taken")
        if stop >= len(rows):
            self.cache.forget(block["id"])
        return Taken(ids, start, stop, rows)

    def _insert_sqlite(self, tx: Connection, block: Row, rows: BlockRows, start: int, stop: int, status: str,
                       error_text: str | None, now: float, owner: str | None, until: float | None,
                       attempt: int) -> list[int]:
        ids: list[int] = []
        constants = (int(block["batch_seq"]), block["product"], status, error_text, now, owner, until, attempt)
        null_constants = tuple(value is None for value in constants)
        bound = [value for value in constants if value is not None]
        for first in range(start, stop, _VALUES_ROWS):
            last_index = min(first + _VALUES_ROWS, stop)
            columns = [getattr(rows, name)[first:last_index] for name in _ROW_COLUMNS]
            # list.count walks a column in C: the generator over every None of a column with
            # none set (sender, climsgid, validity) took 0.2 s of a million-row lease
            nulls = tuple(column[0] is None and column.count(None) == len(column) for column in columns)
            params = list(bound)
            # one pass over the columns' slices (zip), not eight index look-ups a message
            params += chain.from_iterable(zip(*(column for column, null in zip(columns, nulls) if not null)))
            # One multi-row INSERT per slice: the new ids are the last one and the
            # ones before it, in VALUES order: SQLite gives a new row the largest
            # rowid + 1 (we hold the write lock). Not RETURNING: that steps once
            # per row, and every step gives up the GIL and waits to get it back.
            size = last_index - first
            last = tx.execute(_insert_sql(size, null_constants, nulls), params).lastrowid  # type: ignore[attr-defined]
            assert last is not None
            first_id = last - size + 1
            self._check_ids(tx, first_id, last, int(block["batch_seq"]), rows.row_no[first], rows.row_no[last_index - 1])
            ids.extend(range(first_id, last + 1))
        return ids

    @staticmethod
    def _insert_pg(tx: Connection, block: Row, rows: BlockRows, start: int, stop: int, status: str,
                   error_text: str | None, now: float, owner: str | None, until: float | None,
                   attempt: int) -> list[int]:
        """PostgreSQL: the rows ``start..stop`` in one INSERT from arrays, their ids as the server gives them.

        One array per column (``unnest``), so the statement's text is the same
        for any number of rows: psycopg parses it once and the server plans it
        once (a VALUES list of 500 rows was 7,000 placeholders, parsed on every
        lease). Several nodes insert at once: the ids come back by RETURNING.
        """
        found = tx.execute(
            _INSERT + "SELECT CAST(? AS bigint), r, CAST(? AS text), d, t, s, c, e, p, v, CAST(? AS text), "
            "CAST(? AS text), CAST(? AS double precision), CAST(? AS text), CAST(? AS double precision), "
            "CAST(? AS bigint) FROM unnest("
            "CAST(? AS bigint[]), CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]), "
            "CAST(? AS text[]), CAST(? AS bigint[]), CAST(? AS bigint[])) AS u(r, d, t, s, c, e, p, v) "
            "RETURNING id, row_no",
            (int(block["batch_seq"]), block["product"], status, error_text, now, owner, until, attempt,
             rows.row_no[start:stop], rows.destination[start:stop], rows.text[start:stop], rows.sender[start:stop],
             rows.climsgid[start:stop], rows.encoding[start:stop], rows.parts[start:stop],
             rows.validity_minutes[start:stop]),
        ).fetchall()
        ids = {r[1]: r[0] for r in found}
        return [int(ids[row_no]) for row_no in rows.row_no[start:stop]]

    @staticmethod
    def _check_ids(tx: Connection, first_id: int, last_id: int, batch_seq: int, first_row: int, last_row: int) -> None:
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

    def drain(self, tx: Connection, batch_seq: int, status: str, error_text: str | None, now: float) -> int:
        """Write every untaken message of a batch's blocks as a row with ``status`` (a batch cancelled or refused)."""
        blocks = tx.execute(
            "SELECT id, batch_seq, product, taken, size FROM message_blocks WHERE batch_seq = ? AND taken < size",
            (batch_seq,),
        ).fetchall()
        return sum(
            len(self.take(tx, block, block["size"], now, status=status, error_text=error_text).ids)
            for block in blocks
        )

