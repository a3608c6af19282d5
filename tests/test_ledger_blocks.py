"""Message blocks: rows due now are stored packed at intake and become messages rows when leased.

Every view of a batch (counts, report, usage, queue depth, cancel, reject,
resume) must see the same messages whether they are still in a block or
already rows, and a block's message must become a row exactly once.
"""

from __future__ import annotations

import sqlite3
import time

import pandas as pd
import pytest

from ftpbatch import codes
from ftpbatch.models import SubmitResult
from ftpbatch.errors import LedgerError
from ftpbatch.ledger import Ledger
from ftpbatch.ledger.blocks import BLOCK_ROWS

from .ledger_contract import rows

# spans three blocks, the last one partly filled
MANY = 2 * BLOCK_ROWS + 123


def new_batch(ledger: Ledger, frame: pd.DataFrame, name: str = "01BLOCKS0000000000000000001") -> int:
    batch = ledger.record_claim(name, "acme", "f.csv", "/spool/f.csv", "ftp", time.time())
    ledger.start_processing(batch.seq)
    ledger.insert_messages(batch.seq, "acme", frame)
    return batch.seq


def tallies(ledger: Ledger, seq: int) -> dict[str, tuple[int, int]]:
    """status -> (messages, parts)"""
    out: dict[str, tuple[int, int]] = {}
    for t in ledger.status_counts(seq):
        messages, parts = out.get(t.status, (0, 0))
        out[t.status] = (messages + t.messages, parts + t.parts)
    return out


def report(ledger: Ledger, seq: int, chunk_rows: int = 4000) -> pd.DataFrame:
    return pd.concat(list(ledger.report_frames(seq, chunk_rows=chunk_rows)), ignore_index=True)


def message_rows(ledger: Ledger) -> int:
    return ledger.db.connection().execute("SELECT COUNT(*) FROM messages").fetchone()[0]


def mixed(n: int) -> pd.DataFrame:
    """Queued rows with a rejected row every 7th and a scheduled one every 11th, with 2-part texts."""
    frame = rows(n)
    frame["parts"] = 2
    rejected = frame["row"] % 7 == 0
    scheduled = (frame["row"] % 11 == 0) & ~rejected
    frame.loc[rejected, ["status", "error_code", "error_text"]] = [codes.ERROR, codes.E_DESTINATION, "bad number"]
    frame.loc[scheduled, "status"] = codes.SCHEDULED
    frame.loc[scheduled, "not_before"] = pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=1)
    return frame


def test_due_rows_are_stored_as_blocks_not_rows(ledger: Ledger):
    seq = new_batch(ledger, rows(MANY))
    assert message_rows(ledger) == 0
    blocks = ledger.db.connection().execute("SELECT size FROM message_blocks ORDER BY id").fetchall()
    assert [b[0] for b in blocks] == [BLOCK_ROWS, BLOCK_ROWS, 123]
    assert tallies(ledger, seq) == {"002": (MANY, MANY)}
    assert ledger.max_row(seq) == MANY
    assert ledger.queue_depth()["queued"] == MANY


def test_leases_take_each_message_once_in_file_order_across_blocks(ledger: Ledger):
    seq = new_batch(ledger, rows(MANY))
    seen: list[str] = []
    now = time.time()
    while leased := ledger.lease("node", "acme", 777, now, 60):
        assert all(m.attempt == 1 for m in leased)
        seen += [m.reference for m in leased]  # climsgid c<row>
        assert len({m.message_id for m in leased}) == len(leased)
    assert seen == [f"c{i}" for i in range(1, MANY + 1)]
    assert message_rows(ledger) == MANY
    # leased messages are rows now, still queued (002) until answered
    assert tallies(ledger, seq) == {"002": (MANY, MANY)}
    assert ledger.db.connection().execute("SELECT COUNT(*) FROM message_blocks WHERE taken < size").fetchone()[0] == 0


def test_leased_block_messages_carry_every_field(ledger: Ledger):
    frame = rows(3)
    frame["sender"] = "ACME"
    frame["encoding"] = ["gsm7", "ucs2", "gsm7"]
    frame["parts"] = [1, 3, 2]
    frame["validity_minutes"] = pd.Series([None, 90, 5], dtype="Int64")
    new_batch(ledger, frame)
    leased = ledger.lease("node", "acme", 10, time.time(), 60)
    assert [(m.destination, m.text, m.sender, m.encoding, m.parts, m.validity_minutes, m.reference) for m in leased] == [
        ("447700900001", "message 1", "ACME", "gsm7", 1, None, "c1"),
        ("447700900002", "message 2", "ACME", "ucs2", 3, 90, "c2"),
        ("447700900003", "message 3", "ACME", "gsm7", 2, 5, "c3"),
    ]


