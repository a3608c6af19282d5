"""Several nodes on one PostgreSQL ledger: 1 node vs 2 nodes, and the queue's lease-claim rate.

    python bench/nodes.py --messages 20000 --bind-tps 500
    python bench/nodes.py --messages 20000 --bind-tps 500 --ledger postgresql://user@host/db

In one run, against a throw-away PostgreSQL server (bench/_pg.py; or
``--ledger URL``) and the test SMSC capping every bind at ``--bind-tps``
submit_sm a second (tests/smsc/server.py ``--bind-tps``; receipts at once):

* 1 node, then 2 nodes: real ``ftpbatch serve`` processes (``--node-id``,
  one shared root, one database per measurement), each with one bind. The
  batch is queued in the ledger beforehand and paused; once every node is
  serving it is resumed, and the clock runs until no message is queued or
  awaiting its receipt. Aggregate msg/s with receipts, and the ratio
  2 nodes / 1 node (the goal: >= 1.8x, the per-bind cap being the limit);
* the lease-claim rate of the queue itself: ``Ledger.lease`` taking the same
  number of messages ``--window`` at a time, against a bare
  ``UPDATE ... FOR UPDATE SKIP LOCKED`` loop over a table of as many rows, on
  the same server.

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psycopg  # noqa: E402

import _pg  # noqa: E402
from _output import print_result  # noqa: E402
from ftpbatch.intake.ingest import Ingest  # noqa: E402
from ftpbatch.ledger import Ledger  # noqa: E402
from ftpbatch.models import Product  # noqa: E402
from ftpbatch.storage import LocalStorage  # noqa: E402


@contextlib.contextmanager
def capped_smsc(bind_tps: float) -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.smsc.server", "--port", "0", "--mode", "happy", "--receipt-delay", "0",
         *(["--bind-tps", str(bind_tps)] if bind_tps else [])],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline().split()[1])
    finally:
        proc.terminate()
        proc.wait(10)


def queue_paused_batch(url: str, root: Path, messages: int) -> int:
    """The batch stored in the ledger (all messages queued) and paused: nothing is leased yet."""
    storage = LocalStorage(root)
    storage.prepare()
    ledger = Ledger(url)
    try:
        ledger.add_product(Product("bench", "unused", duplicate_window_hours=0))
        storage.ensure_home("bench")
        source = root / "batch.csv"
        source.write_text("to,text\n" + "".join(f"4477{n:08d},Hello from the nodes benchmark - message {n}\n"
                                                for n in range(messages)))
        batch_id, spooled = storage.spool_copy(source, "bench")
        batch = ledger.record_claim(batch_id, "bench", "batch.csv", str(spooled), "bench", time.time())
        ledger.pause_batch(batch.seq, "bench")
        Ingest(ledger, storage).process(batch)
        return batch.seq
    finally:
        ledger.close()


def run_nodes(url: str, smsc_port: int, nodes: int, messages: int, window: int, workdir: Path) -> dict[str, float]:
    root = workdir / f"root-{nodes}"
    seq = queue_paused_batch(url, root, messages)
    (root / "ftpbatch.toml").write_text("")
    env = {**os.environ, "FTPBATCH_LEDGER": url, "FTPBATCH_REPORT_INTERVAL": "1"}
    connector = f"smpp://bench:bench@127.0.0.1:{smsc_port}?window={window}"
    procs = []
    try:
        for n in range(nodes):
            proc = subprocess.Popen(
                [sys.executable, "-m", "ftpbatch", "--root", str(root), "serve", "--node-id", f"node-{n + 1}",
                 "--ftp-host", "127.0.0.1", "--ftp-port", "0", "--connector", connector],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
            procs.append(proc)
        for proc in procs:
            assert proc.stdout is not None
            while "serving FTP on" not in (line := proc.stdout.readline()):
                if not line:
                    raise RuntimeError("a node exited before serving")
        ledger = Ledger(url)
        try:
            deadline = time.monotonic() + 30
            while sum(n.binds for n in ledger.list_nodes() if n.state(time.time()) == "up") < nodes:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not every node bound: {ledger.list_nodes()}")
                time.sleep(0.1)
            started = time.perf_counter()
            ledger.resume_batch(seq, "bench")
            while any(ledger.queue_depth().values()):
                if time.perf_counter() - started > 600:
                    raise TimeoutError(ledger.queue_depth())
                time.sleep(0.05)
            seconds = time.perf_counter() - started
            delivered = sum(t.messages for t in ledger.status_counts(seq) if t.status == "004")
        finally:
            ledger.close()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {"seconds": seconds, "msgs_per_s": messages / seconds, "delivered": delivered}


def lease_rate(url: str, root: Path, messages: int, window: int) -> float:
    """Messages per second ``Ledger.lease`` hands out, ``window`` at a time, from a queued batch."""
    seq = queue_paused_batch(url, root, messages)
    ledger = Ledger(url)
    try:
        ledger.resume_batch(seq, "bench")
        taken = 0
        started = time.perf_counter()
        while taken < messages:
            got = ledger.lease("bench-node", "bench", window, time.time(), 600)
            if not got:
                raise RuntimeError(f"the queue ran dry after {taken} of {messages}")
            taken += len(got)
        return taken / (time.perf_counter() - started)
    finally:
        ledger.close()


def bare_skip_locked_rate(url: str, messages: int, window: int) -> float:
    """The same claims as a bare queue: one table, ``UPDATE .. WHERE id IN (SELECT .. FOR UPDATE SKIP LOCKED)``."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bare_queue (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
                     "owner TEXT, lease_until DOUBLE PRECISION, payload TEXT NOT NULL)")
        conn.execute("INSERT INTO bare_queue (payload) SELECT 'Hello from the nodes benchmark - message ' || g "
                     "FROM generate_series(1, %s) g", (messages,))
        conn.execute("CREATE INDEX bare_queue_free ON bare_queue (id) WHERE lease_until IS NULL")
        conn.execute("ANALYZE bare_queue")
        taken = 0
        started = time.perf_counter()
        while taken < messages:
            rows = conn.execute(
                "UPDATE bare_queue SET owner = 'bare', lease_until = %s WHERE id IN (SELECT id FROM bare_queue "
                "WHERE lease_until IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, payload",
                (time.time() + 600, window),
            ).fetchall()
            if not rows:
                raise RuntimeError("the bare queue ran dry")
            taken += len(rows)
        return taken / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--bind-tps", type=float, default=500.0, help="the SMSC's cap per bind (submit_sm/s; 0: none)")
    parser.add_argument("--ledger", metavar="URL", help="an existing PostgreSQL server (default: a throw-away one)")
    args = parser.parse_args()
    args.pg = not args.ledger
    if args.bind_tps and "--bind-tps" not in (ROOT / "tests" / "smsc" / "server.py").read_text():
        raise SystemExit("this checkout's test SMSC has no --bind-tps (cap per bind); run with --bind-tps 0 (no cap)")
    with tempfile.TemporaryDirectory(prefix="ftpbatch-nodes-") as tmp, _pg.databases(args) as new_database:
        assert new_database is not None
        workdir = Path(tmp)
        with capped_smsc(args.bind_tps) as port:
            one = run_nodes(new_database(), port, 1, args.messages, args.window, workdir)
        with capped_smsc(args.bind_tps) as port:
            two = run_nodes(new_database(), port, 2, args.messages, args.window, workdir)
        ours = lease_rate(new_database(), workdir / "root-lease", args.messages, args.window)
        bare = bare_skip_locked_rate(new_database(), args.messages, args.window)
    result = {
        "benchmark": "nodes",
        "messages": args.messages,
        "window": args.window,
        "smsc_cap_per_bind_msgs_per_s": args.bind_tps,
        "one_node_msgs_per_s_with_receipts": round(one["msgs_per_s"]),
        "two_nodes_msgs_per_s_with_receipts": round(two["msgs_per_s"]),
        "ratio_two_vs_one": round(two["msgs_per_s"] / one["msgs_per_s"], 2),
        "delivered_one_two": [int(one["delivered"]), int(two["delivered"])],
        "ledger_lease_claims_per_s": round(ours),
        "bare_skip_locked_claims_per_s": round(bare),
        "lease_ratio": round(ours / bare, 2),
    }
    print_result(result)


if __name__ == "__main__":
    main()
