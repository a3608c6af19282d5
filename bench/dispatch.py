"""Dispatch benchmark: N queued messages through ftpbatch to a local SMSC, against a bare windowed client.

    python bench/dispatch.py --messages 20000 --window 50
    python bench/dispatch.py --messages 20000 --window 50 --pg   # also on a throw-away PostgreSQL

In one run, each against a fresh test SMSC (tests/smsc/server.py, another
SMPP implementation; receipts on, sent at once):

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


@contextlib.contextmanager
def receipting_smsc(*extra: str) -> Iterator[int]:
    """The test SMSC with receipts on and sent at once (the same work for both measurements)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.smsc.server", "--port", "0", "--mode", "happy", "--receipt-delay", "0", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline().split()[1])
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each, alternating")
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
    for _ in range(args.rounds):
        with receipting_smsc() as port:
            bare_rates.append(run_bare(port, args.messages, args.window))
        with receipting_smsc() as port:
            uvloop_rates.append(run_bare(port, args.messages, args.window, loop="uvloop"))
        with tempfile.TemporaryDirectory(prefix="ftpbatch-dispatch-") as tmp, receipting_smsc() as port:
            ours = run_ftpbatch(port, args.messages, args.window, Path(tmp))
        our_rates.append(args.messages / ours["seconds"])
        delivered.append(int(ours["delivered"]))
        if new_database is not None:
            with tempfile.TemporaryDirectory(prefix="ftpbatch-dispatch-") as tmp, receipting_smsc() as port:
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