def test_mixed_chunk_report_is_in_file_order_with_every_status(ledger: Ledger):
    n = 3 * BLOCK_ROWS
    seq = new_batch(ledger, mixed(n))
    rejected = n // 7
    scheduled = sum(1 for r in range(1, n + 1) if r % 11 == 0 and r % 7 != 0)
    queued = n - rejected - scheduled
    # part of the queue is leased and answered: the report mixes rows and block messages
    leased = ledger.lease("node", "acme", BLOCK_ROWS + 10, time.time(), 60)
    ledger.record_results("sim", [SubmitResult(m.message_id, m.attempt, upstream_id=f"u{m.message_id}") for m in leased])
    frame = report(ledger, seq)
    assert frame["row_no"].tolist() == list(range(1, n + 1))
    by_status = frame["status"].value_counts().to_dict()
    assert by_status == {"003": len(leased), "002": queued - len(leased), "005": rejected, "011": scheduled}
    assert frame.loc[frame["row_no"] == 7, "error_text"].item() == "bad number"
    waiting = frame[frame["status"] == "002"]
    assert waiting["upstream_id"].isna().all() and (waiting["parts"] == 2).all()
    assert tallies(ledger, seq) == {
        "003": (len(leased), 2 * len(leased)),
        "002": (queued - len(leased), 2 * (queued - len(leased))),
        "005": (rejected, 2 * rejected),
        "011": (scheduled, 2 * scheduled),
    }


def test_cancel_writes_block_messages_as_cancelled_rows(ledger: Ledger):
    seq = new_batch(ledger, rows(MANY))
    ledger.finish_intake(seq, MANY, None)
    leased = ledger.lease("node", "acme", 10, time.time(), 60)
    assert ledger.cancel_pending(seq) == MANY
    # the ten in flight may be on their way to the SMSC: pending until their answers come
    assert tallies(ledger, seq) == {"006": (MANY - 10, MANY - 10), "002": (10, 10)}
    assert ledger.lease("node", "acme", 10, time.time(), 60) == []
    # an in-flight message's answer stands (it was sent); the others are handed back: cancelled for good
    ledger.record_results("sim", [SubmitResult(leased[0].message_id, leased[0].attempt, upstream_id="late")] + [
        SubmitResult(m.message_id, m.attempt, error_text="stopped", retry=True) for m in leased[1:]])
    assert tallies(ledger, seq) == {"006": (MANY - 1, MANY - 1), "003": (1, 1)}
    frame = report(ledger, seq)
    assert frame["row_no"].tolist() == list(range(1, MANY + 1))
    assert set(frame["status"]) == {"006", "003"}
    assert set(frame[frame["status"] == "006"]["error_text"]) == {"cancelled by operator"}


def test_a_batch_refused_half_way_sends_nothing_of_its_blocks(ledger: Ledger):
    seq = new_batch(ledger, rows(MANY))
    ledger.reject_batch(seq, codes.E_MALFORMED, "row 12,000 is malformed")
    assert ledger.lease("node", "acme", 10, time.time(), 60) == []
    assert tallies(ledger, seq) == {"006": (MANY, MANY)}


def test_resume_continues_after_the_last_stored_block_row(ledger: Ledger):
    seq = new_batch(ledger, rows(BLOCK_ROWS + 5))
    assert ledger.max_row(seq) == BLOCK_ROWS + 5
    ledger.insert_messages(seq, "acme", rows(10, start=BLOCK_ROWS + 6))
    assert ledger.max_row(seq) == BLOCK_ROWS + 15
    assert report(ledger, seq)["row_no"].tolist() == list(range(1, BLOCK_ROWS + 16))


def test_a_message_taken_from_a_block_is_never_taken_again(ledger: Ledger):
    """The cursor moves in the lease's transaction: a crash after it leaves rows with leases, not the block."""
    seq = new_batch(ledger, rows(20))
    first = ledger.lease("crashed", "acme", 8, time.time(), 60)
    assert ledger.expire_leases_of("crashed") == 8
    again = ledger.lease("node", "acme", 100, time.time(), 60)
    assert [m.message_id for m in again][:8] == [m.message_id for m in first]
    assert [m.attempt for m in again] == [2] * 8 + [1] * 12
    assert len({m.message_id for m in again}) == 20
    assert message_rows(ledger) == 20
    assert sum(t.possible_duplicates for t in ledger.status_counts(seq)) == 8


