"""Upload latency: transfer complete -> claimed -> first submit -> complete summary.

    python bench/latency.py --uploads 50

Uploads batches of 10 and 1,000 rows with ftplib to a real ``ftpbatch
serve`` (sim connector, no receipt delay). Times come from the ledger (claim,
first submit_at) and the summary file (completed_at), all on this machine's
clock, measured from the moment ``storbinary`` returned (the 226 reply).
Baseline: the bare FTP upload itself (the same bytes to a bare pyftpdlib).
"""

from __future__ import annotations

import argparse
import ftplib
import io
import json
import statistics
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from _servers import PASSWORD, USER, BarePyftpdlib, FtpbatchServer


def batch_bytes(rows: int, tag: int) -> bytes:
    lines = "".join(f"0770090{n:04d},upload {tag} message {n} for latency measuring\n" for n in range(rows))
    return ("to,text\n" + lines).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def wait_complete(root: Path, name: str, timeout: float = 30.0) -> dict:
    reports = root / "homes" / USER / "reports"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in reports.glob(f"{name}.*.summary.json"):
            try:
                summary = json.loads(path.read_text())
            except (json.JSONDecodeError, FileNotFoundError):
                continue
            if summary["state"] == "complete":
                return summary
        time.sleep(0.002)
    raise TimeoutError(name)


def ledger_times(root: Path, batch_id: str) -> tuple[float, float]:
    db = sqlite3.connect(root / "ftpbatch.db")
    try:
        seq, received = db.execute("SELECT seq, received_at FROM batches WHERE id = ?", (batch_id,)).fetchone()
        (first_submit,) = db.execute("SELECT MIN(submitted_at) FROM messages WHERE batch_seq = ?", (seq,)).fetchone()
        return received, first_submit
    finally:
        db.close()


def measure_ftpbatch(root: Path, rows: int, uploads: int) -> dict[str, list[float]]:
    from datetime import datetime

    server = FtpbatchServer(root, duplicate_window_hours=0)
    series: dict[str, list[float]] = {"claimed_ms": [], "first_submit_ms": [], "complete_ms": []}
    try:
        client = ftplib.FTP()
        client.connect("127.0.0.1", server.port)
        client.login(USER, PASSWORD)
        for n in range(uploads):
            name = f"lat-{rows}-{n}.csv"
            client.storbinary(f"STOR /inbox/{name}", io.BytesIO(batch_bytes(rows, n)))
            done_at = time.time()
            summary = wait_complete(root, name)
            claimed, first_submit = ledger_times(root, summary["batch"])
            completed = datetime.fromisoformat(summary["completed_at"].replace("Z", "+00:00")).timestamp()
            series["claimed_ms"].append((claimed - done_at) * 1000)
            series["first_submit_ms"].append((first_submit - done_at) * 1000)
            series["complete_ms"].append((completed - done_at) * 1000)
        client.quit()
    finally:
        server.stop()
    return series


def measure_bare(home: Path, rows: int, uploads: int) -> list[float]:
    server = BarePyftpdlib(home)
    try:
        client = ftplib.FTP()
        client.connect("127.0.0.1", server.port)
        client.login(USER, PASSWORD)
        times = []
        for n in range(uploads):
            data = batch_bytes(rows, n)
            started = time.perf_counter()
            client.storbinary(f"STOR /inbox/lat-{n}.csv", io.BytesIO(data))
            times.append((time.perf_counter() - started) * 1000)
        client.quit()
        return times
    finally:
        server.stop()


def run(uploads: int) -> list[dict]:
    results = []
    for rows in (10, 1000):
        with tempfile.TemporaryDirectory(prefix="ftpbatch-latency-") as tmp:
            series = measure_ftpbatch(Path(tmp) / "root", rows, uploads)
            bare = measure_bare(Path(tmp) / "bare", rows, uploads)
        row = {"benchmark": "latency", "rows": rows, "uploads": uploads, "bare_upload_ms_median": round(statistics.median(bare), 1)}
        for key, values in series.items():
            row[f"{key}_median"] = round(statistics.median(values), 1)
            row[f"{key}_p95"] = round(percentile(values, 0.95), 1)
        results.append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=50)
    args = parser.parse_args()
    results = run(args.uploads)
    print(f"{'rows':>6} {'claimed ms (med/p95)':>22} {'first submit ms':>18} {'complete ms':>16} {'bare upload ms':>15}")
    for r in results:
        print(
            f"{r['rows']:>6} {r['claimed_ms_median']:>11}/{r['claimed_ms_p95']:<10} "
            f"{r['first_submit_ms_median']:>8}/{r['first_submit_ms_p95']:<9} "
            f"{r['complete_ms_median']:>7}/{r['complete_ms_p95']:<8} {r['bare_upload_ms_median']:>15}"
        )
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
