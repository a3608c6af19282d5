"""What comes back from the upstream besides submit answers: MO messages, receipt queries, parked receipts.

* **MO messages** (``mo_messages``): stored by :meth:`InboundStore.store_mo`
  in the dispatcher's sink, before the SMSC's deliver_sm is answered. A
  gateway that dies between the commit and the answer gets the same MO again
  after the re-bind: MO storage is at-least-once (an opt-out applied twice is
  still one opt-out).
* **Receipt queries** (``receipt_queries``): messages at ``003`` whose receipt
  is overdue are handed out for query_sm by :meth:`InboundStore.due_queries`,
  each hand-out pushing its next try back (backoff), so a message is never
  asked about twice at once and an unanswerable one is asked less and less.
* **Upstream capabilities** (``upstream_capabilities``): an SMSC that refused
  query_sm is remembered, across restarts, and not asked again.
* **Parked receipts** (``parked_receipts``, written by the message store when
  a receipt overtakes its submit answer): re-tried by
  :meth:`InboundStore.retry_parked`; the ones that never match anything are
  dropped after a while and counted (``receipts_never_matched``).

A composed store: it shares the ledger's :class:`Database` and needs nothing
else of it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Sequence

from ..models import MoMessage, QueryOutcome, QueryRequest
from .answers import delete_settled_parked
from .batches import touch_batches_of_messages
from .db import Database
from .outbox import queue_callbacks_for_messages
from .sql import bump_counter, read_counter

#: counters (table ``counters``) kept by this store
NEVER_MATCHED = "receipts_never_matched"
QUERIES_ASKED = "receipt_queries_asked"
QUERIES_FINAL = "receipt_queries_final"
QUERIES_OPEN = "receipt_queries_open"
QUERY_SM = "query_sm"
REFUSED = "refused"
#: the longest wait between two queries about one message
_QUERY_BACKOFF_MAX = 3600.0


class InboundStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- MO messages ------------------------------------------------------
    def store_mo(self, messages: Sequence[MoMessage]) -> list[MoMessage]:
        """Store MO messages in one transaction; returns them with their ledger ids."""
        stored: list[MoMessage] = []
        with self.db.transaction() as tx:
            for m in messages:
                ref, total, seq = m.concat if m.concat else (None, None, None)
                cur = tx.execute(
                    "INSERT INTO mo_messages (account, source, destination, text, data_coding, raw, concat_ref, "
                    "concat_total, concat_seq, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (m.account, m.source, m.destination, m.text, m.data_coding, m.raw, ref, total, seq,
                     m.received_at.timestamp()),
                )
                stored.append(_with_id(m, int(cur.fetchone()[0])))
        return stored

    def mo_messages(self, after_id: int = 0, limit: int = 1000) -> list[MoMessage]:
        """Stored MO messages with an id above ``after_id``, oldest first (a consumer's catch-up)."""
        rows = self.db.connection().execute(
            "SELECT id, account, source, destination, text, data_coding, raw, concat_ref, concat_total, concat_seq, "
            "received_at FROM mo_messages WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()
        return [
            MoMessage(r["account"], r["source"], r["destination"], r["text"], r["data_coding"],
                      dt.datetime.fromtimestamp(r["received_at"], dt.UTC), bytes(r["raw"] or b""),
                      (r["concat_ref"], r["concat_total"], r["concat_seq"]) if r["concat_ref"] is not None else None,
                      r["id"])
            for r in rows
        ]

    # --- receipt queries --------------------------------------------------
    def due_queries(self, account: str, now: float, overdue_before: float, receipt_timeout: float,
                    backoff: float, limit: int) -> list[QueryRequest]:
        """Messages of ``account`` at 003 submitted before ``overdue_before`` and not asked about lately.

        Each one handed out is not handed out again before its next try
        (``backoff`` seconds, doubling per try up to an hour).
        """
        if self.query_refused(account):
            return []
        with self.db.transaction() as tx:
            rows = tx.execute(
                # literal status: the partial index messages_awaiting_receipt applies (receipt_due order)
                "SELECT m.id, m.upstream_id, m.sender, COALESCE(q.tries, 0) FROM messages m "
                "LEFT JOIN receipt_queries q ON q.message_id = m.id "
                "WHERE m.status = '003' AND m.receipt_timed_out = 0 AND m.receipt_due < ? AND m.account = ? "
                "AND m.upstream_id IS NOT NULL AND (q.next_at IS NULL OR q.next_at <= ?) "
                "ORDER BY m.receipt_due LIMIT ?",
                (overdue_before + receipt_timeout, account, now, limit),
            ).fetchall()
            if not rows:
                return []
            tx.executemany(
                "INSERT INTO receipt_queries (message_id, tries, next_at, updated_at) VALUES (?, 1, ?, ?) "
                "ON CONFLICT (message_id) DO UPDATE SET tries = receipt_queries.tries + 1, next_at = excluded.next_at, "
                "updated_at = excluded.updated_at",
                [(r[0], now + min(_QUERY_BACKOFF_MAX, backoff * 2 ** int(r[3])), now) for r in rows],
            )
            bump_counter(tx, QUERIES_ASKED, len(rows))
        return [QueryRequest(r[0], r[1], r[2]) for r in rows]

    def note_query_outcomes(self, outcomes: Sequence[QueryOutcome]) -> None:
        """Book-keeping of query answers (the final ones are applied as receipts by the message store)."""
        if not outcomes:
            return
        now = time.time()
        with self.db.transaction() as tx:
            tx.executemany(
                "UPDATE receipt_queries SET last_answer = ?, updated_at = ? WHERE message_id = ?",
                [(o.detail[:200], now, o.message_id) for o in outcomes],
            )
            final = sum(1 for o in outcomes if o.status is not None)
            if final:
                bump_counter(tx, QUERIES_FINAL, final)
            if len(outcomes) - final:
                bump_counter(tx, QUERIES_OPEN, len(outcomes) - final)
            for account in {o.account for o in outcomes if o.refused}:
                tx.execute(
                    "INSERT INTO upstream_capabilities (account, name, value, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (account, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    (account, QUERY_SM, REFUSED, now),
                )

    def query_refused(self, account: str) -> bool:
        row = self.db.connection().execute(
            "SELECT value FROM upstream_capabilities WHERE account = ? AND name = ?", (account, QUERY_SM)
        ).fetchone()
        return row is not None and row[0] == REFUSED

    def query_tally(self) -> dict[str, int]:
        """Counters of receipt queries: asked, final, open (unknown, not final or error answers)."""
        return {name: self._counter(key) for name, key in
                (("asked", QUERIES_ASKED), ("final", QUERIES_FINAL), ("open", QUERIES_OPEN))}

    # --- parked receipts --------------------------------------------------
    def retry_parked(self, now: float, expire_after: float) -> tuple[int, int]:
        """Apply parked receipts whose message is known by now; drop (and count) those too old to ever match.

        Returns (applied, given up).
        """
        with self.db.transaction() as tx:
            changed = [
                r[0]
                for r in tx.execute(
                    "UPDATE messages SET status = p.status, error_text = COALESCE(p.error_text, messages.error_text), "
                    "updated_at = ? FROM parked_receipts AS p "
                    "WHERE messages.account = p.account AND messages.upstream_id = p.upstream_id "
                    "AND messages.status = '003' RETURNING messages.id",
                    (now,),
                ).fetchall()
            ]
            if changed:
                queue_callbacks_for_messages(tx, changed, now)
                touch_batches_of_messages(tx, changed, now)
            delete_settled_parked(tx)  # matched now, or matching a message that is final already
            expired = tx.execute("DELETE FROM parked_receipts WHERE received_at < ?", (now - expire_after,)).rowcount
            if expired:
                bump_counter(tx, NEVER_MATCHED, expired)
        return len(changed), expired

    def unmatched_receipts(self) -> dict[str, int]:
        """Receipts that match no message: ``parked`` (waiting, re-tried) and ``never_matched`` (given up)."""
        (parked,) = self.db.connection().execute("SELECT COUNT(*) FROM parked_receipts").fetchone()
        return {"parked": int(parked), "never_matched": self._counter(NEVER_MATCHED)}

    def _counter(self, name: str) -> int:
        return read_counter(self.db.connection(), name)


def _with_id(m: MoMessage, mo_id: int) -> MoMessage:
    return dataclasses.replace(m, id=mo_id)
