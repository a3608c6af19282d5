"""The callback outbox (DESIGN.md §8): status changes a product's callback URL must hear of.

    status change (same transaction)  -->  pending (next_at = now)
    pending  -- claim (lease_owner, lease_until, attempt + 1) -->  being posted
             -- 2xx, same attempt -->  delivered
             -- failure, same attempt -->  pending again at next_at (tries + 1),
                                           or failed once the retries are used up
             -- released (sender stopping, endpoint paused) -->  pending, untouched
             -- lease expired (crash) -->  claimable again

Rows are inserted by the message state machine inside the transaction that
changes the status (``queue_callbacks_*`` below), so a status is never
committed without its callback or the other way round. Every outcome is a
conditional update on (id, attempt, state), as for messages: a late answer
for a lease that expired changes nothing.

Which changes are queued: the batch's ``callback_level`` if the file set one,
else the product's: bit 1 (levels 1 and 3) intermediate ``003``/``011``,
bit 2 (levels 2 and 3) final statuses.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from .. import codes
from .db import Connection, Database, Row
from .records import CallbackBacklog, CallbackJob, CallbackOutcome
from .sql import bump_counter, member_of

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

INTERMEDIATE = (codes.SUBMITTED, codes.SCHEDULED)
FINAL = tuple(sorted(codes.FINAL_STATUSES))

# The level test, portable to PostgreSQL (integer & is standard there too).
_LEVEL_FILTER = (
    "p.callback_url IS NOT NULL AND p.callback_url <> '' AND ("
    f"((COALESCE(b.callback_level, p.callback_level) & 1) <> 0 AND m.status IN ({', '.join(repr(s) for s in INTERMEDIATE)})) OR "
    f"((COALESCE(b.callback_level, p.callback_level) & 2) <> 0 AND m.status IN ({', '.join(repr(s) for s in FINAL)})))"
)
_INSERT_SELECT = (
    "INSERT INTO callbacks (message_id, product, status, event_at, next_at) "
    "SELECT m.id, m.product, m.status, ?, ? FROM messages m "
    "JOIN batches b ON b.seq = m.batch_seq JOIN products p ON p.name = m.product "
    "WHERE {where} AND " + _LEVEL_FILTER + " "
    "ON CONFLICT (message_id, status) DO NOTHING"
)


def _any_callback_url(tx: Connection) -> bool:
    """Cheap guard: most gateways have few products with callbacks, many have none."""
    return tx.execute("SELECT 1 FROM products WHERE callback_url IS NOT NULL AND callback_url <> '' LIMIT 1").fetchone() is not None


def queue_callbacks_for_messages(tx: Connection, message_ids: Iterable[int], now: float) -> None:
    """Queue the changes just made (``updated_at = now``) to these messages, in the caller's transaction."""
    ids = list(message_ids)
    if not ids or not _any_callback_url(tx):
        return
    for where, params in member_of(tx, "m.id", ids, "bigint"):
        tx.execute(_INSERT_SELECT.format(where=f"{where} AND m.updated_at = ?"), (now, now, *params, now))


def queue_callbacks_for_upstream(tx: Connection, account: str, upstream_ids: Sequence[str], now: float) -> None:
    """As :func:`queue_callbacks_for_messages`, for messages known by their upstream id."""
    if not upstream_ids or not _any_callback_url(tx):
        return
    for where, params in member_of(tx, "m.upstream_id", upstream_ids, "text"):
        tx.execute(
            _INSERT_SELECT.format(where=f"m.account = ? AND {where} AND m.updated_at = ?"),
            (now, now, account, *params, now),
        )


def upstream_range(alias: str = "") -> str:
    """SQL: the messages of an account (``?``) whose upstream ids run from one id (``?``) to another
    (``?``) and are as long (``?``): a models.ReceiptRun's; ``alias`` is the messages table's ("m.")."""
    return (f"{alias}account = ? AND {alias}upstream_id BETWEEN ? AND ? "
            f"AND length({alias}upstream_id) = ?")


