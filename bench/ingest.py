"""Ingest benchmark: claim -> every message queued in the ledger, against bare pandas.read_csv.

    python bench/ingest.py --rows 1000000
    python bench/ingest.py --rows 1000000 --pg     # also on a throw-away PostgreSQL, same run
    python bench/ingest.py --rows 1000000 --ledger postgresql://user@host/db

Generates an N-row CSV (texts of ~60 varied characters, 90% valid national
numbers), then measures in one run, each in a fresh process so peak RSS is
its own:

* baseline: ``pandas.read_csv`` of the same file (``dtype=str``);
* ftpbatch: from the claim into the spool to the batch's last message stored
  (parse, rules, ledger), through the same code the server runs; with
  ``--pg``/``--ledger`` also with the ledger on PostgreSQL (a fresh
  database; bench/_pg.py);
* ftpbatch with opt-outs: the same, with ``--optouts`` numbers (default
  100,000; half of them numbers of the file) on the product's opt-out list,
  so every row is checked against it (122). Its baseline is the plain ftpbatch
  run: ``optouts_added_s`` is the difference (noisy on a busy machine), and
  ``optout_lookup_s`` the opt-out work alone, timed inside the run (reading
  the list from the ledger once, then one vectorised look-up per chunk).

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
from typing import Any

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


def optout_numbers(path: Path, count: int, seed: int = 2) -> list[str]:
    """``count`` E.164 numbers: half taken from the file's first rows (so they match), half random."""
    from_file: list[str] = []
    with path.open(encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            to = line.split(",", 1)[0]
            if len(to) == 11 and to.startswith("07"):
                from_file.append("44" + to[1:])
                if len(from_file) >= count // 2:
                    break
    rng = np.random.default_rng(seed)
    random = [f"447{n:09d}" for n in rng.integers(0, 10**9, count - len(from_file)).tolist()]
    return from_file + random


def run_ftpbatch(path: Path, workdir: Path, optouts: Path | None = None, ledger_at: str = "") -> dict[str, float]:
    from ftpbatch.intake.ingest import Ingest
    from ftpbatch.ledger import Ledger
    from ftpbatch.models import Product
    from ftpbatch.storage import LocalStorage

    root = workdir / ("root-optouts" if optouts else "root-pg" if ledger_at else "root")
    storage = LocalStorage(root)
    storage.prepare()
    ledger = Ledger(ledger_at or root / "ftpbatch.db")
    ledger.add_product(Product("bench", "not-a-login", dial_prefix="44", duplicate_window_hours=0))
    if optouts is not None:
        ledger.add_optouts("bench", optouts.read_text().split(), "cli")
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
    tallies = ledger.status_counts(done.seq)
    queued = sum(t.messages for t in tallies)
    opted_out = ledger.db.connection().execute(
        "SELECT COUNT(*) FROM messages WHERE batch_seq = ? AND error_code = '122'", (done.seq,)).fetchone()[0]
    optout_s = optout_lookup_seconds(ledger, path) if optouts is not None else 0.0
    return {"seconds": seconds, "rows": queued, "peak_rss_mb": peak_rss_mb(), "optout_s": optout_s,
            "opted_out": opted_out}


def optout_lookup_seconds(ledger: Any, path: Path, chunk_rows: int = 250_000) -> float:
    """The opt-out work of one batch alone, as ingest does it: the list read once, one vectorised look-up per chunk."""
    import pandas as pd
    import pyarrow as pa

    from ftpbatch.rules import optout_keys
    from ftpbatch.rules.apply import in_sorted
    from ftpbatch.rules.numbers import normalise

    column = pd.read_csv(path, usecols=["to"], dtype=str, keep_default_na=False)["to"]
    chunks = [normalise(pa.chunked_array([pa.array(column.iloc[i:i + chunk_rows].tolist(), type=pa.large_string())]), "44")
              for i in range(0, len(column), chunk_rows)]
    started = time.perf_counter()
    keys = optout_keys(ledger.optout_numbers("bench"))
    for dest in chunks:
        in_sorted(dest.number, keys) & dest.valid
    return time.perf_counter() - started


def child(kind: str, path: str, workdir: str) -> None:
    if kind == "baseline":
        result = run_baseline(Path(path))
    else:
        optouts = Path(workdir) / "optouts.txt" if kind == "optouts" else None
        # the ledger's URL comes in the environment (a URL may hold a password; argv is visible in ps)
        result = run_ftpbatch(Path(path), Path(workdir), optouts, os.environ.get("FTPBATCH_BENCH_LEDGER", ""))
    print(json.dumps(result))


def measure(kind: str, path: Path, workdir: Path, ledger_at: str = "") -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path), str(workdir)], check=True, capture_output=True, text=True,
        env={**os.environ, "FTPBATCH_BENCH_LEDGER": ledger_at},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--optouts", type=int, default=100_000, help="numbers on the opt-out list of the third run")
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
        (workdir / "optouts.txt").write_text("\n".join(optout_numbers(path, args.optouts)))
        baseline = measure("baseline", path, workdir)
        ours = measure("ftpbatch", path, workdir)
        with_optouts = measure("optouts", path, workdir)
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
        "optouts": args.optouts,
        "ftpbatch_with_optouts_s": round(with_optouts["seconds"], 3),
        "optouts_added_s": round(with_optouts["seconds"] - ours["seconds"], 3),
        "optout_lookup_s": round(with_optouts["optout_s"], 3),
        "rows_opted_out_122": with_optouts["opted_out"],
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
