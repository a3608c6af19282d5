"""The sim connector through the dispatcher over a real SQLite ledger.

The ledger's own state machine (leases, answers, receipts) is checked by the
ledger contract, tests/ledger_contract.py, for every backend.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time

import pandas as pd

from ftpbatch import codes
from ftpbatch.models import Receipt, SubmitResult
from ftpbatch.dispatch.dispatcher import Dispatcher
from ftpbatch.dispatch.sim import SimConnector
from ftpbatch.throttle import TokenBucket
from ftpbatch.ledger import Ledger
from ftpbatch.report.files import Counts
from tests.ledger_contract import new_batch, statuses

NOW = dt.datetime.now(dt.timezone.utc)


def test_dispatcher_with_sim_delivers_everything(ledger: Ledger):
    seq = new_batch(ledger, 500)
    connector = SimConnector(receipt_delay=0.05, failure_ratio=0.1, seed=7)
    dispatcher = Dispatcher(ledger, connector, "node")
    dispatcher.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            counts = Counts.tally(ledger.status_counts(seq))
            if counts.delivered + counts.failed == 500:
                break
            time.sleep(0.05)
    finally:
        dispatcher.stop()
    counts = Counts.tally(ledger.status_counts(seq))
    assert counts.delivered + counts.failed == 500
    assert 20 <= counts.failed <= 80  # ~10 % simulated failures
    frame = pd.concat(ledger.report_frames(seq))
    assert frame["upstream_id"].is_unique


class _TimedSim(SimConnector):
    """The sim connector, noting when each message was handed to it."""

    def __init__(self) -> None:
        super().__init__(receipt_delay=0.0)
        self.handed: list[float] = []

    def submit(self, messages) -> None:
        now = time.monotonic()
        self.handed.extend(now for _ in messages)
        super().submit(messages)


def test_product_tps_limits_the_send_rate(ledger: Ledger):
    ledger.update_product("acme", tps=50.0)
    seq = new_batch(ledger, 100)
    connector = _TimedSim()
    dispatcher = Dispatcher(ledger, connector, "node")
    started = time.monotonic()
    dispatcher.start()
    try:
        while Counts.tally(ledger.status_counts(seq)).queued and time.monotonic() - started < 10:
            time.sleep(0.02)
    finally:
        dispatcher.stop()
    # every message went out ...
    assert len(connector.handed) == 100 and Counts.tally(ledger.status_counts(seq)).queued == 0
    # ... at 50/s after a burst of 50: the last one ~1 s after the first, and
    # never more than burst + rate * t within t of the first
    first = connector.handed[0]
    assert connector.handed[-1] - first >= 0.9
    assert sum(1 for t in connector.handed if t - first < 0.5) <= 50 + 25 + 5


def _unstarted(ledger: Ledger, window: int) -> Dispatcher:
    """A dispatcher whose threads are not running, its connector started: a lease round can be called
    directly, and the answers wait in the sink's queue."""
    connector = SimConnector(receipt_delay=60.0, window=window)
    dispatcher = Dispatcher(ledger, connector, "node")
    connector.start(dispatcher)
    return dispatcher


def test_a_lease_round_ends_once_the_throughput_limit_is_spent(ledger: Ledger):
    """The tokens that trickle in while a round goes on are not leased one turn after another.

    They were: a round at 5,000 msg/s ran until the room (two windows, two
    seconds at that rate) was full, and the sink, which refills after each
    write, held every answer and receipt meanwhile (the counts of a batch
    sent at 5,000 msg/s moved every 2-4 s instead of every second).
    """
    ledger.update_product("acme", tps=1000.0)
    new_batch(ledger, 3000)
    dispatcher = _unstarted(ledger, window=5000)
    looks = itertools.count()
    # each look at the bucket is 2 ms after the one before: two more tokens every time
    dispatcher._product_buckets["acme"] = TokenBucket(1000.0, clock=lambda: next(looks) * 0.002)
    try:
        assert dispatcher._feed_once(time.time()) == 1000  # the second's burst, and no more
        assert dispatcher.in_flight == 1000
    finally:
        dispatcher.connector.stop()


def test_a_lease_round_fills_the_room_a_window_at_a_time_when_nothing_limits_it(ledger: Ledger):
    new_batch(ledger, 1000)
    dispatcher = _unstarted(ledger, window=100)
    try:
        # two windows: one on the wire, one handed over (max_in_flight)
        assert dispatcher._feed_once(time.time()) == 200 == dispatcher.max_in_flight
        assert dispatcher.in_flight == 200
    finally:
        dispatcher.connector.stop()


def test_token_bucket_rate():
    bucket = TokenBucket(10, burst=10)
    assert bucket.available() == 10
    bucket.take(10)
    assert bucket.available() == 0
    assert 0.05 < bucket.wait_time(1) <= 0.1 + 1e-6
    assert TokenBucket(0).unlimited


def test_receipts_that_never_match_are_dropped_and_counted_in_status_and_metrics(ledger: Ledger):
    from prometheus_client import CollectorRegistry, generate_latest

    from ftpbatch.ops.metrics import LedgerCollector
    from ftpbatch.ops.status import ledger_status

    seq = new_batch(ledger, 1)
    (message,) = ledger.lease("node", "acme", 1, time.time(), 60)
    assert ledger.record_receipts([Receipt("sim", "ghost", codes.DELIVERED, NOW),
                                   Receipt("sim", "late", codes.DELIVERED, NOW)]) == 2
    assert ledger.inbound.unmatched_receipts() == {"parked": 2, "never_matched": 0}
    ledger.record_results("sim", [SubmitResult(message.message_id, message.attempt, upstream_id="late")])
    assert statuses(ledger, seq) == {"004": 1}  # the parked one found its message
    now = time.time()
    assert ledger.inbound.retry_parked(now, expire_after=3600) == (0, 0)  # "ghost" still waits
    assert ledger.inbound.unmatched_receipts() == {"parked": 1, "never_matched": 0}
    assert ledger.inbound.retry_parked(now + 7200, expire_after=3600) == (0, 1)  # given up on, and counted
    assert ledger.inbound.unmatched_receipts() == {"parked": 0, "never_matched": 1}
    assert ledger_status(ledger)["receipts"]["never_matched"] == 1
    registry = CollectorRegistry()
    registry.register(LedgerCollector(ledger, cache_seconds=0))
    assert 'ftpbatch_receipts_unmatched{state="never_matched"} 1.0' in generate_latest(registry).decode()
