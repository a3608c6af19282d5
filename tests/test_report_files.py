"""Report file formatting, in process."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ftpbatch.report.files import _iso_column, iso


def test_report_times_are_formatted_like_the_summary_times():
    rng = np.random.default_rng(7)
    # microsecond clock readings over two days, some on whole seconds, some missing
    values = np.round(1.79e9 + rng.random(5000) * 172_800, 6)
    values[::10] = np.floor(values[::10])
    values[::13] = np.nan
    column = _iso_column(pd.Series(values))
    expected = ["" if np.isnan(v) else iso(float(v)) for v in values]
    assert column.tolist() == expected
    assert column.iloc[1].endswith("Z") and len(column.iloc[1]) == len("2026-11-25T15:04:05.123Z")


def test_an_empty_or_all_missing_column_formats():
    assert _iso_column(pd.Series([], dtype=float)).tolist() == []
    assert _iso_column(pd.Series([np.nan, None], dtype=float)).tolist() == ["", ""]


def test_report_csv_is_byte_for_byte_what_pandas_writes(ledger):
    """report.csv is rendered column by column in Arrow (report_csv); pandas' to_csv of report_frame is the reference.

    Hostile cells (commas, quotes, newlines, a carriage return, formula starts,
    non-ASCII), rows still in blocks, leased, submitted, delivered, failed,
    rejected and flagged possible duplicates, in chunks that cut blocks.
    """
    import time

    from ftpbatch import codes
    from ftpbatch.ledger.blocks import BLOCK_ROWS
    from ftpbatch.models import Receipt, SubmitResult
    from ftpbatch.report.files import report_csv, report_frame

    from .ledger_contract import rows

    n = 2 * BLOCK_ROWS + 77
    frame = rows(n)
    hostile = ["=SUM(A1)", "a,b", 'say "hi"', "two\nlines", "cr\rlf", "+44", "-1", "@x", "\ttab", "ünïcödé", ""]
    frame.loc[frame.index[: len(hostile)], "climsgid"] = hostile
    frame.loc[frame.index[len(hostile): 2 * len(hostile)], "climsgid"] = None
    frame["note"] = None
    frame.loc[frame.index[5:12], "note"] = ["read as national", "=x", "a, b", 'q"', "n\nl", "", "ok"]
    frame.loc[frame.index[-3:], "note"] = "last rows"
    rejected = frame["row"] % 97 == 0
    frame.loc[rejected, ["status", "error_code", "error_text"]] = [codes.ERROR, codes.E_DESTINATION, '=bad, "number"']
    batch = ledger.record_claim("01REPORTCSV000000000000001", "acme", "f.csv", "/spool/f.csv", "ftp", time.time())
    ledger.start_processing(batch.seq)
    ledger.insert_messages(batch.seq, "acme", frame)
    ledger.finish_intake(batch.seq, n, None)
    now = time.time()
    leased = ledger.lease("node", "acme", BLOCK_ROWS + 500, now, 60)
    ledger.expire_leases_of("node")
    again = ledger.lease("node", "acme", 300, now + 1, 60)  # possible duplicates
    results = [SubmitResult(m.message_id, m.attempt, upstream_id=f"up,{m.message_id}") for m in again[:200]]
    results += [SubmitResult(m.message_id, m.attempt, error_code=codes.E_INTERNAL, error_text='refused, "no"\nsorry')
                for m in again[200:250]]
    ledger.record_answers("acct", results, [])
    ledger.record_receipts([Receipt("acct", f"up,{m.message_id}", codes.DELIVERED, None, None) for m in again[:120]])
    assert len(leased) == BLOCK_ROWS + 500
    for chunk_rows in (1500, 200_000):
        expected = b"".join(
            report_frame(f).to_csv(header=False, index=False, lineterminator="\n").encode()
            for f in ledger.report_frames(batch.seq, chunk_rows=chunk_rows)
        )
        got = b"".join(report_csv(t) for t in ledger.report_tables(batch.seq, chunk_rows=chunk_rows))
        assert got.count(b"\n") >= n and b",read as national\n" in got and b",'=x\n" in got
        assert got == expected


def test_a_rewrite_renders_only_the_chunks_that_changed_and_matches_a_full_render(ledger, tmp_path, monkeypatch):
    """report.csv is put together from kept chunks; only chunks whose rows changed are read and formatted again.

    After each kind of change (an answer, a receipt, a lease that flags a
    possible duplicate, a block's rows taken, a cancel) the file must be byte
    for byte what a writer with nothing kept renders, and the unchanged
    chunks must not have been rendered again.
    """
    import time

    from ftpbatch import codes
    from ftpbatch.models import COMPLETE, Receipt, SubmitResult
    from ftpbatch.report import files
    from ftpbatch.report.files import Counts, ReportWriter
    from ftpbatch.storage import LocalStorage

    from .ledger_contract import rows

    storage = LocalStorage(tmp_path / "root")
    storage.prepare()
    batch = ledger.record_claim("01REPORTCHUNKS000000000001", "acme", "c.csv", "/spool/c.csv", "ftp", time.time())
    ledger.start_processing(batch.seq)
    ledger.insert_messages(batch.seq, "acme", rows(450))  # one block: rows 1-450, chunks of 100 rows
    ledger.finish_intake(batch.seq, 450, None)
    rendered: list[int] = []
    real_report_csv = files.report_csv

    def counting(table):
        rendered.append(int(table.column("row_no")[0].as_py()) if table.num_rows else -1)
        return real_report_csv(table)

    monkeypatch.setattr(files, "report_csv", counting)
    writer = ReportWriter(ledger, storage, chunk_rows=100)
    counts = Counts.tally(ledger.status_counts(batch.seq))

    def rewrite() -> list[int]:
        rendered.clear()
        current = ledger.get_batch_by_seq(batch.seq)
        _, path = writer.write(current, counts)
        mine = sorted(rendered)
        fresh_storage = LocalStorage(tmp_path / f"fresh-{len(list(tmp_path.iterdir()))}")
        fresh_storage.prepare()
        _, fresh = ReportWriter(ledger, fresh_storage, chunk_rows=100).write(current, counts)
        assert path.read_bytes() == fresh.read_bytes()
        return mine

    assert rewrite() == [1, 101, 201, 301, 401]  # nothing kept yet
    assert rewrite() == []  # nothing changed: every chunk from what was kept
    now = time.time()
    first = ledger.lease("node", "acme", 150, now, 60)  # rows 1-150 taken out of the block
    assert rewrite() == [1, 101, 201, 301, 401]  # the block's cursor moved: every chunk it spans
    ledger.record_results("sim", [SubmitResult(m.message_id, m.attempt, upstream_id=f"u{m.reference}") for m in first[100:]])
    assert rewrite() == [101]  # answers for rows 101-150 only
    ledger.record_receipts([Receipt("sim", "uc120", codes.DELIVERED, _now_utc())])
    assert rewrite() == [101]
    ledger.expire_leases_of("node")
    again = ledger.lease("node", "acme", 5, time.time(), 60)  # rows 1-5 again: flagged possible duplicates
    assert [m.reference for m in again] == ["c1", "c2", "c3", "c4", "c5"]
    assert rewrite() == [1]
    ledger.cancel_pending(batch.seq)
    assert rewrite() == [1, 101, 201, 301, 401]
    # a finished batch keeps nothing
    ledger.complete_batch(batch.seq)
    writer.write(ledger.get_batch_by_seq(batch.seq), counts)
    assert ledger.get_batch_by_seq(batch.seq).state == COMPLETE
    assert not (storage.cache / "reports" / batch.id).exists()


def _now_utc():
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc)


def _chunked_batch(ledger, tmp_path, n: int):
    """A batch of ``n`` rows read whole, a writer with 100-row chunks, and a function that rewrites and parses."""
    import time

    from ftpbatch.report.files import Counts, ReportWriter
    from ftpbatch.storage import LocalStorage

    from .helpers import parse_report
    from .ledger_contract import rows

    storage = LocalStorage(tmp_path / "root")
    storage.prepare()
    batch = ledger.record_claim("01REPORTSETTLED00000000001", "acme", "s.csv", "/spool/s.csv", "ftp", time.time())
    ledger.start_processing(batch.seq)
    ledger.insert_messages(batch.seq, "acme", rows(n))
    ledger.finish_intake(batch.seq, n, None)
    writer = ReportWriter(ledger, storage, chunk_rows=100)

    def rewrite() -> dict[str, dict[str, str]]:
        current = ledger.get_batch_by_seq(batch.seq)
        _, path = writer.write(current, Counts.tally(ledger.status_counts(batch.seq)))
        return {r["row"]: r for r in parse_report(path.read_text())}

    return batch, rewrite


def test_a_chunk_whose_rows_are_all_final_is_kept_without_being_read_again(ledger, tmp_path):
    import time

    from ftpbatch import codes
    from ftpbatch.models import Receipt, SubmitResult

    batch, rewrite = _chunked_batch(ledger, tmp_path, 300)
    leased = ledger.lease("node", "acme", 300, time.time(), 60)
    ledger.record_results("sim", [SubmitResult(m.message_id, m.attempt, upstream_id=f"u{m.reference}") for m in leased])
    ledger.record_receipts([Receipt("sim", f"u{m.reference}", codes.DELIVERED, _now_utc()) for m in leased[:200]])
    report = rewrite()  # rows 1-200 final (chunks 1 and 101 settled), 201-300 await receipts
    assert report["50"]["status"] == "004" and report["250"]["status"] == "003"
    # Behind the ledger's back (no writer does this to a final row): a settled chunk
    # is not read again, so what it showed stays; an open chunk that changed is read.
    ledger.db.connection().execute(
        "UPDATE messages SET error_text = 'changed behind', updated_at = updated_at + 1 "
        "WHERE batch_seq = ? AND row_no IN (50, 250)", (batch.seq,))
    report = rewrite()
    assert report["250"]["error_text"] == "changed behind"
    assert report["50"]["error_text"] == ""


def test_a_chunk_with_a_message_cancelled_in_flight_is_not_settled_and_shows_its_late_answer(ledger, tmp_path):
    import time

    from ftpbatch.models import SubmitResult

    batch, rewrite = _chunked_batch(ledger, tmp_path, 300)
    in_flight = ledger.lease("node", "acme", 10, time.time(), 60)  # rows 1-10
    ledger.cancel_pending(batch.seq)  # rows 1-10 keep their lease as 006; the rest is cancelled
    report = rewrite()
    assert report["1"]["status"] == "006" and report["150"]["status"] == "006"
    ledger.record_results("sim", [SubmitResult(in_flight[0].message_id, in_flight[0].attempt, upstream_id="late")])
    report = rewrite()
    assert report["1"]["status"] == "003"  # the answer stands, and the chunk was read again to show it
