"""Evaluate SMPP client libraries against one loopback SMSC (tests/smsc/server.py).

    python bench/smpp_eval.py [--count 5000] [--windows 1,10,50] [--libs smpp34,smpp34-nodelay,smpp34-uvloop,session,connector]

``session`` is ftpbatch's own session layer (dispatch/smpp/session.py, on
uvloop, smpp34's codec) driven exactly as the bare smpp34 client is; the
comparison that decided to replace smpp34's client (which answers every
deliver_sm itself and has no query_sm) by it.

Every run starts a fresh test SMSC (asyncio + the smpp.pdu3 codec, receipts
off so only submit_sm round trips are measured), binds one transceiver and
sends ``--count`` submit_sm with at most W outstanding, then prints
submits/s. The SMSC is the same Python process for every candidate, so the
numbers compare the clients; the SMSC itself caps all of them.

``smpplib`` and ``aiosmpplib`` have no window of their own: the harness adds
one (smpplib: send W, then one more per submit_sm_resp read; aiosmpplib: a
broker whose dequeue waits on a semaphore released per response).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@contextlib.contextmanager
def smsc_process(*extra: str) -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.smsc.server", "--port", "0", "--no-receipts", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        yield int(line.split()[1])
    finally:
        proc.terminate()
        proc.wait(10)


def dest(i: int) -> str:
    return f"4477{i:08d}"


BODY = b"Hello from the SMPP library evaluation, 60 characters long.."


# --- smpp34 --------------------------------------------------------------
def run_smpp34(port: int, count: int, window: int, nodelay: bool) -> float:
    import smpp34

    from ftpbatch.dispatch.smpp.sockets import set_nodelay_to

    async def main() -> float:
        client = smpp34.Client("127.0.0.1", port, "eval", "pw", bind_type="TRX", window_size=window)
        smsc = await client.connect()
        if nodelay:
            set_nodelay_to("127.0.0.1", port)
        counter = iter(range(count))
        ok = 0

        async def worker() -> None:
            nonlocal ok
            for i in counter:
                resp = await smsc.submit_sm(dest(i), BODY, source_addr="EVAL", registered_delivery=1)
                ok += resp.is_success

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(window)))
        elapsed = time.perf_counter() - t0
        assert ok == count, ok
        await smsc.unbind()
        await client.stop()
        return count / elapsed

    return asyncio.run(main())


# --- ftpbatch's own session layer (dispatch/smpp/session.py) ---------------
def run_session(port: int, count: int, window: int, loop: str = "uvloop") -> float:
    """The session layer the connector runs on, driven like the bare smpp34 client: W workers, one submit each."""
    import uvloop

    from ftpbatch.dispatch.smpp import pdu
    from ftpbatch.dispatch.smpp.session import open_session

    async def main() -> float:
        session = await open_session("eval", "127.0.0.1", port, lambda s, seq, raw: s.respond([seq]), timeout=10)
        await session.bind("trx", "eval", "pw", "", 10)
        counter = iter(range(count))
        ok = 0

        async def worker() -> None:
            nonlocal ok
            for i in counter:
                head, _ = await session.request(lambda seq: pdu.submit_sm(
                    seq, "EVAL", dest(i), BODY, {"registered_delivery": 1}))[1]
                ok += head.status == 0

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(window)))
        elapsed = time.perf_counter() - t0
        assert ok == count, ok
        await session.unbind(5)
        return count / elapsed

    return uvloop.run(main()) if loop == "uvloop" else asyncio.run(main())


def run_smpp34_uvloop(port: int, count: int, window: int) -> float:
    import uvloop

    real_run = asyncio.run
    asyncio.run = uvloop.run  # type: ignore[assignment]  # run_smpp34 calls asyncio.run
    try:
        return run_smpp34(port, count, window, nodelay=True)
    finally:
        asyncio.run = real_run


# --- smpplib -------------------------------------------------------------
def run_smpplib(port: int, count: int, window: int) -> float:
    import smpplib.client
    import smpplib.consts

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = smpplib.client.Client("127.0.0.1", port, allow_unknown_opt_params=True)
    client.connect()
    client.bind_transceiver(system_id="eval", password="pw")
    answered = 0
    sent = 0

    def on_sent(pdu, **_: object) -> None:
        nonlocal answered
        answered += 1

    client.set_message_sent_handler(on_sent)

    def send() -> None:
        nonlocal sent
        client.send_message(
            source_addr_ton=smpplib.consts.SMPP_TON_ALNUM, source_addr="EVAL",
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL, destination_addr=dest(sent),
            short_message=BODY, registered_delivery=1,
        )
        sent += 1

    t0 = time.perf_counter()
    while sent < min(window, count):
        send()
    while answered < count:
        client.read_once()
        while sent < count and sent - answered < window:
            send()
    elapsed = time.perf_counter() - t0
    client.unbind()
    client.disconnect()
    return count / elapsed


# --- aiosmpplib ----------------------------------------------------------
def run_aiosmpplib(port: int, count: int, window: int) -> float:
    import logging

    import aiosmpplib
    from aiosmpplib import ESME, AbstractBroker, AbstractHook, PhoneNumber, SubmitSm, SubmitSmResp

    class WindowBroker(AbstractBroker):
        def __init__(self) -> None:
            self.queue: asyncio.Queue = asyncio.Queue()
            self.slots = asyncio.Semaphore(window)

        async def enqueue(self, message) -> None:  # type: ignore[no-untyped-def]
            await self.queue.put(message)

        async def dequeue(self):  # type: ignore[no-untyped-def]
            msg = await self.queue.get()
            if isinstance(msg, SubmitSm):
                await self.slots.acquire()
            return msg

    class CountingHook(AbstractHook):
        def __init__(self, broker: WindowBroker, done: asyncio.Event) -> None:
            self.broker, self.done, self.n = broker, done, 0

        async def sending(self, smpp_message, pdu, client_id) -> None:  # type: ignore[no-untyped-def]
            pass

        async def received(self, smpp_message, pdu, client_id) -> None:  # type: ignore[no-untyped-def]
            if isinstance(smpp_message, SubmitSmResp):
                self.n += 1
                self.broker.slots.release()
                if self.n == count:
                    self.done.set()

        async def send_error(self, smpp_message, error, client_id) -> None:  # type: ignore[no-untyped-def]
            pass

    async def main() -> float:
        broker = WindowBroker()
        done = asyncio.Event()
        hook = CountingHook(broker, done)
        esme = ESME("127.0.0.1", port, "eval", "pw", broker=broker, hook=hook, log_level=logging.ERROR)
        messages = [
            SubmitSm(short_message=BODY.decode(), source=PhoneNumber("EVAL"), destination=PhoneNumber(dest(i)),
                     log_id=str(i))
            for i in range(count)
        ]
        task = asyncio.create_task(esme.start())
        await esme._bound.wait()  # no public "bound" signal
        t0 = time.perf_counter()
        for m in messages:
            await broker.enqueue(m)
        await done.wait()
        elapsed = time.perf_counter() - t0
        await esme.stop()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        return count / elapsed

    del aiosmpplib
    return asyncio.run(main())


# --- ftpbatch's SmppConnector (smpp34 inside) -----------------------------
def run_connector(port: int, count: int, window: int) -> float:
    from ftpbatch.models import OutboundMessage
    from ftpbatch.dispatch.smpp import SmppConnector
    from tests.smsc.events import CollectingEvents

    events = CollectingEvents()
    connector = SmppConnector.from_url(f"smpp://eval:pw@127.0.0.1:{port}?window={window}")
    connector.start(events)
    events.wait_until(lambda e: any(e.ups()), 10)
    text = BODY.decode()
    messages = [OutboundMessage(i, 1, "eval", dest(i), "EVAL", text, "gsm7", 1) for i in range(count)]
    t0 = time.perf_counter()
    for i in range(0, count, 500):  # the dispatcher hands over leased batches
        connector.submit(messages[i : i + 500])
    events.wait_until(lambda e: len(e.results) >= count, 120)
    elapsed = time.perf_counter() - t0
    connector.stop()
    assert len(events.ok()) == count, (len(events.ok()), events.results[:3])
    return count / elapsed


RUNNERS: dict[str, Callable[[int, int, int], float]] = {
    "smpp34": lambda p, n, w: run_smpp34(p, n, w, nodelay=False),
    "smpp34-nodelay": lambda p, n, w: run_smpp34(p, n, w, nodelay=True),
    "smpplib": run_smpplib,
    "aiosmpplib": run_aiosmpplib,
    "smpp34-uvloop": run_smpp34_uvloop,
    "session": run_session,
    "session-asyncio": lambda p, n, w: run_session(p, n, w, loop="asyncio"),
    "connector": run_connector,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--windows", default="1,10,50")
    ap.add_argument("--libs", default=",".join(RUNNERS))
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell; the best is printed")
    args = ap.parse_args()
    windows = [int(w) for w in args.windows.split(",")]
    libs = args.libs.split(",")
    print(f"{args.count} submit_sm per run, one transceiver, loopback test SMSC, cores={os.cpu_count()}")
    print(f"{'library':<16}" + "".join(f"{'window ' + str(w):>14}" for w in windows))
    for lib in libs:
        cells = []
        for w in windows:
            best = 0.0
            for _ in range(args.repeat):
                with smsc_process() as port:
                    try:
                        best = max(best, RUNNERS[lib](port, args.count, w))
                    except Exception as exc:  # noqa: BLE001 - report, keep evaluating the others
                        print(f"  {lib} window {w}: {type(exc).__name__}: {exc}", file=sys.stderr)
            cells.append(f"{best:>12,.0f}/s" if best else f"{'failed':>14}")
        print(f"{lib:<16}" + "".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
