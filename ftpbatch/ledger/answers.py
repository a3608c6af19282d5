"""Submit answers and delivery receipts applied to messages (DESIGN.md §12).

Every transition is a conditional UPDATE on (status, attempt), so a late or
repeated answer changes nothing. Receipts are matched on
(account, upstream_id) in the ledger; a receipt with no match yet is parked
and applied when its submit answer is recorded.
"""

from __future__ import annotations

import time
from typing import Sequence

from .. import codes
from ..models import AcceptedRun, Receipt, ReceiptRun, SubmitResult
from .batches import touch_batches, touch_batches_of_messages, touch_batches_where
from .db import POSTGRESQL, Connection, Database
from .outbox import queue_callbacks_for_messages, queue_callbacks_for_upstream, queue_callbacks_for_upstream_range
from .outbox import upstream_range
from .sql import VALUES_CHUNK, chunks, keys_hint, member_of, values_table


# What a submit answer may still change: a message waiting for it, or one whose batch was
# cancelled while it was in flight (006 holding its lease, messages.py cancel_pending).
# Said with the messages table's name: the answers UPDATE joins another table.
_OPEN = ("(messages.status IN ('002', '011') OR "
         "(messages.status = '006' AND messages.lease_until IS NOT NULL))")
# What an accepted answer sets, bar its upstream id (parameters: account, now, now, receipt due); a
# message cancelled while in flight and sent after all loses its cancel text.
_ACCEPTED = ("status = '003', account = ?, submitted_at = ?, updated_at = ?, lease_owner = NULL, lease_until = NULL, "
             "receipt_due = ?, error_text = CASE WHEN messages.status = '006' THEN NULL ELSE messages.error_text END")
# What a receipt may still change: a message at 003 waits for it, and one at 002/011 may
# have its submit answer still coming (the receipt overtook it, or another node is writing it).
_RECEIPT_MAY_CHANGE = ("002", "003", "011")
_RECEIPT_MAY_CHANGE_SQL = "('002', '003', '011')"


def delete_settled_parked(tx: Connection, condition: str = "", params: Sequence[object] = ()) -> None:
    """Drop the parked receipts (those matching ``condition``) whose message is final now.

    Final by this receipt or an earlier one; not merely "known": on
    PostgreSQL this statement sees commits made after the caller's UPDATE
    ran, and a message whose answer another node committed in between is at
    003 here, its receipt not applied yet: that one stays parked.
    """
    where = f"{condition} AND " if condition else ""
    tx.execute(
        f"DELETE FROM parked_receipts WHERE {where}EXISTS (SELECT 1 FROM messages m "
        "WHERE m.account = parked_receipts.account AND m.upstream_id = parked_receipts.upstream_id "
        f"AND m.status NOT IN {_RECEIPT_MAY_CHANGE_SQL})",
        tuple(params),
    )


