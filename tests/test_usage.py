"""Usage reports on a real ledger with several products and days: table, CSV, JSON, plot, monthly files."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import struct
import time
import xml.etree.ElementTree as ET
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


SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module", autouse=True)
def matplotlib_fonts_loaded(tmp_path_factory: pytest.TempPathFactory) -> None:
    """matplotlib keeps the font files it drew with open, for reuse (a bounded cache in its
    font_manager, not a leak): draw once before the per-test check of open files looks."""
    from ftpbatch.report.plot import write_plot

    folder = tmp_path_factory.mktemp("fonts")
    for name in ("warm.png", "warm.svg"):
        write_plot(folder / name, {"acme": {JUNE: 1}}, "warm-up")


def test_report_usage_plots_png_and_svg(capsys, root: Path, tmp_path: Path):
    png, svg = tmp_path / "usage.png", tmp_path / "usage.svg"
    run(capsys, root, "--plot", str(png))
    run(capsys, root, "--by", "product", "--plot", str(svg))
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 600 and height >= 400
    tree = ET.fromstring(svg.read_bytes())
    assert tree.tag == f"{SVG}svg"
    texts = [" ".join("".join(t.itertext()).split()) for t in tree.iter(f"{SVG}text")]
    assert "Messages per day per product" in texts  # text kept as text, whole
    assert {"acme", "other", "06-01", "06-05", "messages"} <= set(texts)
    assert "idle" not in texts  # no messages: no legend entry


LONG_TITLE = "Messages per day - " + "-".join(["a-rather-long-product-name"] * 4) + " (June 2025, UTC)"


def test_the_plot_title_labels_and_legend_fit_inside_the_figure(tmp_path: Path):
    """The hand-made PNG cut its title off ("MESSAGES PER DAY PER"); matplotlib's layout must not."""
    from matplotlib.text import Text

    from ftpbatch.report.plot import usage_figure, write_plot

    series = {
        "a-product-with-a-long-name": {JUNE + dt.timedelta(days=n): 1000 * n for n in range(40)},
        "acme": {JUNE + dt.timedelta(days=n): 12_345 for n in range(0, 40, 3)},
    }
    for title in ("Messages per day per product", LONG_TITLE):
        figure = usage_figure(series, title)
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        box = figure.bbox
        axes = figure.axes[0]
        legend = axes.get_legend()
        texts: list[Text] = [axes._left_title, axes.xaxis.label, axes.yaxis.label, legend.get_title(), *legend.get_texts()]
        shown = {" ".join(t.get_text().split()) for t in texts}
        assert title in shown and "a-product-with-a-long-name" in shown and "messages" in shown
        for text in texts:
            extent = text.get_window_extent(renderer)
            inside = box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1
            assert inside, (text.get_text(), extent.bounds, box.bounds)
        # and everything drawn (tick labels too) lies within the figure
        drawn = figure.get_tightbbox(renderer)  # inches
        width, height = figure.get_size_inches()
        assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= width + 0.01 and drawn.y1 <= height + 0.01, drawn
    svg = tmp_path / "long.svg"
    write_plot(svg, series, LONG_TITLE)
    words = " ".join(" ".join(t.itertext()) for t in ET.fromstring(svg.read_bytes()).iter(f"{SVG}text")).split()
    assert " ".join(LONG_TITLE.split()) in " ".join(words)  # the whole title, perhaps over two lines


def test_without_matplotlib_the_plot_says_how_to_install_the_extra(root: Path, tmp_path: Path):
    import subprocess
    import sys

    target = tmp_path / "usage.png"
    script = (  # as if matplotlib were not installed: importing it raises ImportError
        "import sys\nsys.modules['matplotlib'] = None\nfrom ftpbatch.cli import main\n"
        f"sys.exit(main(['--root', {str(root)!r}, 'report', 'usage', '--plot', {str(target)!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    assert result.stderr.splitlines() == [
        f"ftpbatch: error 101: drawing --plot needs matplotlib, the optional 'plot' extra: install it with "
        f"'{sys.executable} -m pip install matplotlib' (from a checkout: pip install -e '.[plot]')"
    ]
    assert result.stdout == "" and not target.exists()


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
