"""Usage and operator queries: messages by day and product, totals by state and status.

A message counts on the UTC day it was submitted upstream, or, if it never
was (rejected at intake, cancelled, failed before submit), on the day its
file was received. ``parts`` are the parts submitted (what the upstream
charges for); ``failed`` are messages sent that did not reach the phone
(005 after submit, 007, 009, 010); ``rejected`` are rows refused at intake.
"""

from __future__ import annotations

from .. import codes
from .db import Database
from .records import UsageCount
from .sql import whole_quotient

_DAY = 86400

# A message's usage time: when it was sent, else when its file came in.
_WHEN = "COALESCE(m.submitted_at, b.received_at)"
# group -> (by day, by product)
_GROUPS = {"day": (True, False), "product": (False, True), "day_product": (True, True)}
_FAILED = (codes.UNDELIVERABLE, codes.ROUTING_ERROR, codes.EXPIRED)


def _group_keys(group: str, when: str, dialect: str) -> str:
    """The ``day, product`` columns of a grouping; ``when`` is the SQL for a message's usage time."""
    by_day, by_product = _GROUPS[group]
    day = whole_quotient(when, _DAY, dialect) if by_day else "NULL"
    return f"{day} AS day, {'b.product' if by_product else 'NULL'} AS product"


def _filters(product: str | None, since: float | None, until: float | None, when: str) -> str:
    """The WHERE clause for :meth:`UsageStore.usage`; its parameters come from :func:`_filter_params`."""
    where = ["1 = 1"]
    if product is not None:
        where.append("b.product = ?")
    if until is not None:
        where += ["b.received_at < ?", f"{when} < ?"]
    if since is not None:
        where += ["(b.completed_at IS NULL OR b.completed_at >= ?)", f"{when} >= ?"]
    return " AND ".join(where)


def _filter_params(product: str | None, since: float | None, until: float | None) -> list[object]:
    params: list[object] = []
    if product is not None:
        params.append(product)
    if until is not None:
        params += [until, until]
    if since is not None:
        params += [since, since]
    return params


class UsageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def usage(
        self,
        group: str,
        product: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[UsageCount]:
        """Usage grouped by ``day``, ``product`` or ``day_product``, in [since, until) epoch seconds.

        Only batches that can hold such messages are read: received before
        ``until`` and not completed before ``since`` (a message is sent no
        later than its batch completes), so a month's report of a big
        ledger reads that month's batches, not the whole table.
        """
        failed = ", ".join(f"'{s}'" for s in _FAILED)
        sent_rows = (
            f"SELECT {_group_keys(group, _WHEN, self.db.dialect)}, COUNT(*) AS messages, "
            "COALESCE(SUM(CASE WHEN m.submitted_at IS NOT NULL THEN m.parts ELSE 0 END), 0) AS parts, "
            f"COALESCE(SUM(CASE WHEN m.status = '{codes.DELIVERED}' THEN 1 ELSE 0 END), 0) AS delivered, "
            f"COALESCE(SUM(CASE WHEN m.status IN ({failed}) OR (m.status = '{codes.ERROR}' AND m.attempt > 0) "
            "THEN 1 ELSE 0 END), 0) AS failed, "
            f"COALESCE(SUM(CASE WHEN m.status = '{codes.ERROR}' AND m.attempt = 0 THEN 1 ELSE 0 END), 0) AS rejected "
            "FROM batches b JOIN messages m ON m.batch_seq = b.seq "
            f"WHERE {_filters(product, since, until, _WHEN)} GROUP BY 1, 2"
        )
        # messages still in blocks were never sent: they count on their file's day
        waiting = (
            f"SELECT {_group_keys(group, 'b.received_at', self.db.dialect)}, SUM(k.size - k.taken), 0, 0, 0, 0 "
            "FROM batches b JOIN message_blocks k ON k.batch_seq = b.seq "
            f"WHERE k.taken < k.size AND {_filters(product, since, until, 'b.received_at')} GROUP BY 1, 2"
        )
        sql = (
            "SELECT day, product, SUM(messages), SUM(parts), SUM(delivered), SUM(failed), SUM(rejected) "
            f"FROM ({sent_rows} UNION ALL {waiting}) AS u GROUP BY 1, 2 ORDER BY 1, 2"
        )
        params = [*_filter_params(product, since, until), *_filter_params(product, since, until)]
        rows = self.db.connection().execute(sql, params).fetchall()
        return [
            UsageCount(
                day=None if r[0] is None else int(r[0]),
                product=r[1],
                messages=int(r[2]),
                parts=int(r[3]),
                delivered=int(r[4]),
                failed=int(r[5]),
                rejected=int(r[6]),
            )
            for r in rows
        ]

    def products_active_since(self, since: float) -> list[str]:
        """Products with a batch received or still open since ``since``."""
        rows = self.db.connection().execute(
            "SELECT DISTINCT product FROM batches WHERE received_at >= ? OR completed_at IS NULL OR completed_at >= ? "
            "ORDER BY product",
            (since, since),
        )
        return [r[0] for r in rows]

    # --- operator view ----------------------------------------------------
    def batch_state_totals(self) -> dict[tuple[str, str], int]:
        """(product, state) -> batches."""
        rows = self.db.connection().execute("SELECT product, state, COUNT(*) FROM batches GROUP BY product, state")
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def batch_source_totals(self) -> dict[tuple[str, str], int]:
        """(product, source) -> batches received that way (ftp, local, cli, ...)."""
        rows = self.db.connection().execute("SELECT product, source, COUNT(*) FROM batches GROUP BY product, source")
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def message_status_totals(self) -> dict[tuple[str, str], int]:
        """(product, status) -> messages. Reads the whole table: callers cache it."""
        conn = self.db.connection()
        totals = {
            (r[0], r[1]): int(r[2])
            for r in conn.execute("SELECT product, status, COUNT(*) FROM messages GROUP BY product, status")
        }
        for product, waiting in conn.execute(
            "SELECT product, SUM(size - taken) FROM message_blocks WHERE taken < size GROUP BY product"
        ):
            key = (product, codes.QUEUED)
            totals[key] = totals.get(key, 0) + int(waiting)
        return totals

    def queue_depth(self) -> dict[str, int]:
        """Messages waiting to be sent (queued, scheduled) and waiting for a receipt; index-only reads."""
        conn = self.db.connection()
        # Statuses written as literals, not bound: only then can SQLite match
        # the partial indexes (messages_queue, messages_awaiting_receipt) and
        # count from them instead of scanning every message ever sent.
        pending = dict(
            conn.execute(
                "SELECT status, COUNT(*) FROM messages WHERE status IN ('002', '011') GROUP BY status"
            ).fetchall()
        )
        in_blocks = conn.execute("SELECT COALESCE(SUM(size - taken), 0) FROM message_blocks WHERE taken < size").fetchone()[0]
        awaiting = conn.execute(
            "SELECT COUNT(*) FROM messages WHERE status = '003' AND receipt_timed_out = 0"
        ).fetchone()[0]
        return {
            "queued": int(pending.get(codes.QUEUED, 0)) + int(in_blocks),
            "scheduled": int(pending.get(codes.SCHEDULED, 0)),
            "awaiting_receipt": int(awaiting),
        }

    def batches_in_flight(self) -> dict[str, int]:
        """Batches not finished yet, by state."""
        rows = self.db.connection().execute(
            "SELECT state, COUNT(*) FROM batches WHERE state IN ('received', 'processing', 'dispatching') GROUP BY state"
        )
        return {r[0]: int(r[1]) for r in rows}
