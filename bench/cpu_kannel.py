"""CPU seconds per N messages with delivery receipts: ftpbatch ``process`` beside Kannel, same SMSC, same run.

    python bench/cpu_kannel.py --messages 20000 --rounds 2

Drives the shared peer harness (``../shared/peers/kannel/bench_compare.py``
beside the checkout, or $FTPBATCH_KANNEL_HARNESS): a fresh test SMSC
(tests/smsc/server.py) per round, ftpbatch ``process`` of an N-row file
with the SMPP connector (window 50), and, when Kannel's ``bearerbox`` is
installed (``apt-get install -y kannel``), bearerbox + smsbox sending the
same N messages over HTTP, alternating. CPU seconds are read from /proc:
every ftpbatch process vs bearerbox + smsbox. Without Kannel, only
ftpbatch's figure is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _output import compile_package, print_result  # noqa: E402


def harness_dir() -> Path | None:
    for candidate in (os.environ.get("FTPBATCH_KANNEL_HARNESS"), REPO.parent / "shared/peers/kannel",
                      REPO.parent.parent / "shared/peers/kannel"):
        if candidate and (Path(candidate) / "bench_compare.py").is_file():
            return Path(candidate)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    compile_package()
    where = harness_dir()
    if where is None:
        sys.exit("the peer harness (shared/peers/kannel/bench_compare.py) is not beside this checkout")
    os.environ["FTPBATCH_CHECKOUT"] = str(REPO)
    os.environ.setdefault("PEER_RUN", tempfile.mkdtemp(prefix="ftpbatch-peer-"))
    sys.path.insert(0, str(where))
    import bench_compare as bc  # the shared harness

    bc.RUN.mkdir(parents=True, exist_ok=True)
    csv = bc.RUN / f"batch-{args.messages}.csv"
    with csv.open("w") as f:
        f.write("to,text\n")
        for i in range(args.messages):
            f.write(f"4477{i:08d},Hello from the dispatch benchmark - message {i}\n")
    kannel = shutil.which("bearerbox") is not None
    ours: list[float] = []
    theirs: list[float] = []
    for rnd in range(1, args.rounds + 1):
        if kannel:
            k = bc.run_kannel(rnd, args.messages, 50, 1, "kannel")
            theirs.append(round(k["cpu_s"]["bearerbox"] + k["cpu_s"]["smsbox"], 2))
        f = bc.run_ftpbatch_process(rnd, args.messages, 50, csv)
        assert f.get("state") == "complete", f
        ours.append(round(f["cpu_s"]["ftpbatch"], 2))
    result: dict[str, object] = {
        "benchmark": "cpu_kannel",
        "messages": args.messages,
        "rounds": args.rounds,
        "ftpbatch_cpu_s": round(statistics.mean(ours), 2),
        "ftpbatch_cpu_s_each_round": ours,
    }
    if kannel:
        result |= {
            "kannel_cpu_s": round(statistics.mean(theirs), 2),
            "kannel_cpu_s_each_round": theirs,
            "ratio": round(statistics.mean(ours) / statistics.mean(theirs), 2),
            # each round's pair ran back to back: their ratios say how steady the figure is on a shared machine
            "ratio_each_round": [round(o / t, 2) for o, t in zip(ours, theirs)],
        }
    else:
        result["kannel"] = "not installed (apt-get install -y kannel)"
    print_result(result)


if __name__ == "__main__":
    main()