class AnswerStore:
    def __init__(self, db: Database, receipt_timeout: float) -> None:
        self.db = db
        #: Seconds after a submit when a missing receipt stops holding its batch open.
        self.receipt_timeout = receipt_timeout

    def record_results(self, account: str, results: Sequence[SubmitResult]) -> None:
        """Apply submit answers in one transaction; stale attempts are ignored."""
        self.record_answers(account, results, ())

    def record_receipts(self, receipts: Sequence[Receipt]) -> int:
        """Apply delivery receipts; park those whose message is not known yet. Returns the number parked."""
        return self.record_answers("", (), receipts)

    def record_answers(self, account: str, results: Sequence[SubmitResult], receipts: Sequence[Receipt],
                       runs: Sequence[AcceptedRun] = (), receipt_runs: Sequence[ReceiptRun] = ()) -> int:
        """Submit answers (from ``account``: one by one, and ``runs`` in bulk), then receipts (one by one,
        and ``receipt_runs`` in bulk), in one transaction; returns the receipts parked.

        The answers go first, so a receipt that came with its answer finds its
        message. One transaction for both: the dispatcher's sink writes every
        few milliseconds, and each commit costs.
        """
        if isinstance(results, AcceptedRun):  # a run handed over as plain results
            runs = [results, *runs]
            results = ()
        if isinstance(receipts, ReceiptRun):
            receipt_runs = [receipts, *receipt_runs]
            receipts = ()
        if not results and not receipts and not runs and not receipt_runs:
            return 0
        now = time.time()
        parked: list[tuple[str, str]] = []
        with self.db.transaction() as tx:
            if results:
                self._apply_results(tx, account, results, now)
            if runs:
                self._apply_runs(tx, account, runs, now)
            if receipts:
                parked = self._apply_receipts(tx, receipts, now)
            for run in receipt_runs:
                parked += self._apply_receipt_run(tx, run, now)
        if self.db.dialect == POSTGRESQL and not self.db.connection().in_transaction:
            self._settle_crossed(account, results, runs, parked)
        return len(parked)

    def _settle_crossed(self, account: str, results: Sequence[SubmitResult], runs: Sequence[AcceptedRun],
                        parked: list[tuple[str, str]]) -> None:
        """Apply receipts parked by one node for messages another node was recording at the same moment.

        With several nodes (PostgreSQL, read committed), node B may park a
        receipt because node A's answer for its message is not committed yet,
        while A, looking for parked receipts before B committed, finds none.
        So both look again *after* their own commit: the one of the two that
        committed last sees the other's rows, and applies the receipt (a
        receipt applied twice is harmless: the update is conditional).
        SQLite needs none of this: its writers take turns.
        """
        wanted: dict[str, list[str]] = {}
        for acct, upstream_id in parked:
            wanted.setdefault(acct, []).append(upstream_id)
        answered = [r.upstream_id for r in results if r.upstream_id and not r.retry]
        if (answered or runs) and self._any_parked(account):
            wanted.setdefault(account, []).extend(answered + [u for run in runs for u in run.upstream_ids()])
        if not wanted:
            return
        now = time.time()
        with self.db.transaction() as tx:
            for acct, upstream_ids in wanted.items():
                self._apply_parked(tx, acct, upstream_ids, now, touch=True)

    def _any_parked(self, account: str, conn: Connection | None = None) -> bool:
        return (conn or self.db.connection()).execute(
            "SELECT 1 FROM parked_receipts WHERE account = ? LIMIT 1", (account,)
        ).fetchone() is not None

    def _apply_results(self, tx: Connection, account: str, results: Sequence[SubmitResult], now: float) -> None:
        due = now + float(self.receipt_timeout)
        ok = [(r.upstream_id, r.message_id, r.attempt) for r in results if r.upstream_id and not r.retry]
        if len({row[1] for row in ok}) < len(ok):  # the same answer twice: keep one (the last) per message
            ok = list({(row[1], row[2]): row for row in ok}.values())
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
        for part in chunks(ok, VALUES_CHUNK):
            answers, params = values_table(tx, part, ("text", "bigint", "bigint"))
            hint, keys = keys_hint(tx, "messages.id", [row[1] for row in part], "bigint")
            tx.execute(
                f"UPDATE messages SET {_ACCEPTED}, upstream_id = v.column1 "
                f"FROM {answers} WHERE messages.id = v.column2 AND messages.attempt = v.column3 AND {_OPEN}{hint}",
                (account, now, now, due, *params, *keys),
            )
        if failed:
            tx.executemany(
                "UPDATE messages SET status = ?, error_code = ?, error_text = ?, updated_at = ?, "
                f"lease_owner = NULL, lease_until = NULL WHERE id = ? AND attempt = ? AND {_OPEN}",
                failed,
            )
        if retry:
            # back to the queue; a message cancelled while it was in flight is cancelled for good now
            tx.executemany(
                "UPDATE messages SET lease_owner = NULL, lease_until = NULL "
                f"WHERE id = ? AND attempt = ? AND {_OPEN}",
                retry,
            )
        ids = [r.message_id for r in results]
        queue_callbacks_for_messages(tx, [r.message_id for r in results if not r.retry], now)
        touch_batches_of_messages(tx, ids, now)
        if ok:
            if self._any_parked(account, tx):  # mostly none: skip the look-up by thousands of ids
                self._apply_parked(tx, account, [str(row[0]) for row in ok], now)

    def _apply_runs(self, tx: Connection, account: str, runs: Sequence[AcceptedRun], now: float) -> None:
        """Runs of accepted answers: one ranged UPDATE each, the statement making the upstream ids.

        The same change as :meth:`_apply_results` makes for an accepted
        answer, under the same conditions (the attempt leased, the message
        still open), without a row of bound values per message to join
        (200,000 answers in 5,000-message runs, three alternating rounds:
        6.8-8.1 -> 4.8-6.5 us a message).
        """
        due = now + float(self.receipt_timeout)
        for run in runs:
            tx.execute(
                f"UPDATE messages SET {_ACCEPTED}, upstream_id = CAST(? AS TEXT) || CAST(id + CAST(? AS BIGINT) AS TEXT) "
                f"WHERE id BETWEEN ? AND ? AND attempt = ? AND {_OPEN}",
                (account, now, now, due, run.upstream_prefix, run.upstream_first - run.first_id,
                 run.first_id, run.last_id, run.attempt),
            )
            ids = range(run.first_id, run.last_id + 1)
            queue_callbacks_for_messages(tx, ids, now)
            touch_batches_of_messages(tx, ids, now)
        if self._any_parked(account, tx):  # mostly none: the upstream ids are not even spelled out
            self._apply_parked(tx, account, [u for run in runs for u in run.upstream_ids()], now)

    def _apply_receipts(self, tx: Connection, receipts: Sequence[Receipt], now: float) -> list[tuple[str, str]]:
        """Apply receipts; returns the (account, upstream id) of those parked."""
        parked: list[tuple[str, str]] = []
        by_account: dict[str, list[Receipt]] = {}
        for receipt in receipts:
            by_account.setdefault(receipt.account, []).append(receipt)
        for account, items in by_account.items():
            # The first receipt for a message decides; a later one finds it final.
            first: dict[str, Receipt] = {}
            for r in items:
                first.setdefault(r.upstream_id, r)
            upstream_ids = list(first)
            changed = self._apply_to_messages(tx, account, list(first.values()), now)
            if changed < len(first):
                # Some found no message at 002/003/011. Those whose message is final
                # already are done. Those whose message is not final now had their
                # submit answer committed by another node after the UPDATE ran
                # (PostgreSQL, read committed): this statement sees it, so apply them
                # again. The others overtook their submit answer and wait, parked.
                known = self._find_upstream(tx, account, upstream_ids)
                late = [first[u] for u, status in known.items() if status in _RECEIPT_MAY_CHANGE]
                if late:
                    changed += self._apply_to_messages(tx, account, late, now)
                orphans = [(account, r.upstream_id, r.status, r.error_text, now)
                           for r in first.values() if r.upstream_id not in known]
                if orphans:
                    tx.executemany(
                        "INSERT INTO parked_receipts (account, upstream_id, status, error_text, received_at) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (account, upstream_id) DO UPDATE SET "
                        "status = excluded.status, error_text = excluded.error_text, received_at = excluded.received_at",
                        orphans,
                    )
                    parked += [(account, o[1]) for o in orphans]
            if changed:
                queue_callbacks_for_upstream(tx, account, upstream_ids, now)  # the messages changed just now
                self._touch_batches_of_upstream(tx, account, upstream_ids, now)
        return parked

    def _apply_receipt_run(self, tx: Connection, run: ReceiptRun, now: float) -> list[tuple[str, str]]:
        """A run of receipts as one range of the upstream-id index; returns the (account, upstream id) parked.

        Its ids are the account's ids of their length from the first to the
        last (models.ReceiptRun): one ranged UPDATE, instead of joining a row
        of bound values per receipt and looking each one up twice, the second
        time for its batch (200,000 receipts in 5,000-receipt runs: 6.3-6.8
        -> 2.3 us a receipt). If some found no open message, the run is
        applied again one by one, which tells those already final from those
        to park: the receipts just applied find their messages final.
        """
        where = upstream_range()
        params = (run.account, run.first_upstream_id, run.last_upstream_id, len(run.first_upstream_id))
        changed = tx.execute(
            "UPDATE messages SET status = ?, error_text = COALESCE(?, error_text), updated_at = ? "
            f"WHERE {where} AND status IN {_RECEIPT_MAY_CHANGE_SQL}",
            (run.status, run.error_text, now, *params),
        ).rowcount
        if changed:
            queue_callbacks_for_upstream_range(tx, run.account, run.first_upstream_id, run.last_upstream_id, now)
            touch_batches_where(tx, where, params, now)
        if changed < len(run):
            return self._apply_receipts(tx, list(run), now)
        return []

    @staticmethod
    def _apply_to_messages(tx: Connection, account: str, receipts: Sequence[Receipt], now: float) -> int:
        """The receipts applied to their messages still open; returns how many changed.

        One statement per 2,000 receipts, joined on (account, upstream id): no
        read of the messages first, which stepped (and traded the GIL) per row.
        """
        changed = 0
        for part in chunks(receipts, VALUES_CHUNK):
            found, params = values_table(tx, [(r.upstream_id, r.status, r.error_text) for r in part], ("text",) * 3)
            hint, keys = keys_hint(tx, "messages.upstream_id", [r.upstream_id for r in part], "text")
            changed += tx.execute(
                "UPDATE messages SET status = v.column2, error_text = COALESCE(v.column3, messages.error_text), "
                f"updated_at = ? FROM {found} "
                "WHERE messages.account = ? AND messages.upstream_id = v.column1 "
                f"AND messages.status IN {_RECEIPT_MAY_CHANGE_SQL}{hint}",
                (now, *params, account, *keys),
            ).rowcount
        return changed

    @staticmethod
    def _touch_batches_of_upstream(tx: Connection, account: str, upstream_ids: Sequence[str], now: float) -> None:
        for where, params in member_of(tx, "upstream_id", upstream_ids, "text"):
            touch_batches_where(tx, f"account = ? AND {where}", (account, *params), now)

    @staticmethod
    def _find_upstream(tx: Connection, account: str, upstream_ids: Sequence[str]) -> dict[str, str]:
        """The status of each message known by one of these upstream ids."""
        found: dict[str, str] = {}
        for where, params in member_of(tx, "upstream_id", upstream_ids, "text"):
            for row in tx.execute(f"SELECT upstream_id, status FROM messages WHERE account = ? AND {where}", (account, *params)):
                found[row[0]] = row[1]
        return found

    @staticmethod
    def _apply_parked(tx: Connection, account: str, upstream_ids: Sequence[str], now: float, *, touch: bool = False) -> None:
        """Apply the parked receipts of these upstream ids whose message has its submit answer now.

        A parked receipt whose message is not at 003 yet stays parked; one
        whose message is final already is done with. ``touch``: also mark
        the changed messages' batches (the caller has not).
        """
        for where, params in member_of(tx, "upstream_id", upstream_ids, "text"):
            parked = tx.execute(
                f"SELECT upstream_id, status, error_text FROM parked_receipts WHERE account = ? AND {where}",
                (account, *params),
            ).fetchall()
            if not parked:
                continue
            changed = [
                r[0]
                for p in parked
                for r in tx.execute(
                    "UPDATE messages SET status = ?, error_text = COALESCE(?, error_text), updated_at = ? "
                    "WHERE account = ? AND upstream_id = ? AND status = '003' RETURNING id",
                    (p[1], p[2], now, account, p[0]),
                ).fetchall()
            ]
            if changed:
                queue_callbacks_for_messages(tx, changed, now)
                if touch:
                    touch_batches_of_messages(tx, changed, now)
            delete_settled_parked(tx, f"account = ? AND {where}", (account, *params))

    def time_out_receipts(self, now: float) -> int:
        """Stop waiting for receipts that are overdue; their batches may complete."""
        with self.db.transaction() as tx:
            # One statement through the partial index messages_awaiting_receipt. A
            # SELECT DISTINCT batch_seq first made SQLite walk messages_by_batch_row,
            # every row of the table, each second, holding the write lock.
            seqs = [
                r[0]
                for r in tx.execute(
                    "UPDATE messages SET receipt_timed_out = 1, updated_at = ? "
                    "WHERE status = '003' AND receipt_timed_out = 0 AND receipt_due < ? RETURNING batch_seq",
                    (now, now),
                ).fetchall()
            ]
            if seqs:
                touch_batches(tx, seqs, now)
        return len(seqs)
