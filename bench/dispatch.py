"""Dispatch benchmark: N queued messages through ftpbatch to a local SMSC, against a bare windowed client.

    python bench/dispatch.py --messages 20000 --window 50
    python bench/dispatch.py --messages 20000 --window 50 --pg   # also on a throw-away PostgreSQL
    python bench/dispatch.py --messages 20000 --window 50 --smsc test  # the test SMSC instead

In one run, each against a fresh SMSC process (receipts on, sent at once):
``--smsc fast`` (the default) is bench/fast_smsc.py, an SMSC for benchmarks
that costs a small fraction of the clients' CPU per message; ``--smsc test``
the test SMSC (tests/smsc/server.py, pure Python and smpp.pdu3, recording
every event), which on a two-core machine sets the pace itself at a few
thousand messages a second; ``--smsc smpp34`` bench/fast_smsc.py on
smpp34's Rust server, to compare. Every measurement of a run uses the same
kind:

* baseline: a bare smpp34 client with the same window sending the same N
  submit_sm and reading every receipt (no ledger, nothing recorded), once on
  the standard asyncio loop and once on uvloop (what ftpbatch's connector
  runs on); the ratio is taken against the faster of the two;
* ftpbatch: the same N messages already queued in the ledger, from the
  dispatcher's start until every message has its delivery receipt recorded
  (lease, submit, answer and receipt all written to the SQLite ledger);
  with ``--pg`` or ``--ledger URL`` also with the ledger on PostgreSQL (a
  fresh database each round, bench/_pg.py), in the same alternation.

The two run alternately, ``--rounds`` times each (bare, ftpbatch, bare,
ftpbatch, ...), so that a slow spell of this shared machine weighs on both.
Prints messages/s for both (the mean over the rounds, and each round) and
the ratio ftpbatch / bare.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


from ftpbatch.config import load_settings  # noqa: E402
from ftpbatch.models import Product  # noqa: E402
from ftpbatch.report.files import Counts  # noqa: E402
from ftpbatch.service import Gateway  # noqa: E402

import _pg  # noqa: E402
from _output import print_result  # noqa: E402


def run_ftpbatch(port: int, messages: int, window: int, workdir: Path, ledger_url: str | None = None) -> dict[str, float]:
    root = workdir / "root"
    url = f"smpp://bench:bench@127.0.0.1:{port}?window={window}"
    overrides: dict = {"dispatch": {"connector": url}, "report": {"interval": 1.0}}
    if ledger_url:
        overrides["ledger"] = {"url": ledger_url}
    settings = load_settings(root, overrides)
    gateway = Gateway(settings, ftp=False, watch_inboxes=False, node_id="bench")
    gateway.ledger.add_product(Product("bench", "unused", duplicate_window_hours=0))
    source = workdir / "batch.csv"
    source.write_text("to,text\n" + "".join(f"4477{n:08d},Hello from the dispatch benchmark - message {n}\n" for n in range(messages)))
    batch = gateway.submit_file(source, "bench")
    gateway.ingest.start()
    while (state := gateway.ledger.get_batch(batch.id)) is not None and state.state != "dispatching":
        if state.state == "rejected":
            raise RuntimeError(f"benchmark batch rejected: {state.error_code} {state.error_text}")
        time.sleep(0.01)
    seq = batch.seq
    started = time.perf_counter()
    gateway.reporter.start()
    gateway.dispatcher.start()
    try:
        # Done when nothing is queued or awaiting a receipt: an index-only
        # count (the bare client pays nothing comparable), then one full tally.
        while any(gateway.ledger.queue_depth().values()):
            if time.perf_counter() - started > 300:
                raise TimeoutError(gateway.ledger.queue_depth())
            time.sleep(0.02)  # the end is known to 20 ms in seconds; polling costs the GIL too
        seconds = time.perf_counter() - started
        counts = Counts.tally(gateway.ledger.status_counts(seq))
    finally:
        gateway.stop()
    return {"seconds": seconds, "delivered": counts.delivered}


def run_bare(port: int, messages: int, window: int, loop: str = "asyncio") -> float:
    """A bare smpp34 client: ``window`` submits outstanding, every receipt read; messages/s until the last receipt.

    ``loop``: "asyncio" (the standard event loop) or "uvloop".
    """
    import asyncio

    import smpp34

    from ftpbatch.dispatch.smpp.sockets import set_nodelay_to

    async def main() -> float:
        client = smpp34.Client("127.0.0.1", port, "bare", "bare", bind_type="TRX", window_size=window,
                               inbound_capacity=65536)
        smsc = await client.connect()
        set_nodelay_to("127.0.0.1", port)
        numbers = iter(range(messages))
        receipts = 0
        all_receipts = asyncio.Event()

        async def read() -> None:
            nonlocal receipts
            while receipts < messages:
                event = await smsc.next()
                if isinstance(event, smpp34.DeliverSmEvent):
                    receipts += 1
            all_receipts.set()

        async def send() -> None:
            for n in numbers:
                await smsc.submit_sm(f"4477{n:08d}", b"Hello from the dispatch benchmark - message %d" % n,
                                     source_addr="BENCH", registered_delivery=1)

        started = time.perf_counter()
        reader = asyncio.create_task(read())
        await asyncio.gather(*(send() for _ in range(window)))
        await all_receipts.wait()
        elapsed = time.perf_counter() - started
        await reader
        await smsc.unbind()
        await client.stop()
        return messages / elapsed

    if loop == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


#: the SMSC processes ``--smsc`` picks from; each prints ``PORT <n>`` first
SMSC_COMMANDS = {
    "fast": [str(ROOT / "bench" / "fast_smsc.py"), "--port", "0", "--receipt-delay", "0"],
    "smpp34": [str(ROOT / "bench" / "fast_smsc.py"), "--port", "0", "--receipt-delay", "0", "--engine", "smpp34"],
    "test": ["-m", "tests.smsc.server", "--port", "0", "--mode", "happy", "--receipt-delay", "0"],
}
DEFAULT_SMSC = "fast" if (ROOT / "bench" / "fast_smsc.py").is_file() else "test"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def receipting_smsc(*extra: str, kind: str = "test", cpu: list[float] | None = None) -> Iterator[int]:
    """An SMSC process (``kind``: see SMSC_COMMANDS), receipts on and sent at once (the same work for both measurements).

    ``cpu``: gets the CPU seconds the SMSC used once it listened (its start-up left out), when known.
    """
    proc = subprocess.Popen([sys.executable, *SMSC_COMMANDS[kind], *extra], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    started = None
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        started = cpu_seconds(proc.pid)
        yield port
    finally:
        used = cpu_seconds(proc.pid)
        if cpu is not None and started is not None and used is not None:
            cpu.append(used - started)
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each, alternating")
    parser.add_argument("--smsc", choices=sorted(SMSC_COMMANDS), default=DEFAULT_SMSC,
                        help="fast: bench/fast_smsc.py; test: tests/smsc/server.py; smpp34: fast_smsc.py --engine smpp34")
    _pg.add_arguments(parser)
    args = parser.parse_args()
    with _pg.databases(args) as new_database:
        run(args, new_database)


def run(args: argparse.Namespace, new_database: Callable[[], str] | None) -> None:
    pg_rates: list[float] = []
    pg_delivered: list[int] = []
    bare_rates: list[float] = []
    uvloop_rates: list[float] = []
    our_rates: list[float] = []
    delivered: list[int] = []
    # CPU seconds of the SMSC process in each measurement, by client
    smsc_cpu: dict[str, list[float]] = {"bare": [], "bare_uvloop": [], "ftpbatch": []}
    for _ in range(args.rounds):
        with receipting_smsc(kind=args.smsc, cpu=smsc_cpu["bare"]) as port:
            bare_rates.append(run_bare(port, args.messages, args.window))
        with receipting_smsc(kind=args.smsc, cpu=smsc_cpu["bare_uvloop"]) as port:
            uvloop_rates.append(run_bare(port, args.messages, args.window, loop="uvloop"))
        with (tempfile.TemporaryDirectory(prefix="ftpbatch-dispatch-") as tmp,
              receipting_smsc(kind=args.smsc, cpu=smsc_cpu["ftpbatch"]) as port):
            ours = run_ftpbatch(port, args.messages, args.window, Path(tmp))
        our_rates.append(args.messages / ours["seconds"])
        delivered.append(int(ours["delivered"]))
        if new_database is not None:
            with tempfile.TemporaryDirectory(prefix="ftpbatch-dispatch-") as tmp, receipting_smsc(kind=args.smsc) as port:
                on_pg = run_ftpbatch(port, args.messages, args.window, Path(tmp), new_database())
            pg_rates.append(args.messages / on_pg["seconds"])
            pg_delivered.append(int(on_pg["delivered"]))
    bare_rate = sum(bare_rates) / len(bare_rates)
    uvloop_rate = sum(uvloop_rates) / len(uvloop_rates)
    our_rate = sum(our_rates) / len(our_rates)
    result = {
        "benchmark": "dispatch",
        "messages": args.messages,
        "window": args.window,
        "rounds": args.rounds,
        "smsc": args.smsc,
        "bare_smpp34_msgs_per_s_with_receipts": round(bare_rate),
        "bare_smpp34_uvloop_msgs_per_s_with_receipts": round(uvloop_rate),
        "ftpbatch_msgs_per_s_with_receipts": round(our_rate),
        # against the faster bare client: the stricter comparison
        "ratio": round(our_rate / max(bare_rate, uvloop_rate), 2),
        "ratio_vs_bare_asyncio": round(our_rate / bare_rate, 2),
        "bare_each_round": [round(r) for r in bare_rates],
        "bare_uvloop_each_round": [round(r) for r in uvloop_rates],
        "ftpbatch_each_round": [round(r) for r in our_rates],
        "ftpbatch_delivered_each_round": delivered,
    }
    for client, seconds in smsc_cpu.items():
        if seconds:  # what the SMSC itself cost: its CPU time per message (1e6 / this: its own limit per core)
            result[f"smsc_cpu_us_per_msg_{client}"] = round(1e6 * sum(seconds) / (len(seconds) * args.messages))
    if pg_rates:
        pg_rate = sum(pg_rates) / len(pg_rates)
        result.update({
            "postgresql_msgs_per_s_with_receipts": round(pg_rate),
            "postgresql_vs_sqlite": round(pg_rate / our_rate, 2),
            "postgresql_ratio_vs_bare": round(pg_rate / max(bare_rate, uvloop_rate), 2),
            "postgresql_each_round": [round(r) for r in pg_rates],
            "postgresql_delivered_each_round": pg_delivered,
        })
    print_result(result)


if __name__ == "__main__":
    main()
