"""How deliver_sm are gathered into batches (dispatch/smpp/inbound.py): until the SMSC goes quiet, at most FLUSH_HOLD.

Real deliver_sm PDUs (smpp34's codec) go into an Inbound on a real event loop,
paced by the loop's timers; the session only records the answers. The pauses
are ten times the production ones, so a loaded machine's late timers do not
change which batch a receipt lands in.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import smpp34

from ftpbatch.dispatch.smpp import inbound
from ftpbatch.dispatch.smpp.inbound import Inbound
from ftpbatch.dispatch.smpp.settings import parse_url
from ftpbatch.models import Receipt

QUIET = 0.05
HOLD = 0.4


class _Events:
    """What the dispatcher gets: each batch of receipts with the loop time it came at; acknowledged at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.batches: list[tuple[float, list[Receipt]]] = []

    def receipts(self, receipts: list[Receipt], ack: Any = None) -> None:
        self.batches.append((self.loop.time(), list(receipts)))
        if ack is not None:
            ack()

    def mo_messages(self, messages: Any, ack: Any = None) -> None:  # pragma: no cover - receipts only here
        raise AssertionError("no MO expected")


class _Session:
    """Stands in for the connection: records the deliver_sm_resp sequence numbers."""

    def __init__(self) -> None:
        self.answered: list[int] = []

    def respond(self, sequences: list[int], status: int = 0) -> None:
        self.answered += sequences


def _receipt_pdu(n: int) -> bytes:
    text = f"id:{n:08X} sub:001 dlvrd:001 submit date:2612070101 done date:2612070101 stat:DELIVRD err:000 text:"
    return smpp34.DeliverSm("447700900000", "SHOP", text.encode(), esm_class=0x04, sequence_number=n).encode()


def _gather(arrivals: list[float]) -> tuple[list[tuple[float, list[Receipt]]], _Session]:
    """Hand a receipt to an Inbound at each of ``arrivals`` (seconds from the start); the batches, timed from the start."""
    loop = asyncio.new_event_loop()
    try:
        events = _Events(loop)
        session = _Session()
        box = Inbound(parse_url("smpp://esme:pw@127.0.0.1:2775"), Counter(), lambda: events, lambda: loop)
        start = loop.time()
        for n, at in enumerate(arrivals, start=1):
            loop.call_at(start + at, box.on_deliver, session, n, _receipt_pdu(n))
        loop.run_until_complete(asyncio.sleep(max(arrivals) + HOLD + 0.5))
        return [(at - start, batch) for at, batch in events.batches], session
    finally:
        loop.close()


@pytest.fixture(autouse=True)
def _slow_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbound, "FLUSH_DELAY", QUIET)
    monkeypatch.setattr(inbound, "FLUSH_HOLD", HOLD)


def test_receipts_that_keep_coming_are_one_batch() -> None:
    # one every fifth of the quiet time: cut QUIET after the first, as before, they were two batches
    arrivals = [i * QUIET / 5 for i in range(10)]
    batches, session = _gather(arrivals)
    assert [len(batch) for _, batch in batches] == [10]
    assert [r.upstream_id for r in batches[0][1]] == [f"{n:08X}" for n in range(1, 11)]
    assert batches[0][0] >= arrivals[-1] + QUIET  # handed over once the SMSC went quiet
    assert sorted(session.answered) == list(range(1, 11))  # each answered, once stored


def test_a_lone_receipt_is_handed_over_once_the_smsc_is_quiet() -> None:
    batches, _ = _gather([0.0])
    assert len(batches) == 1
    assert QUIET <= batches[0][0] < HOLD  # not held to the limit when nothing else comes


def test_an_smsc_that_never_pauses_waits_at_most_the_hold_for_its_answers() -> None:
    arrivals = [i * QUIET / 5 for i in range(60)]  # 0.6 s of receipts, one every 10 ms
    batches, session = _gather(arrivals)
    assert sum(len(batch) for _, batch in batches) == 60
    assert len(batches) >= 2
    # the first batch was cut at the hold, not when the stream ended
    assert HOLD <= batches[0][0] < arrivals[-1]
    assert len(batches[0][1]) < 60
    assert sorted(session.answered) == list(range(1, 61))


def test_a_batch_is_handed_over_once_it_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbound, "FLUSH_SIZE", 10)
    arrivals = [i * QUIET / 5 for i in range(25)]
    batches, session = _gather(arrivals)
    assert [len(batch) for _, batch in batches] == [10, 10, 5]
    assert batches[0][0] < arrivals[10]  # at the tenth, not when the stream paused
    assert sorted(session.answered) == list(range(1, 26))
