"""How many messages of a batch are in each status, counting again only the rows that can still change.

A count reads every row of the batch: 0.4-0.5 s for a million, and the
reporter counts a batch it is sending at least every couple of seconds
(summary.json), in the process that also writes every answer and receipt.
But a batch is sent in file order, so its first rows settle first: a row
that is final (not queued, scheduled or awaiting its receipt, and not
cancelled while in flight: a 006 holding its lease still takes its answer)
never changes again. Every writer of messages changes only open rows
(answers.py, leases.py, messages.py). So the tallies of the batch's first
rows, up to the first one that may still change, are counted once and
kept, in whole chunks of row numbers; each later count reads only the rows
after them. What is kept is true for any node and any later moment, so it
needs no invalidation.
"""

from __future__ import annotations

import collections
import threading
import time

from .. import codes
from .db import Connection, Database
from .messages import last_row_stored
from .records import StatusTally

#: SQL: a message row that may still change (see above); a table-less column list, so any query's
#: ``messages`` table (report chunk stamps use it too).
OPEN_ROW = "(status IN ('002', '003', '011') OR (status = '006' AND lease_until IS NOT NULL))"

#: Row numbers per chunk: the unit in which settled rows are kept.
COUNT_CHUNK_ROWS = 5_000

#: Batches whose settled tallies are kept (the most recently counted).
_KEPT_BATCHES = 1_000

# (shown status, ever sent) -> messages, parts, receipt timeouts, possible duplicates
_Sums = dict[tuple[str, bool], tuple[int, int, int, int]]
# ... the same by chunk: (chunk, (shown status, ever sent)) -> sums
_ChunkSums = dict[tuple[int, tuple[str, bool]], tuple[int, int, int, int]]


def _add(into: _Sums, key: tuple[str, bool], sums: tuple[int, int, int, int]) -> None:
    known = into.get(key, (0, 0, 0, 0))
    into[key] = (known[0] + sums[0], known[1] + sums[1], known[2] + sums[2], known[3] + sums[3])


class StatusCounter:
    def __init__(self, db: Database) -> None:
        self.db = db
        # batch seq -> (rows up to here are settled, their sums); a whole chunk multiple
        self._settled: collections.OrderedDict[int, tuple[int, _Sums]] = collections.OrderedDict()
        self._lock = threading.Lock()  # the reporter and the CLI's progress line count on different threads

    def status_counts(self, batch_seq: int) -> list[StatusTally]:
        """How many messages of a batch are in each status (split by whether they were ever sent)."""
        with self._lock:
            settled_to, settled = self._settled.get(batch_seq, (0, {}))
        # one snapshot: a lease moving messages from a block into rows must not count them twice
        with self.db.snapshot() as conn:
            later, first_open = self._count_rows_after(conn, batch_seq, settled_to)
            waiting, waiting_parts, first_waiting = conn.execute(
                "SELECT COALESCE(SUM(size - taken), 0), COALESCE(SUM(parts_left), 0), MIN(first_row) "
                "FROM message_blocks WHERE batch_seq = ? AND taken < size",
                (batch_seq,),
            ).fetchone()
            stored = last_row_stored(conn, batch_seq)  # every row up to it is stored: intake writes in order
        sums: _Sums = dict(settled)
        for (chunk, key), chunk_sums in later.items():
            _add(sums, key, chunk_sums)
        if waiting:
            _add(sums, (codes.QUEUED, False), (int(waiting), int(waiting_parts), 0, 0))
        # rows before the first that may change (open, still in a block, or not stored yet) are settled
        limit = min(row - 1 for row in (stored + 1, first_open, first_waiting) if row is not None)
        new_settled_to = limit - limit % COUNT_CHUNK_ROWS
        if new_settled_to > settled_to:
            grown = dict(settled)
            for (chunk, key), chunk_sums in later.items():
                if (chunk + 1) * COUNT_CHUNK_ROWS <= new_settled_to:
                    _add(grown, key, chunk_sums)
            self._keep(batch_seq, new_settled_to, grown)
        return [StatusTally(status, sent, *s) for (status, sent), s in sums.items()]

    @staticmethod
    def _count_rows_after(conn: Connection, batch_seq: int, after: int) -> tuple[_ChunkSums, int | None]:
        """Sums of the batch's rows after row ``after``, by chunk and (shown status, sent); and the first open row."""
        # a message cancelled while in flight is pending until its answer comes or its lease ends
        rows = conn.execute(
            f"SELECT (row_no - 1) / {COUNT_CHUNK_ROWS} AS chunk, "
            "CASE WHEN status = '006' AND lease_until >= ? THEN '002' ELSE status END AS shown, attempt > 0, "
            "COUNT(*), COALESCE(SUM(parts), 0), COALESCE(SUM(receipt_timed_out), 0), "
            f"COALESCE(SUM(possible_duplicate), 0), MIN(CASE WHEN {OPEN_ROW} THEN row_no END) "
            "FROM messages WHERE batch_seq = ? AND row_no > ? GROUP BY chunk, shown, attempt > 0",
            (time.time(), batch_seq, after),
        ).fetchall()
        sums = {(int(r[0]), (r[1], bool(r[2]))): (int(r[3]), int(r[4]), int(r[5]), int(r[6])) for r in rows}
        opens = [int(r[7]) for r in rows if r[7] is not None]
        return sums, min(opens) if opens else None

    def _keep(self, batch_seq: int, settled_to: int, sums: _Sums) -> None:
        with self._lock:
            known = self._settled.get(batch_seq)
            if known is None or known[0] < settled_to:  # another thread may have kept more meanwhile
                self._settled[batch_seq] = (settled_to, sums)
            self._settled.move_to_end(batch_seq)
            while len(self._settled) > _KEPT_BATCHES:
                self._settled.popitem(last=False)
