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