def test_block_rows_are_made_exactly_once_under_a_stale_cursor(ledger: Ledger):
    """A take that read an old cursor must not write rows twice: the unique (batch, row) index refuses."""
    new_batch(ledger, rows(10))
    ledger.lease("node", "acme", 4, time.time(), 60)
    with pytest.raises(sqlite3.IntegrityError), ledger.db.transaction() as tx:
        stale = tx.execute("SELECT id, batch_seq, product, 0 AS taken, size FROM message_blocks").fetchone()
        ledger.blocks.take(tx, stale, 2, time.time(), lease=("other", time.time() + 60))
    assert message_rows(ledger) == 4


def test_usage_and_operator_totals_count_block_messages(ledger: Ledger):
    seq = new_batch(ledger, rows(MANY))
    ledger.lease("node", "acme", 100, time.time(), 60)
    (usage,) = ledger.usage("product")
    assert (usage.product, usage.messages, usage.parts) == ("acme", MANY, 0)
    assert ledger.message_status_totals() == {("acme", "002"): MANY}
    assert ledger.queue_depth()["queued"] == MANY
    assert tallies(ledger, seq)["002"] == (MANY, MANY)


def test_messages_are_never_paired_with_rows_whose_ids_were_not_assigned_in_order(ledger: Ledger):
    seq = new_batch(ledger, rows(20))
    # the largest possible rowid taken: SQLite now picks new rowids at random
    ledger.db.connection().execute(
        "INSERT INTO messages (id, batch_seq, row_no, product, destination, text, encoding, parts, status, updated_at) "
        "VALUES (9223372036854775807, ?, 1000000, 'acme', '1', 'x', 'gsm7', 1, '006', ?)",
        (seq, time.time()),
    )
    with pytest.raises(LedgerError):
        ledger.lease("node", "acme", 20, time.time(), 60)
    assert message_rows(ledger) == 1  # the transaction was rolled back: nothing taken, nothing half-made


def test_block_messages_made_rows_keep_every_value_whether_none_in_all_some_or_no_rows(ledger: Ledger):
    # Three INSERT slices (500 rows each): a column None throughout a slice is
    # written as NULL, not bound; mixed and filled columns are bound. The rows
    # read back after the leases expire (re-leased from the messages table)
    # must carry exactly the values of the file.
    n = 1200
    frame = rows(n)
    senders = [None if i < 500 or i % 3 == 0 else f"S{i}" for i in range(n)]
    references = [None if i < 600 else f"c{i}" for i in range(n)]
    validity = [30 if i == 1100 else None for i in range(n)]
    encodings = ["ucs2" if i % 2 else "gsm7" for i in range(n)]
    frame["sender"], frame["climsgid"], frame["encoding"] = senders, references, encodings
    frame["validity_minutes"] = pd.Series(validity, dtype="Int64")
    new_batch(ledger, frame)

    def fields(messages: list) -> list[tuple]:
        return [(m.destination, m.text, m.sender, m.reference, m.encoding, m.parts, m.validity_minutes) for m in messages]

    expected = list(zip(frame["destination"], frame["text"], senders, references, encodings, [1] * n, validity))
    first = ledger.lease("node", "acme", n, time.time(), 60)
    assert fields(first) == expected
    assert ledger.expire_leases_of("node") == n
    again = ledger.lease("node", "acme", n, time.time(), 60)
    assert [m.message_id for m in again] == [m.message_id for m in first]
    assert fields(again) == expected
    stored = ledger.db.connection().execute(
        "SELECT COUNT(*) FROM messages WHERE error_text IS NULL AND status = '002' AND lease_owner = 'node'"
    ).fetchone()[0]
    assert stored == n


def test_a_values_table_writes_a_column_none_in_every_row_as_null_and_binds_no_none():
    from ftpbatch.ledger.sql import values_table

    conn = sqlite3.connect(":memory:")
    data = [("a", None, None), ("b", None, "x"), ("c", None, None)]
    source, params = values_table(conn, data, ("text", "text", "text"))
    assert None in params  # the third column is mixed: its Nones are bound
    assert params.count(None) == 2 and len(params) == 6  # the second column is NULL in the statement
    assert conn.execute(f"SELECT v.column1, v.column2, v.column3 FROM {source}", params).fetchall() == data
    source, params = values_table(conn, [(r[0], None) for r in data], ("text", "text"))
    assert None not in params
    assert conn.execute(f"SELECT v.column1, v.column2 FROM {source}", params).fetchall() == [(r[0], None) for r in data]
