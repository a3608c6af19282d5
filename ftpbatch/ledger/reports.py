"""What a batch's report files show: status tallies and report rows, blocks included."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Mapping

from ..lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
else:  # imported on first use: `product list` and `status` never need them
    pd, pa, pc = lazy_module("pandas"), lazy_module("pyarrow"), lazy_module("pyarrow.compute")

from .. import codes
from .blockqueue import BlockQueue
from .db import Connection, Database
from .messages import last_row_stored
from .records import StatusTally
from .tallies import OPEN_ROW, StatusCounter
from .sql import read_frame

_REPORT_COLUMNS = (
    "row_no, destination, climsgid, account, upstream_id, parts, status, error_code, error_text, "
    "submitted_at, updated_at, possible_duplicate"
)


# What report.csv shows, as columns (report_tables): the same as _REPORT_COLUMNS less the account.
_TABLE_COLUMNS = (
    ("row_no", "int64"), ("destination", "string"), ("climsgid", "string"), ("upstream_id", "string"),
    ("parts", "int64"), ("status", "string"), ("error_code", "string"), ("error_text", "string"),
    ("submitted_at", "float64"), ("updated_at", "float64"), ("possible_duplicate", "int64"),
)


# The stamp prefix of a report chunk none of whose rows can change any more (report_chunks).
_SETTLED = "settled"


def _table_schema() -> pa.Schema:
    return pa.schema([(name, getattr(pa, kind)()) for name, kind in _TABLE_COLUMNS])


class ReportStore:
    def __init__(self, db: Database, blocks: BlockQueue) -> None:
        self.db = db
        self.blocks = blocks
        self.counter = StatusCounter(db)

    def status_counts(self, batch_seq: int) -> list[StatusTally]:
        """How many messages of a batch are in each status (split by whether they were ever sent)."""
        return self.counter.status_counts(batch_seq)

    def may_be_finished(self, batch_seq: int, product: str) -> bool:
        """False when some message of the batch certainly still waits for its outcome.

        Queued or scheduled, awaiting its receipt, or in a block not taken
        yet: asked of the small partial indexes (messages_queue by product,
        messages_awaiting_receipt, the batch's open blocks), so the answer
        costs the same for ten rows or a million, where status_counts reads
        every row of the batch. True is no promise (a cancelled message may
        still hold its lease, the file may not be read whole): the counts
        decide. ``+batch_seq`` keeps SQLite off messages_by_batch_row, which
        would walk the whole batch to find none.
        """
        (open_,) = self.db.connection().execute(
            "SELECT EXISTS (SELECT 1 FROM message_blocks WHERE batch_seq = ? AND taken < size) "
            "OR EXISTS (SELECT 1 FROM messages WHERE product = ? AND +batch_seq = ? AND status IN ('002', '011')) "
            "OR EXISTS (SELECT 1 FROM messages WHERE +batch_seq = ? AND status = '003' AND receipt_timed_out = 0)",
            (batch_seq, product, batch_seq, batch_seq),
        ).fetchone()
        return not open_

    def report_frames(self, batch_seq: int, chunk_rows: int = 200_000) -> Iterator[pd.DataFrame]:
        """The rows of a batch's report.csv, in file order, in bounded chunks of row numbers."""
        last_row = last_row_stored(self.db.connection(), batch_seq)
        low = 0
        while low < last_row:
            high = low + chunk_rows
            with self.db.snapshot() as conn:  # rows and untaken block messages as of one moment
                frame = read_frame(
                    conn,
                    f"SELECT {_REPORT_COLUMNS} FROM messages "
                    "WHERE batch_seq = ? AND row_no > ? AND row_no <= ? ORDER BY row_no",
                    (batch_seq, low, high),
                )
                waiting = self._waiting_rows(conn, batch_seq, low, high)
                notes = conn.execute(
                    "SELECT row_no, note FROM message_notes WHERE batch_seq = ? AND row_no > ? AND row_no <= ?",
                    (batch_seq, low, high),
                ).fetchall()
            if waiting is not None:
                frame = pd.concat([frame, waiting], ignore_index=True) if len(frame) else waiting
                frame = frame.sort_values("row_no", kind="stable", ignore_index=True)
            # the few rows with a note (a number read as national), by row
            by_row = {int(r[0]): r[1] for r in notes}
            frame["note"] = frame["row_no"].map(by_row) if by_row else None
            if len(frame):
                yield frame
            low = high

    def report_tables(self, batch_seq: int, chunk_rows: int = 200_000) -> Iterator[pa.Table]:
        """As :meth:`report_frames`, as Arrow tables (no ``account``): what the report writer reads.

        The rows are read as tuples (all a database driver gives) and turned
        into one Arrow array per column at once, never into pandas' per-cell
        objects: a million-row report read in a third of the time.
        """
        for _, _, table in self.report_chunks(batch_seq, {}, chunk_rows):
            if table is not None and table.num_rows:
                yield table

    def report_chunks(self, batch_seq: int, known: Mapping[int, str],
                      chunk_rows: int = 100_000) -> Iterator[tuple[int, str, pa.Table | None]]:
        """The report rows in chunks of row numbers: (first row - 1, stamp, table) each, in file order.

        The stamp changes whenever anything a report shows of the chunk's rows
        changes (every status change sets ``updated_at``; a lease flags
        possible duplicates; a lease takes rows out of a block). A chunk whose
        stamp is ``known[low]`` comes back without its table (None): the
        caller kept what it wrote last time. A batch sent in file order
        finishes its early chunks first, so the last rewrite of a million
        rows reads and formats only the chunks that still moved.
        """
        schema = _table_schema()
        last_row = last_row_stored(self.db.connection(), batch_seq)
        settled = f"{_SETTLED}/{chunk_rows}:"
        low = 0
        while low < last_row:
            high = low + chunk_rows
            if known.get(low, "").startswith(settled):
                # Every row of the chunk was stored and final when it was kept: nothing it
                # shows can change any more, so not even its stamp is read again (a stamp
                # reads every row of the chunk: for a million rows, the cost of a count
                # on every rewrite, and the last rewrite's most part).
                yield low, known[low], None
                low = high
                continue
            with self.db.snapshot() as conn:  # rows and untaken block messages as of one moment
                stamp = self._chunk_stamp(conn, batch_seq, low, high, whole=high < last_row)
                if stamp.startswith(_SETTLED):
                    stamp = f"{settled}{stamp.partition(':')[2]}"
                table = None if known.get(low) == stamp else self._chunk_table(conn, batch_seq, low, high, schema)
            yield low, stamp, table
            low = high

    @staticmethod
    def _chunk_stamp(conn: Connection, batch_seq: int, low: int, high: int, *, whole: bool = False) -> str:
        """What the chunk's rows show, summed up; prefixed ``settled:`` when none of it can change again.

        Settled: ``whole`` (a later row is stored, so the file's rows up to
        ``high`` all are), no message of it still in a block, and every one
        final: not queued, scheduled or awaiting its receipt, and not
        cancelled while in flight (a 006 holding its lease takes its answer).
        Every writer of messages changes only such open rows (answers.py,
        leases.py, messages.py), and notes are written with their rows.
        """
        # Every change of a row a report shows sets its updated_at (to the microsecond,
        # never twice the same across two transactions), but a float sum of a hundred
        # thousand epoch times has no microseconds left: each one is summed as whole
        # microseconds modulo a prime, exactly. The status codes' sum and the
        # possible-duplicate flags (a lease sets those without updated_at) add to it.
        rows = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(CAST(updated_at * 1000000 AS BIGINT) % 1000000007), 0), "
            "COALESCE(SUM(CAST(status AS BIGINT)), 0), COALESCE(SUM(possible_duplicate), 0), "
            f"COALESCE(SUM(CASE WHEN {OPEN_ROW} THEN 1 ELSE 0 END), 0) FROM messages "
            "WHERE batch_seq = ? AND row_no > ? AND row_no <= ?",
            (batch_seq, low, high),
        ).fetchone()
        blocks = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(taken), 0), COALESCE(SUM(size - taken), 0) FROM message_blocks "
            "WHERE batch_seq = ? AND first_row <= ? AND last_row > ?",
            (batch_seq, high, low),
        ).fetchone()
        (notes,) = conn.execute(
            "SELECT COUNT(*) FROM message_notes WHERE batch_seq = ? AND row_no > ? AND row_no <= ?",
            (batch_seq, low, high),
        ).fetchone()
        stamp = f"{rows[0]}:{rows[1]}:{rows[2]}:{rows[3]}:{blocks[0]}:{blocks[1]}:{notes}"
        settled = whole and rows[4] == 0 and blocks[2] == 0
        return f"{_SETTLED}:{stamp}" if settled else stamp

    def _chunk_table(self, conn: Connection, batch_seq: int, low: int, high: int, schema: pa.Schema) -> pa.Table:
        names = [name for name, _ in _TABLE_COLUMNS]
        rows = conn.execute(
            f"SELECT {', '.join(names)} FROM messages "
            "WHERE batch_seq = ? AND row_no > ? AND row_no <= ? ORDER BY row_no",
            (batch_seq, low, high),
        ).fetchall()
        waiting = self._waiting_table(conn, batch_seq, low, high, schema)
        notes = conn.execute(
            "SELECT row_no, note FROM message_notes WHERE batch_seq = ? AND row_no > ? AND row_no <= ?",
            (batch_seq, low, high),
        ).fetchall()
        columns = list(zip(*rows)) if rows else [()] * len(names)
        table = pa.Table.from_arrays([pa.array(c, type=schema.field(i).type) for i, c in enumerate(columns)], schema=schema)
        del rows, columns
        if waiting is not None:
            table = pa.concat_tables([table, waiting]) if table.num_rows else waiting
            table = table.take(pc.sort_indices(table, [("row_no", "ascending")]))
        # the few rows with a note (a number read as national), by row
        note = pa.nulls(table.num_rows, pa.string())
        if notes:
            which = pc.index_in(table.column("row_no"), value_set=pa.array([int(r[0]) for r in notes], type=pa.int64()))
            note = pc.take(pa.array([r[1] for r in notes], type=pa.string()), which)
        return table.append_column("note", note)

    def _waiting_table(self, conn: Connection, batch_seq: int, low: int, high: int, schema: pa.Schema) -> pa.Table | None:
        """As :meth:`_waiting_rows`, as an Arrow table of the report_tables columns."""
        pieces = []
        for block in conn.execute(
            "SELECT id, taken, created_at FROM message_blocks "
            "WHERE batch_seq = ? AND taken < size AND first_row <= ? AND last_row > ?",
            (batch_seq, high, low),
        ).fetchall():
            rows = self.blocks.rows(conn, block["id"])
            taken = int(block["taken"])
            row_no = pa.array(rows.row_no[taken:], type=pa.int64())
            keep = pc.and_(pc.greater(row_no, low), pc.less_equal(row_no, high))
            n = int(pc.sum(keep).as_py() or 0)
            if not n:
                continue
            none = pa.nulls(n, pa.string())
            pieces.append(pa.Table.from_arrays([
                row_no.filter(keep),
                pa.array(rows.destination[taken:], type=pa.string()).filter(keep),
                pa.array(rows.climsgid[taken:], type=pa.string()).filter(keep),
                none,
                pa.array(rows.parts[taken:], type=pa.int64()).filter(keep),
                pa.array([codes.QUEUED] * n, type=pa.string()),
                none, none,
                pa.nulls(n, pa.float64()),
                pa.array([float(block["created_at"])] * n, type=pa.float64()),
                pa.array([0] * n, type=pa.int64()),
            ], schema=schema))
        return pa.concat_tables(pieces) if pieces else None

    def _waiting_rows(self, conn: Connection, batch_seq: int, low: int, high: int) -> pd.DataFrame | None:
        """Report rows for block messages in (low, high] not taken yet: queued, never sent."""
        pieces = []
        for block in conn.execute(
            "SELECT id, taken, created_at FROM message_blocks "
            "WHERE batch_seq = ? AND taken < size AND first_row <= ? AND last_row > ?",
            (batch_seq, high, low),
        ).fetchall():
            rows = self.blocks.rows(conn, block["id"])
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

