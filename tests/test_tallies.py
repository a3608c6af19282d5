"""A batch's settled rows are counted once (ledger/tallies.py); the contract tests check the counts stay true."""

from __future__ import annotations

import time

from ftpbatch import codes
from ftpbatch.ledger import Ledger
from ftpbatch.ledger.tallies import COUNT_CHUNK_ROWS
from ftpbatch.models import Receipt

from .ledger_contract import NOW, new_batch, statuses, submit_all


def test_settled_rows_are_not_read_again_and_open_ones_are(ledger: Ledger) -> None:
    seq = new_batch(ledger, 2 * COUNT_CHUNK_ROWS)
    leased = ledger.lease("node", "acme", 2 * COUNT_CHUNK_ROWS, time.time(), 60)
    submit_all(ledger, leased)
    ledger.record_receipts([Receipt("sim", f"u{m.reference}", codes.DELIVERED, NOW) for m in leased[:COUNT_CHUNK_ROWS + 10]])
    assert statuses(ledger, seq) == {codes.DELIVERED: COUNT_CHUNK_ROWS + 10, codes.SUBMITTED: COUNT_CHUNK_ROWS - 10}
    # Behind the ledger's back (no writer changes a final row): the first chunk, all
    # delivered, is kept and not counted again; the second, still open, is.
    ledger.db.connection().execute(
        "UPDATE messages SET status = '007' WHERE batch_seq = ? AND row_no IN (1, ?)", (seq, COUNT_CHUNK_ROWS + 1))
    assert statuses(ledger, seq) == {
        codes.DELIVERED: COUNT_CHUNK_ROWS + 9, codes.UNDELIVERABLE: 1, codes.SUBMITTED: COUNT_CHUNK_ROWS - 10}
    # a ledger opened afresh (another process, another node) counts everything once
    fresh = Ledger(ledger.db.location)
    try:
        assert statuses(fresh, seq)[codes.UNDELIVERABLE] == 2
    finally:
        fresh.close()
