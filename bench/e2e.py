"""End to end: an N-row CSV through ``ftpbatch process`` (sim connector) to its final report.

    python bench/e2e.py --rows 1000000

Generates the file as bench/ingest.py does (90 % valid numbers), makes a
fresh data root (on /dev/shm when there is one) with a product of tps
100,000, and times ``ftpbatch --root R process FILE --product bench`` in a
child process: wall time from launch to exit (ingest, lease, submit,
answer, receipt, final report.csv and summary.json, start-up and shutdown
included), the CPU seconds of it and its report process, and the peak RSS
of the largest of them. Several rounds: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _output import compile_package, print_result  # noqa: E402
from ingest import generate  # noqa: E402


def ftpbatch(root: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "ftpbatch", "--root", str(root), *args], env=env, text=True,
                          capture_output=True, check=True, **kwargs)  # type: ignore[call-overload]


def one_round(path: Path, workdir: Path, connector: str) -> dict[str, float]:
    root = workdir / "root"
    shutil.rmtree(root, ignore_errors=True)
    ftpbatch(root, "init", "--no-tls")
    ftpbatch(root, "product", "add", "bench", "--password-stdin", "--tps", "100000", "--dial-prefix", "44",
             "--duplicate-window", "0", input="bench-password-123\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = ftpbatch(root, "process", str(path), "--product", "bench", "--connector", connector)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads(out.stdout)
    assert summary["state"] == "complete" and summary["counts"]["queued"] == 0, summary
    shutil.rmtree(root, ignore_errors=True)
    return {
        "seconds": seconds,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "peak_rss_mb": after.ru_maxrss / 1024,
        "delivered": summary["counts"]["delivered"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connector", default="sim", help="connector URL (default: the built-in sim)")
    args = parser.parse_args()
    compile_package()
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="ftpbatch-e2e-", dir=base) as tmp:
        workdir = Path(tmp)
        path = workdir / "e2e.csv"
        generate(path, args.rows)
        rounds = [one_round(path, workdir, args.connector) for _ in range(args.rounds)]
    print_result({
        "benchmark": "e2e",
        "rows": args.rows,
        "rounds": args.rounds,
        "process_s_best": round(min(r["seconds"] for r in rounds), 1),
        "process_s_each_round": [round(r["seconds"], 1) for r in rounds],
        "cpu_s_each_round": [round(r["cpu_s"], 1) for r in rounds],
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rounds)),
        "delivered": rounds[-1]["delivered"],
        "rows_per_s": round(args.rows / min(r["seconds"] for r in rounds)),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    })


if __name__ == "__main__":
    main()
