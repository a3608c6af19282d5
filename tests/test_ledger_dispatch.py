"""The dispatch state machine in a real SQLite ledger, and the sim connector through the dispatcher."""

from __future__ import annotations

import datetime as dt
import time

import pandas as pd

from ftpbatch import codes
from ftpbatch.models import Receipt, SubmitResult
from ftpbatch.dispatch.dispatcher import Dispatcher
from ftpbatch.dispatch.sim import SimConnector
from ftpbatch.throttle import TokenBucket
from ftpbatch.ledger import Ledger
from ftpbatch.report.files import Counts

NOW = dt.datetime.now(dt.timezone.utc)


def rows(n: int, status: str = codes.QUEUED, start: int = 1) -> pd.DataFrame:
    """A frame shaped like the rules stage's output."""
    return pd.DataFrame(
        {
            "row": range(start, start + n),
            "destination": [f"4477009{i:05d}" for i in range(start, start + n)],
            "text": [f"message {i}" for i in range(start, start + n)],
            "sender": [None] * n,
            "climsgid": [f"c{i}" for i in range(start, start + n)],
            "encoding": ["gsm7"] * n,
            "parts": [1] * n,
            "status": [status] * n,
            "error_code": [None] * n,
            "error_text": [None] * n,
            "not_before": pd.Series([pd.NaT] * n, dtype="datetime64[ns, UTC]"),
            "validity_minutes": pd.Series([None] * n, dtype="Int64"),
        }
    )


def new_batch(ledger: Ledger, n: int) -> int:
    batch = ledger.record_claim(f"01BATCH{n:019d}", "acme", "f.csv", "/spool/f.csv", "ftp", time.time())
    ledger.start_processing(batch.seq)
    ledger.insert_messages(batch.seq, "acme", rows(n))
    ledger.finish_intake(batch.seq, n, None)
    return batch.seq


def statuses(ledger: Ledger, seq: int) -> dict[str, int]:
    return {t.status: t.messages for t in ledger.status_counts(seq)}


def test_lease_takes_due_messages_once(ledger: Ledger):
    seq = new_batch(ledger, 5)
    first = ledger.lease("node", "acme", 3, time.time(), 60)
    second = ledger.lease("node", "acme", 10, time.time(), 60)
    assert [m.message_id for m in first] == [1, 2, 3]
    assert [m.message_id for m in second] == [4, 5]
    assert ledger.lease("node", "acme", 10, time.time(), 60) == []
    assert all(m.attempt == 1 for m in first + second)
    assert statuses(ledger, seq) == {"002": 5}


def test_stale_or_repeated_answers_change_nothing(ledger: Ledger):
    seq = new_batch(ledger, 1)
    (message,) = ledger.lease("node", "acme", 1, time.time(), 60)
    ledger.record_results("sim", [SubmitResult(message.message_id, message.attempt, upstream_id="u1")])
    # a late duplicate answer with another id, and one for an older attempt
    ledger.record_results("sim", [SubmitResult(message.message_id, message.attempt, upstream_id="u2")])
    ledger.record_results("sim", [SubmitResult(message.message_id, message.attempt - 1, error_code="105")])
    frame = next(ledger.report_frames(seq))
    assert frame.loc[0, "upstream_id"] == "u1"
    assert frame.loc[0, "status"] == "003"
    # a receipt, then the same receipt again
    receipt = Receipt("sim", "u1", codes.DELIVERED, NOW)
    ledger.record_receipts([receipt])
    ledger.record_receipts([Receipt("sim", "u1", codes.UNDELIVERABLE, NOW)])
    assert statuses(ledger, seq) == {"004": 1}


def test_a_window_of_answers_and_receipts_in_one_call_each(ledger: Ledger):
    seq = new_batch(ledger, 2500)  # more than one statement's worth of rows
    messages = ledger.lease("node", "acme", 2500, time.time(), 60)
    ledger.record_results("sim", [SubmitResult(m.message_id, m.attempt, upstream_id=f"u{m.message_id}") for m in messages])
    assert statuses(ledger, seq) == {"003": 2500}
    receipts = [Receipt("sim", f"u{m.message_id}", codes.DELIVERED, NOW) for m in messages[:2000]]
    # the same message twice in one call: the first receipt decides, as when they come one by one
    receipts.append(Receipt("sim", f"u{messages[0].message_id}", codes.UNDELIVERABLE, NOW, "late contradiction"))
    receipts += [Receipt("sim", f"u{m.message_id}", codes.UNDELIVERABLE, NOW, "absent subscriber") for m in messages[2000:]]
    assert ledger.record_receipts(receipts) == 0
    assert statuses(ledger, seq) == {"004": 2000, "007": 500}
    frame = pd.concat(ledger.report_frames(seq))
    assert frame.loc[frame.row_no == 1, "error_text"].isna().all()
    assert (frame.loc[frame.row_no > 2000, "error_text"] == "absent subscriber").all()
    assert (frame.upstream_id == "u" + frame.row_no.astype(str)).all()  # every answer reached its own row