def queue_callbacks_for_upstream_range(tx: Connection, account: str, first: str, last: str, now: float) -> None:
    """As :func:`queue_callbacks_for_upstream`, for the account's upstream ids from ``first`` to ``last`` of
    their length (a models.ReceiptRun's)."""
    if not _any_callback_url(tx):
        return
    tx.execute(
        _INSERT_SELECT.format(where=f"{upstream_range('m.')} AND m.updated_at = ?"),
        (now, now, account, first, last, len(first), now),
    )


def queue_callbacks_for_batch(
    tx: Connection, batch_seq: int, now: float, rows: tuple[int, int] | None = None
) -> None:
    """Queue the changes just made to messages of one batch (optionally rows ``first..last``)."""
    if not _any_callback_url(tx):
        return
    where = "m.batch_seq = ? AND m.updated_at = ?"
    params: tuple[object, ...] = (batch_seq, now)
    if rows is not None:
        where += " AND m.row_no BETWEEN ? AND ?"
        params += rows
    tx.execute(_INSERT_SELECT.format(where=where), (now, now, *params))


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def claim_callbacks(
        self,
        owner: str,
        limit: int,
        now: float,
        lease_seconds: float,
        exclude: Iterable[str] = (),
        only: str | None = None,
    ) -> list[CallbackJob]:
        """Lease up to ``limit`` due callbacks, oldest first.

        ``exclude`` skips products (a paused endpoint); ``only`` takes one
        product's. A message's callbacks go out in order: one waits while
        an earlier one of the same message is still pending.
        """
        if limit <= 0:
            return []
        exclude = list(exclude)
        where = "c.state = 'pending' AND c.next_at <= ? AND (c.lease_until IS NULL OR c.lease_until < ?)"
        params: list[object] = [now, now]
        if exclude:
            where += f" AND c.product NOT IN ({', '.join('?' for _ in exclude)})"
            params += exclude
        if only is not None:
            where += " AND c.product = ?"
            params.append(only)
        where += (
            " AND NOT EXISTS (SELECT 1 FROM callbacks e WHERE e.message_id = c.message_id "
            "AND e.state = 'pending' AND e.id < c.id)"
        )
        with self.db.transaction() as tx:
            claimed = tx.execute(
                "UPDATE callbacks SET lease_owner = ?, lease_until = ?, attempt = attempt + 1 "
                f"WHERE id IN (SELECT c.id FROM callbacks c WHERE {where} ORDER BY c.next_at, c.id LIMIT ?) "
                # said again on the row itself: under PostgreSQL's read committed, a node that waited
                # for another's claim re-checks these on the row as that one left it (never both claim it)
                "AND state = 'pending' AND (lease_until IS NULL OR lease_until < ?) "
                "RETURNING id",
                (owner, now + lease_seconds, *params, limit, now),
            ).fetchall()
            if not claimed:
                return []
            ids = sorted(r[0] for r in claimed)
            rows: list[Row] = []
            for where, members in member_of(tx, "c.id", ids, "bigint"):
                rows += tx.execute(
                    "SELECT c.id, c.attempt, c.tries, c.product, c.status, c.event_at, c.lease_until, "
                    "m.upstream_id, m.climsgid, m.destination, m.sender, m.parts, "
                    "p.callback_url, p.callback_user, p.callback_password "
                    "FROM callbacks c JOIN messages m ON m.id = c.message_id LEFT JOIN products p ON p.name = c.product "
                    f"WHERE {where} ORDER BY c.id",
                    members,
                ).fetchall()
        return [
            CallbackJob(
                id=r["id"],
                attempt=r["attempt"],
                tries=r["tries"],
                product=r["product"],
                url=r["callback_url"] or None,
                user=r["callback_user"],
                password=r["callback_password"],
                lease_until=r["lease_until"],
                fields={
                    "api_id": r["product"],
                    "apiMsgId": r["upstream_id"] or "",
                    "cliMsgId": r["climsgid"] or "",
                    "to": r["destination"] or "",
                    "timestamp": str(int(r["event_at"])),
                    "from": r["sender"] or "",
                    "status": r["status"],
                    "charge": str(r["parts"] or 0),
                },
            )
            for r in rows
        ]

    def record_callback_outcomes(self, outcomes: Sequence[CallbackOutcome], now: float) -> None:
        """Apply outcomes in one transaction; those of an expired lease change nothing."""
        if not outcomes:
            return
        by_kind: dict[str, list[CallbackOutcome]] = {}
        for outcome in outcomes:
            by_kind.setdefault(outcome.kind, []).append(outcome)
        guard = "WHERE id = ? AND attempt = ? AND state = 'pending'"
        with self.db.transaction() as tx:
            delivered = given_up = 0
            if by_kind.get("delivered"):
                cur = tx.executemany(
                    "UPDATE callbacks SET state = 'delivered', tries = tries + 1, done_at = ?, last_error = NULL, "
                    f"lease_owner = NULL, lease_until = NULL {guard}",
                    [(now, o.id, o.attempt) for o in by_kind["delivered"]],
                )
                delivered = cur.rowcount
            if by_kind.get("retry"):
                tx.executemany(
                    "UPDATE callbacks SET tries = tries + 1, next_at = ?, last_error = ?, "
                    f"lease_owner = NULL, lease_until = NULL {guard}",
                    [(o.next_at, o.error, o.id, o.attempt) for o in by_kind["retry"]],
                )
            if by_kind.get("failed"):
                cur = tx.executemany(
                    "UPDATE callbacks SET state = 'failed', tries = tries + 1, done_at = ?, last_error = ?, "
                    f"lease_owner = NULL, lease_until = NULL {guard}",
                    [(now, o.error, o.id, o.attempt) for o in by_kind["failed"]],
                )
                given_up = cur.rowcount
            if by_kind.get("released"):
                tx.executemany(
                    f"UPDATE callbacks SET lease_owner = NULL, lease_until = NULL {guard}",
                    [(o.id, o.attempt) for o in by_kind["released"]],
                )
            for name, value in (("callbacks_delivered", delivered), ("callbacks_given_up", given_up)):
                if value > 0:
                    bump_counter(tx, name, value)

    def expire_callback_leases_of(self, owner: str) -> int:
        """At start-up: this node's leases died with its previous process; make them claimable now."""
        with self.db.transaction() as tx:
            cur = tx.execute(
                "UPDATE callbacks SET lease_until = 0 WHERE lease_owner = ? AND state = 'pending' AND lease_until IS NOT NULL",
                (owner,),
            )
        return cur.rowcount

    def purge_callbacks(self, done_before: float) -> int:
        """Forget callbacks delivered or given up before ``done_before`` (pending ones always stay)."""
        with self.db.transaction() as tx:
            cur = tx.execute("DELETE FROM callbacks WHERE state <> 'pending' AND done_at < ?", (done_before,))
        return cur.rowcount

    def callbacks_configured(self) -> bool:
        """Whether any product has a callback URL (else no status change is ever queued here)."""
        return _any_callback_url(self.db.connection())

    def next_callback_due(self) -> float | None:
        """When the earliest pending callback is due (ignoring leases), or None."""
        row = self.db.connection().execute("SELECT MIN(next_at) FROM callbacks WHERE state = 'pending'").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def callback_backlog(self, now: float) -> CallbackBacklog:
        conn = self.db.connection()
        pending, due = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN next_at <= ? THEN 1 ELSE 0 END), 0) "
            "FROM callbacks WHERE state = 'pending'",
            (now,),
        ).fetchone()
        totals = dict(
            conn.execute(
                "SELECT name, value FROM counters WHERE name IN ('callbacks_delivered', 'callbacks_given_up')"
            ).fetchall()
        )
        return CallbackBacklog(
            int(pending), int(due), int(totals.get("callbacks_delivered", 0)), int(totals.get("callbacks_given_up", 0))
        )

    def callbacks_of_message(self, message_id: int) -> list[dict[str, Any]]:
        """Every outbox row of one message, as column -> value (for ``batch show`` style inspection and tests)."""
        rows = (
            self.db.connection()
            .execute(
                "SELECT id, status, state, tries, attempt, next_at, last_error, event_at FROM callbacks "
                "WHERE message_id = ? ORDER BY id",
                (message_id,),
            )
            .fetchall()
        )
        return [{k: r[k] for k in r.keys()} for r in rows]

    def callback_states(self) -> dict[str, int]:
        """How many outbox rows are in each state."""
        rows = self.db.connection().execute("SELECT state, COUNT(*) FROM callbacks GROUP BY state").fetchall()
        return {r[0]: int(r[1]) for r in rows}
