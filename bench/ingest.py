"""Ingest benchmark: claim -> every message queued in the ledger, against bare pandas.read_csv.

    python bench/ingest.py --rows 1000000
    python bench/ingest.py --rows 1000000 --pg     # SQLite and a throw-away PostgreSQL, same run
    python bench/ingest.py --rows 1000000 --ledger postgresql://user@host/db

Generates an N-row CSV (texts of ~60 varied characters, 90% valid national
numbers), then measures in one run, each in a fresh process so peak RSS is
its own:

* baseline: ``pandas.read_csv`` of the same file (``dtype=str``);
* ftpbatch: from the claim into the spool to the batch's last message stored
  (parse, rules, ledger), through the same code the server runs; on the
  SQLite ledger in the root, and with ``--pg``/``--ledger`` also on
  PostgreSQL (a fresh database; bench/_pg.py).

Prints a table and one JSON line with rows/s, the ratio ftpbatch/baseline
and peak RSS of each.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _output import print_result  # noqa: E402  (bench/ is on the path when run as a script)
import _pg  # noqa: E402

WORDS = (
    "your order has shipped and will arrive tomorrow between nine and five thanks for shopping with us "
    "reminder appointment at the clinic on monday please reply yes to confirm balance is low top up now "
    "school closes early today due to weather code verification expires in ten minutes do not share"
).split()


def generate(path: Path, rows: int, seed: int = 1) -> None:
    """Write the CSV in blocks so that generating 10M rows needs little memory."""
    rng = np.random.default_rng(seed)
    block = 200_000
    words = np.array(WORDS)
    with path.open("w", encoding="utf-8") as fh:
        fh.write("to,text\n")
        for start in range(0, rows, block):
            n = min(block, rows - start)
            numbers = rng.integers(0, 10**9, n)
            valid = rng.random(n) < 0.9
            to = np.where(valid, np.char.add("07", np.char.zfill(numbers.astype(str), 9)), np.char.add("0", (numbers % 1000).astype(str)))
            picks = words[rng.integers(0, len(words), (n, 11))]
            texts = [" ".join(p) for p in picks.tolist()]
            fh.write("".join(f"{t},{x} {i}\n" for i, (t, x) in enumerate(zip(to.tolist(), texts), start)))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_baseline(path: Path) -> dict[str, float]:
    import pandas as pd

    started = time.perf_counter()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": len(frame), "peak_rss_mb": peak_rss_mb()}


def run_ftpbatch(path: Path, workdir: Path, ledger_at: str = "") -> dict[str, float]:
    from ftpbatch.intake.ingest import Ingest
    from ftpbatch.ledger import Ledger
    from ftpbatch.models import Product
    from ftpbatch.storage import LocalStorage

    root = workdir / ("root-pg" if ledger_at else "root")
    storage = LocalStorage(root)
    storage.prepare()
    ledger = Ledger(ledger_at or root / "ftpbatch.db")
    ledger.add_product(Product("bench", "not-a-login", dial_prefix="44", duplicate_window_hours=0))
    inbox = storage.ensure_home("bench") / "inbox"
    target = inbox / "bench.csv"
    os.link(path, target) if path.stat().st_dev == inbox.stat().st_dev else target.write_bytes(path.read_bytes())
    ingest = Ingest(ledger, storage)

    started = time.perf_counter()
    batch_id, spooled = storage.claim(target, "bench")  # type: ignore[misc]
    batch = ledger.record_claim(batch_id, "bench", "bench.csv", str(spooled), "bench", time.time())
    ingest.process(batch)
    seconds = time.perf_counter() - started

    done = ledger.get_batch(batch_id)
    assert done is not None and done.state == "dispatching", done
    queued = sum(t.messages for t in ledger.status_counts(done.seq))
    return {"seconds": seconds, "rows": queued, "peak_rss_mb": peak_rss_mb()}


def child(kind: str, path: str, workdir: str) -> None:
    # the ledger's URL comes in the environment (a URL may hold a password; argv is visible in ps)
    ledger_at = os.environ.get("FTPBATCH_BENCH_LEDGER", "")
    result = run_baseline(Path(path)) if kind == "baseline" else run_ftpbatch(Path(path), Path(workdir), ledger_at)
    print(json.dumps(result))


def measure(kind: str, path: Path, workdir: Path, ledger_at: str = "") -> dict[str, float]:
    env = {**os.environ, "FTPBATCH_BENCH_LEDGER": ledger_at}
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path), str(workdir)], check=True, capture_output=True, text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    _pg.add_arguments(parser)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    on_pg: dict[str, float] | None = None
    with tempfile.TemporaryDirectory(prefix="ftpbatch-bench-") as tmp, _pg.databases(args) as new_database:
        workdir = Path(tmp)
        path = workdir / "batch.csv"
        generate(path, args.rows)
        size_mb = path.stat().st_size / 1e6
        baseline = measure("baseline", path, workdir)
        ours = measure("ftpbatch", path, workdir)
        if new_database is not None:
            on_pg = measure("ftpbatch", path, workdir, new_database())
    ratio = ours["seconds"] / baseline["seconds"]
    result = {
        "benchmark": "ingest",
        "rows": args.rows,
        "file_mb": round(size_mb, 1),
        "baseline_read_csv_s": round(baseline["seconds"], 3),
        "ftpbatch_claim_to_queued_s": round(ours["seconds"], 3),
        "ftpbatch_rows_per_s": round(args.rows / ours["seconds"]),
        "ratio": round(ratio, 2),
        "baseline_peak_rss_mb": round(baseline["peak_rss_mb"]),
        "ftpbatch_peak_rss_mb": round(ours["peak_rss_mb"]),
        "queued_rows": ours["rows"],
    }
    if on_pg is not None:
        result.update({
            "postgresql_claim_to_queued_s": round(on_pg["seconds"], 3),
            "postgresql_rows_per_s": round(args.rows / on_pg["seconds"]),
            "postgresql_vs_sqlite": round(on_pg["seconds"] / ours["seconds"], 2),
            "postgresql_peak_rss_mb": round(on_pg["peak_rss_mb"]),
            "postgresql_queued_rows": on_pg["rows"],
        })
    print_result(result)


if __name__ == "__main__":
    main()
