"""Answers and receipts in bulk (models.AcceptedRun, models.ReceiptRun): a run reads as its items one by one,
and the simulated SMSC answers a lease's window with one. The ledger's side is in the contract tests
(ledger_contract.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from ftpbatch.dispatch.sim import SimConnector
from ftpbatch import codes
from ftpbatch.models import AcceptedRun, Receipt, ReceiptRun, SubmitResult
from tests.smsc.events import CollectingEvents
from tests.test_smpp_connector import msg


def test_a_run_reads_as_its_results_one_by_one() -> None:
    run = AcceptedRun(10, 3, 2, "sim-", 500)
    expected = [SubmitResult(10, 2, "sim-500"), SubmitResult(11, 2, "sim-501"), SubmitResult(12, 2, "sim-502")]
    assert len(run) == 3 and list(run) == expected and run.last_id == 12
    assert run[-1] == expected[-1] and run[1:] == expected[1:] and run.upstream_ids() == ["sim-500", "sim-501", "sim-502"]
    with pytest.raises(IndexError):
        run[3]
    with pytest.raises(ValueError):
        AcceptedRun(10, 0, 1, "sim-", 1)


def test_a_receipt_run_reads_as_its_receipts_one_by_one() -> None:
    at = dt.datetime(2026, 12, 6, tzinfo=dt.timezone.utc)
    run = ReceiptRun("sim", "p-", 998, 2, codes.UNDELIVERABLE, at, "absent")
    expected = [Receipt("sim", "p-998", "007", at, "absent"), Receipt("sim", "p-999", "007", at, "absent")]
    assert len(run) == 2 and list(run) == expected and run[1] == expected[1] and run[:1] == expected[:1]
    assert (run.first_upstream_id, run.last_upstream_id) == ("p-998", "p-999")
    with pytest.raises(ValueError):  # p-1000 would sort between p-100 and p-101: not a range
        ReceiptRun("sim", "p-", 998, 3, codes.DELIVERED, at)


@pytest.mark.parametrize("ids, attempts, bulk", [
    (range(7, 12), [1] * 5, True),  # one lease's window
    ([7, 8, 10, 11], [1] * 4, False),  # a gap: an expired lease taken again between others
    (range(7, 10), [1, 2, 1], False),  # mixed attempts
])
def test_the_sim_answers_a_window_of_consecutive_messages_as_one_run(ids, attempts, bulk) -> None:
    events = CollectingEvents()
    sim = SimConnector(receipt_delay=0.0)
    sim.start(events)
    submitted: list[object] = []
    real_submitted = events.submitted
    events.submitted = lambda results: (submitted.append(results), real_submitted(results))  # type: ignore[method-assign]
    try:
        messages = [msg(i) for i in ids]
        for m, attempt in zip(messages, attempts):
            m.attempt = attempt
        sim.submit(messages)
        assert events.wait_until(lambda e: len(e.results) == len(messages) and len(e.receipt_list) == len(messages), 5)
    finally:
        sim.stop()
    (answer,) = submitted
    assert isinstance(answer, AcceptedRun) is bulk
    # either way, each message its own answer, its attempt echoed, and a receipt for its upstream id
    assert [(r.message_id, r.attempt) for r in events.results] == list(zip(ids, attempts))
    upstream = [r.upstream_id for r in events.results]
    assert len(set(upstream)) == len(upstream) and sorted(r.upstream_id for r in events.receipt_list) == sorted(upstream)


@pytest.mark.parametrize("failure_ratio, bulk", [(0.0, True), (0.5, False)])
def test_the_sim_sends_a_call_s_receipts_as_one_run_when_all_are_delivered(failure_ratio, bulk) -> None:
    events = CollectingEvents()
    sim = SimConnector(receipt_delay=0.0, failure_ratio=failure_ratio, seed=3)
    sim.start(events)
    delivered: list[object] = []
    real_receipts = events.receipts
    events.receipts = lambda receipts, ack=None: (delivered.append(receipts), real_receipts(receipts, ack))  # type: ignore[method-assign]
    try:
        sim.submit([msg(i) for i in range(1, 41)])
        assert events.wait_until(lambda e: len(e.receipt_list) == 40, 5)
    finally:
        sim.stop()
    assert all(isinstance(part, ReceiptRun) is bulk for part in delivered)
    assert sorted(r.upstream_id for r in events.receipt_list) == sorted(r.upstream_id for r in events.results)
    assert {r.status for r in events.receipt_list} == ({"004"} if bulk else {"004", "007"})
