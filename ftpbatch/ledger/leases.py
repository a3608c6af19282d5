"""Leases: due messages handed to a sender, at most one owner at a time (DESIGN.md §12).

A lease is (owner, lease_until, attempt + 1) on the message row; answers
are accepted only for the attempt they were leased with (answers.py).
"""

from __future__ import annotations

from itertools import repeat

from ..models import OutboundMessage
from .blockqueue import BlockQueue
from .db import Connection, Database
from .sql import dialect_of, skip_locked

# The batches whose messages are not leased now (ledger/controls.py); few, and indexed (batches_paused).
_PAUSED = "SELECT seq FROM batches WHERE paused = 1"


class LeaseStore:
    def __init__(self, db: Database, blocks: BlockQueue) -> None:
        self.db = db
        self.blocks = blocks

    def lease(self, owner: str, product: str, limit: int, now: float, lease_seconds: float) -> list[OutboundMessage]:
        """Take up to ``limit`` due messages of ``product``.

        Messages that already are rows come first (retries, expired leases,
        scheduled messages now due), oldest first; then the product's
        blocks, oldest first. A message whose previous lease expired (its
        sender crashed or hung) may already have reached the SMSC: it is
        flagged possible duplicate. Messages of paused batches are skipped.
        """
        until = now + lease_seconds
        with self.db.transaction() as tx:
            # Several nodes lease at once on PostgreSQL: each locks the rows it
            # takes and passes over those another node is taking (skip_locked).
            lock = skip_locked(dialect_of(tx))
            rows = tx.execute(
                "UPDATE messages SET lease_owner = ?, lease_until = ?, attempt = attempt + 1, "
                "possible_duplicate = CASE WHEN lease_until IS NOT NULL THEN 1 ELSE possible_duplicate END "
                # The statuses are literals, not parameters: only then can SQLite see that the
                # partial index messages_queue applies (bound, it scans and sorts the whole table).
                "WHERE id IN (SELECT id FROM messages WHERE product = ? AND status IN ('002', '011') "
                "AND not_before <= ? AND (lease_until IS NULL OR lease_until < ?) "
                f"AND batch_seq NOT IN ({_PAUSED}) "
                f"ORDER BY not_before, id LIMIT ?{lock}) "
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
        self, tx: Connection, owner: str, product: str, limit: int, now: float, until: float
    ) -> list[OutboundMessage]:
        leased: list[OutboundMessage] = []
        # One block at a time, each locked only when it is taken from: a block
        # another node is taking from is passed over, not waited for, and a
        # node locks no more blocks than it needs (one, for a window).
        next_block = (
            "SELECT id, batch_seq, product, taken, size FROM message_blocks "
            f"WHERE product = ? AND id > ? AND taken < size AND batch_seq NOT IN ({_PAUSED}) ORDER BY id LIMIT 1"
            f"{skip_locked(dialect_of(tx))}"
        )
        after = 0
        while len(leased) < limit:
            block = tx.execute(next_block, (product, after)).fetchone()
            if block is None:
                break
            after = int(block["id"])
            taken = self.blocks.take(tx, block, limit - len(leased), now, lease=(owner, until))
            a, b, rows = taken.start, taken.stop, taken.rows
            # one pass over the columns' slices: the block's messages in file order
            leased.extend(map(OutboundMessage, taken.ids, repeat(1), repeat(product), rows.destination[a:b],
                              rows.sender[a:b], rows.text[a:b], rows.encoding[a:b], rows.parts[a:b],
                              rows.validity_minutes[a:b], rows.climsgid[a:b]))
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

