"""Usage reports on a real ledger with several products and days: table, CSV, JSON, plot, monthly files."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import struct
import time
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pandas as pd
import pytest

from ftpbatch import codes
from ftpbatch.cli import main
from ftpbatch.models import Receipt, SubmitResult
from ftpbatch.ledger import Ledger
from ftpbatch.models import Product
from ftpbatch.report.usage import MonthlyUsageFiles, month_csv, usage_report
from ftpbatch.storage import LocalStorage

from .ledger_contract import NOW, rows

JUNE = dt.date(2025, 6, 1)


def at(day: dt.date, hour: int = 12) -> float:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.timezone.utc).timestamp()


def add_batch(
    ledger: Ledger, product: str, received: dt.date, delivered: int, failed: int, rejected: int = 0,
    parts: int = 1, sent: dt.date | None = None,
) -> int:
    """A finished batch: ``delivered`` + ``failed`` messages sent on ``sent`` (default: the day received)."""
    batch = ledger.record_claim(f"01U{time.time_ns():023d}"[:26], product, "f.csv", "/spool/f.csv", "ftp", at(received, 9))
    ledger.start_processing(batch.seq)
    good = rows(delivered + failed)
    good["parts"] = parts
    frame = pd.concat([good, rows(rejected, status=codes.ERROR, start=delivered + failed + 1)], ignore_index=True)
    frame["destination"] = frame["destination"] + product  # unique upstream ids need nothing more
    ledger.insert_messages(batch.seq, product, frame)
    ledger.finish_intake(batch.seq, len(frame), None)
    leased = ledger.lease("node", product, delivered + failed, time.time(), 60)
    ledger.record_results("sim", [SubmitResult(m.message_id, m.attempt, upstream_id=f"u{m.message_id}") for m in leased])
    ledger.record_receipts(
        [Receipt("sim", f"u{m.message_id}", codes.DELIVERED if n < delivered else codes.UNDELIVERABLE, NOW)
         for n, m in enumerate(leased)]
    )
    ledger.complete_batch(batch.seq)
    # move the batch to the day it belongs to (the ledger stamps "now")
    with ledger.db.transaction() as tx:
        tx.execute("UPDATE batches SET received_at = ?, completed_at = ? WHERE seq = ?",
                   (at(received, 9), at(sent or received, 23), batch.seq))
        tx.execute("UPDATE messages SET submitted_at = ? WHERE batch_seq = ? AND submitted_at IS NOT NULL",
                   (at(sent or received, 10), batch.seq))
    return batch.seq


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """acme on 1, 2 and 4 June, other on 2 June, and one acme file received 4 June but sent 5 June."""
    ledger = Ledger(tmp_path / "ftpbatch.db")
    for name in ("acme", "other", "idle"):
        ledger.add_product(Product(name, "x"))
        LocalStorage(tmp_path).ensure_home(name)
    add_batch(ledger, "acme", JUNE, delivered=5, failed=1, rejected=2)
    add_batch(ledger, "acme", JUNE + dt.timedelta(days=1), delivered=3, failed=0, parts=2)
    add_batch(ledger, "other", JUNE + dt.timedelta(days=1), delivered=7, failed=2, rejected=1, parts=3)
    add_batch(ledger, "acme", JUNE + dt.timedelta(days=3), delivered=1, failed=1)
    add_batch(ledger, "acme", JUNE + dt.timedelta(days=3), delivered=4, failed=0, rejected=1, sent=JUNE + dt.timedelta(days=4))
    ledger.close()
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> str:
    assert main(["--root", str(root), "report", "usage", *args]) == 0
    return capsys.readouterr().out


def test_usage_by_day_counts_each_message_on_the_day_it_was_sent(root: Path):
    ledger = Ledger(root / "ftpbatch.db")
    try:
        report = {r.key: (r.messages, r.parts, r.delivered, r.failed, r.rejected) for r in usage_report(ledger, "day")}
    finally:
        ledger.close()
    assert report == {
        "2025-06-01": (8, 6, 5, 1, 2),
        "2025-06-02": (13, 6 + 27, 10, 2, 1),
        "2025-06-04": (3, 2, 1, 1, 1),  # the rejected row of the late file stays on the day it came in
        "2025-06-05": (4, 4, 4, 0, 0),
    }


def test_report_usage_table_by_product_with_a_period(capsys, root: Path):
    out = run(capsys, root, "--by", "product", "--since", "2025-06-02", "--until", "2025-06-04")
    lines = out.splitlines()
    assert lines[0].split() == ["product", "messages", "parts", "delivered", "failed", "rejected"]
    body = {line.split()[0]: line.split()[1:] for line in lines[2:] if line and not line.startswith("-")}
    assert body["acme"] == ["6", "8", "4", "1", "1"]
    assert body["other"] == ["10", "27", "7", "2", "1"]
    assert body["total"] == ["16", "35", "11", "3", "2"]
    assert "idle" not in body


def test_report_usage_csv_and_json_for_one_product(capsys, root: Path):
    out = run(capsys, root, "--by", "day", "--product", "acme", "--csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["day"] for r in table] == ["2025-06-01", "2025-06-02", "2025-06-04", "2025-06-05"]
    assert table[1] == {"day": "2025-06-02", "messages": "3", "parts": "6", "delivered": "3", "failed": "0", "rejected": "0"}
    documents = json.loads(run(capsys, root, "--by", "product", "--json"))
    assert documents == [
        {"product": "acme", "messages": 18, "parts": 18, "delivered": 13, "failed": 2, "rejected": 3},
        {"product": "other", "messages": 10, "parts": 27, "delivered": 7, "failed": 2, "rejected": 1},
    ]


def test_report_usage_plots_png_and_svg(capsys, root: Path, tmp_path: Path):
    png, svg = tmp_path / "usage.png", tmp_path / "usage.svg"
    run(capsys, root, "--plot", str(png))
    run(capsys, root, "--by", "product", "--plot", str(svg))
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    assert data[12:16] == b"IHDR" and depth == 8 and color == 2 and width > 300 and height > 200
    idat = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[idat - 4 : idat])
    assert zlib.crc32(data[idat : idat + 4 + length]) == struct.unpack(">I", data[idat + 4 + length : idat + 8 + length])[0]
    pixels = zlib.decompress(data[idat + 4 : idat + 4 + length])
    assert len(pixels) == height * (1 + 3 * width)
    assert len(set(pixels[1 : 1 + 3 * width * 100])) > 2  # not a blank page
    tree = ET.fromstring(svg.read_bytes())
    assert tree.tag == "{http://www.w3.org/2000/svg}svg"
    texts = [t.text for t in tree.iter("{http://www.w3.org/2000/svg}text")]
    assert "acme" in texts and "other" in texts
    bars = [r for r in tree.iter("{http://www.w3.org/2000/svg}rect") if r.find("{http://www.w3.org/2000/svg}title") is not None]
    assert {b.find("{http://www.w3.org/2000/svg}title").text for b in bars} >= {"2025-06-01 acme: 8", "2025-06-02 other: 10"}


def test_report_usage_refuses_bad_options(capsys, root: Path):
    assert main(["--root", str(root), "report", "usage", "--since", "2025-06-05", "--until", "2025-06-01"]) == 2
    assert main(["--root", str(root), "report", "usage", "--since", "June"]) == 2
    assert main(["--root", str(root), "report", "usage", "--plot", "usage.pdf"]) == 2
    assert main(["--root", str(root), "report", "usage", "--product", "nobody"]) == 1
    err = capsys.readouterr().err
    assert "no product named 'nobody'" in err and "must end in .png or .svg" in err


def test_monthly_usage_file_has_a_row_per_day(root: Path):
    ledger = Ledger(root / "ftpbatch.db")
    try:
        text = month_csv(ledger, "acme", 2025, 6, today=dt.date(2025, 7, 3))
        files = MonthlyUsageFiles(ledger, LocalStorage(root), refresh=3600, min_interval=3600)
        assert files.tick() == 3  # at start: every product's current month
        assert files.tick() == 0  # nothing due
        files.touch("acme")
        assert files.tick() == 0  # throttled
        assert files.tick(force=True) == 1  # e.g. at shutdown
    finally:
        ledger.close()
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 30 and table[0]["day"] == "2025-06-01" and table[-1]["day"] == "2025-06-30"
    assert table[0] == {"day": "2025-06-01", "messages": "8", "parts": "6", "delivered": "5", "failed": "1", "rejected": "2"}
    assert table[2]["messages"] == "0"
    month = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m")
    for product in ("acme", "other", "idle"):
        written = (root / "homes" / product / "reports" / f"usage-{month}.csv").read_text()
        assert written.startswith("day,messages,parts,delivered,failed,rejected\n")


def test_a_plot_that_cannot_be_written_is_the_users_mistake_101_not_901(capsys, root: Path, tmp_path: Path):
    target = tmp_path / "no-such-folder" / "usage.png"
    assert main(["--root", str(root), "report", "usage", "--plot", str(target)]) == 1
    err = capsys.readouterr().err
    assert f"error 101: cannot write the plot to {target}" in err and "901" not in err