def test_one_call_with_open_final_and_unknown_receipts_parks_only_the_unknown(ledger: Ledger):
    seq = new_batch(ledger, 3)
    a, b, c = ledger.lease("node", "acme", 3, time.time(), 60)
    ledger.record_results("sim", [SubmitResult(a.message_id, 1, upstream_id="ua"), SubmitResult(b.message_id, 1, upstream_id="ub")])
    ledger.record_receipts([Receipt("sim", "ub", codes.DELIVERED, NOW)])
    parked = ledger.record_receipts([
        Receipt("sim", "ua", codes.UNDELIVERABLE, NOW, "absent"),  # open: applied
        Receipt("sim", "ub", codes.UNDELIVERABLE, NOW, "too late"),  # already final: ignored, not parked
        Receipt("sim", "uc", codes.DELIVERED, NOW),  # its submit answer is still to come: parked
    ])
    assert parked == 1
    assert statuses(ledger, seq) == {"007": 1, "004": 1, "002": 1}
    ledger.record_results("sim", [SubmitResult(c.message_id, 1, upstream_id="uc")])
    assert statuses(ledger, seq) == {"007": 1, "004": 2}


def test_answers_and_receipts_in_one_call_apply_answers_first(ledger: Ledger):
    seq = new_batch(ledger, 2)
    a, b = ledger.lease("node", "acme", 2, time.time(), 60)
    parked = ledger.record_answers(
        "sim",
        [SubmitResult(a.message_id, 1, upstream_id="ua"), SubmitResult(b.message_id, 1, upstream_id="ub")],
        [Receipt("sim", "ua", codes.DELIVERED, NOW), Receipt("sim", "ux", codes.DELIVERED, NOW)],
    )
    assert parked == 1  # "ux" belongs to no message yet; "ua" found the answer given in the same call
    assert statuses(ledger, seq) == {"004": 1, "003": 1}


def test_receipt_before_submit_answer_is_parked_then_applied(ledger: Ledger):
    seq = new_batch(ledger, 1)
    (message,) = ledger.lease("node", "acme", 1, time.time(), 60)
    assert ledger.record_receipts([Receipt("sim", "early", codes.UNDELIVERABLE, NOW, "absent subscriber")]) == 1
    assert statuses(ledger, seq) == {"002": 1}
    ledger.record_results("sim", [SubmitResult(message.message_id, message.attempt, upstream_id="early")])
    frame = next(ledger.report_frames(seq))
    assert frame.loc[0, "status"] == "007"
    assert frame.loc[0, "error_text"] == "absent subscriber"


def test_expired_lease_is_sent_again_and_flagged_possible_duplicate(ledger: Ledger):
    seq = new_batch(ledger, 3)
    now = time.time()
    leased = ledger.lease("crashed-node", "acme", 2, now, lease_seconds=5)
    assert len(leased) == 2
    # before expiry nobody else gets them; after it, they come back flagged
    assert [m.message_id for m in ledger.lease("node-b", "acme", 10, now + 1, 60)] == [3]
    again = ledger.lease("node-b", "acme", 10, now + 10, 60)
    assert [m.message_id for m in again] == [1, 2]
    assert [m.attempt for m in again] == [2, 2]
    counts = Counts.tally(ledger.status_counts(seq))
    assert counts.possible_duplicates == 2
    # the crashed node's late answer (attempt 1) is ignored
    ledger.record_results("sim", [SubmitResult(1, 1, upstream_id="late")])
    assert next(ledger.report_frames(seq)).loc[0, "upstream_id"] is None


def test_restarted_node_resumes_its_own_leases_at_once(ledger: Ledger):
    new_batch(ledger, 2)
    ledger.lease("node-a", "acme", 2, time.time(), lease_seconds=3600)
    assert ledger.expire_leases_of("node-a") == 2
    again = ledger.lease("node-a", "acme", 10, time.time(), 60)
    assert len(again) == 2


def test_retry_answer_returns_message_to_queue_without_duplicate_flag(ledger: Ledger):
    seq = new_batch(ledger, 1)
    (message,) = ledger.lease("node", "acme", 1, time.time(), 60)
    ledger.record_results("sim", [SubmitResult(message.message_id, message.attempt, retry=True)])
    (again,) = ledger.lease("node", "acme", 1, time.time(), 60)
    assert again.attempt == 2
    assert Counts.tally(ledger.status_counts(seq)).possible_duplicates == 0


def test_overdue_receipts_stop_holding_the_batch_open(ledger: Ledger):
    ledger.receipt_timeout = 0.0
    seq = new_batch(ledger, 2)
    leased = ledger.lease("node", "acme", 2, time.time(), 60)
    ledger.record_results("sim", [SubmitResult(m.message_id, m.attempt, upstream_id=f"u{m.message_id}") for m in leased])
    assert Counts.tally(ledger.status_counts(seq)).open == 2
    assert ledger.time_out_receipts(time.time() + 1) == 2
    counts = Counts.tally(ledger.status_counts(seq))
    assert counts.open == 0 and counts.receipt_timeouts == 2 and counts.submitted == 2


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
