"""The ledger contract: one suite every ledger backend must pass (huey's StorageTests is the model).

A backend's test module subclasses :class:`LedgerContract` and provides the
``open_ledger`` fixture: a function that opens the backend's ledger (the
same store on every call within one test, as a second node or a restarted
process would see it) with a given receipt timeout, and closes what it
opened when the test ends. The tests speak only
:class:`~ftpbatch.ledger.protocol.LedgerProtocol`, never SQL or the
backend's internals, so the SQLite ledger (tests/test_ledger_contract.py)
and the PostgreSQL one (multi-node, DESIGN.md §12) are held to the same
behaviour. Message ids are compared with each other, never with literal
numbers: a backend may number them as it likes, in increasing order.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Callable, Sequence

import pandas as pd
import pytest

from ftpbatch import codes
from ftpbatch.errors import InvalidSetting, LedgerError, NotFound, ProductError
from ftpbatch.ledger.protocol import LedgerProtocol
from ftpbatch.ledger.records import CallbackOutcome
from ftpbatch.models import COMPLETE, DISPATCHING, PROCESSING, RECEIVED, REJECTED, MoMessage, Product, QueryOutcome
from ftpbatch.models import AcceptedRun, OutboundMessage, Receipt, ReceiptRun, SubmitResult

NOW = dt.datetime.now(dt.timezone.utc)
#: open_ledger(receipt_timeout=3600.0) -> the backend's ledger
OpenLedger = Callable[..., LedgerProtocol]


def rows(n: int, status: str = codes.QUEUED, start: int = 1, not_before: pd.Timestamp | None = None) -> pd.DataFrame:
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
            "not_before": pd.Series([not_before if not_before is not None else pd.NaT] * n, dtype="datetime64[ns, UTC]"),
            "validity_minutes": pd.Series([None] * n, dtype="Int64"),
        }
    )


def claim(ledger: LedgerProtocol, name: str = "f.csv", product: str = "acme") -> int:
    batch = ledger.record_claim(f"01{name.upper():0>24}"[:26], product, name, f"/spool/{name}", "ftp", time.time())
    return batch.seq


def new_batch(ledger: LedgerProtocol, n: int, name: str = "f.csv", product: str = "acme") -> int:
    seq = claim(ledger, name, product)
    ledger.start_processing(seq)
    ledger.insert_messages(seq, product, rows(n))
    ledger.finish_intake(seq, n, None)
    return seq


def statuses(ledger: LedgerProtocol, seq: int) -> dict[str, int]:
    tally: dict[str, int] = {}
    for t in ledger.status_counts(seq):
        tally[t.status] = tally.get(t.status, 0) + t.messages
    return tally


def possible_duplicates(ledger: LedgerProtocol, seq: int) -> int:
    return sum(t.possible_duplicates for t in ledger.status_counts(seq))


def submit_all(ledger: LedgerProtocol, leased: Sequence[OutboundMessage], account: str = "sim") -> None:
    """Every leased message accepted upstream, as ``u<climsgid>``."""
    ledger.record_results(account, [SubmitResult(m.message_id, m.attempt, upstream_id=f"u{m.reference}") for m in leased])


class LedgerContract:
    """Subclass as ``Test<Backend>Ledger`` and provide the ``open_ledger`` fixture."""

    @pytest.fixture
    def open_ledger(self) -> OpenLedger:
        raise NotImplementedError("a backend's test class provides open_ledger")

    @pytest.fixture
    def ledger(self, open_ledger: OpenLedger) -> LedgerProtocol:
        """A ledger with one product, ``acme``."""
        ledger = open_ledger(receipt_timeout=3600.0)
        ledger.add_product(Product("acme", "x"))
        return ledger

    # --- products ---------------------------------------------------------
    def test_products_are_stored_listed_and_changed(self, ledger: LedgerProtocol) -> None:
        ledger.add_product(Product("beta", "hash", sender="Beta", tps=5.0, require_tls=True))
        assert [p.name for p in ledger.list_products()] == ["acme", "beta"]
        beta = ledger.get_product("beta")
        assert beta is not None and beta.sender == "Beta" and beta.tps == 5.0 and beta.require_tls
        changed = ledger.update_product("beta", tps=9.0, enabled=False)
        assert changed.tps == 9.0 and not changed.enabled
        assert ledger.get_product("nobody") is None

    def test_product_refusals_change_nothing(self, ledger: LedgerProtocol) -> None:
        with pytest.raises(ProductError):
            ledger.add_product(Product("acme", "other"))
        with pytest.raises(NotFound):
            ledger.update_product("nobody", tps=1.0)
        with pytest.raises(InvalidSetting):
            ledger.update_product("acme", max_parts=0)
        product = ledger.get_product("acme")
        assert product is not None and product.password_hash == "x" and product.max_parts == 6

    # --- batches ------------------------------------------------------------
    def test_a_claim_is_recorded_once(self, ledger: LedgerProtocol) -> None:
        first = ledger.record_claim("01CLAIMONCE000000000000000", "acme", "a.csv", "/spool/a", "ftp", 100.0)
        again = ledger.record_claim("01CLAIMONCE000000000000000", "acme", "a.csv", "/spool/a", "ftp", 200.0)
        assert first.seq == again.seq and again.state == RECEIVED and again.received_at == 100.0
        assert ledger.get_batch("01CLAIMONCE000000000000000") == again
        assert ledger.get_batch_by_seq(first.seq).id == first.id
        assert ledger.get_batch("01NOSUCHBATCH0000000000000") is None
        with pytest.raises(LedgerError):
            ledger.get_batch_by_seq(first.seq + 1000)

    def test_batch_states_move_forward_only(self, ledger: LedgerProtocol) -> None:
        seq = claim(ledger)
        assert not ledger.complete_batch(seq)  # received: not complete
        assert ledger.start_processing(seq)
        assert ledger.get_batch_by_seq(seq).state == PROCESSING
        ledger.insert_messages(seq, "acme", rows(2))
        ledger.start_dispatching(seq)
        assert ledger.get_batch_by_seq(seq).state == DISPATCHING
        assert ledger.start_processing(seq)  # resuming an intake that did not finish
        assert not ledger.complete_batch(seq)  # the file is not read whole yet
        ledger.finish_intake(seq, 2, 3)
        batch = ledger.get_batch_by_seq(seq)
        assert (batch.state, batch.rows, batch.callback_level) == (DISPATCHING, 2, 3)
        assert not ledger.start_processing(seq)  # intake done: nothing to resume
        assert ledger.complete_batch(seq)
        assert not ledger.complete_batch(seq)
        batch = ledger.get_batch_by_seq(seq)
        assert batch.state == COMPLETE and batch.completed_at is not None
        ledger.reject_batch(seq, "201", "too late")  # a complete batch stays complete
        assert ledger.get_batch_by_seq(seq).state == COMPLETE
        assert [b.seq for b in ledger.batches_in_states([COMPLETE])] == [seq]

    def test_a_rejected_batch_sends_nothing(self, ledger: LedgerProtocol) -> None:
        seq = claim(ledger)
        ledger.start_processing(seq)
        ledger.insert_messages(seq, "acme", rows(3))
        ledger.reject_batch(seq, "104", "bad file")
        batch = ledger.get_batch_by_seq(seq)
        assert (batch.state, batch.error_code, batch.error_text) == (REJECTED, "104", "bad file")
        assert ledger.lease("node", "acme", 10, time.time(), 60) == []
        assert statuses(ledger, seq) == {codes.CANCELLED: 3}

    def test_duplicates_are_found_by_content_within_the_window(self, ledger: LedgerProtocol) -> None:
        first, second, refused = claim(ledger, "a.csv"), claim(ledger, "b.csv"), claim(ledger, "c.csv")
        for seq in (first, second, refused):
            ledger.set_file_facts(seq, "same-sha", 10)
        ledger.reject_batch(refused, "104", "bad")
        assert ledger.find_duplicate("acme", "same-sha", 0.0, first) is None
        assert ledger.find_duplicate("acme", "same-sha", 0.0, second) == ledger.get_batch_by_seq(first).id
        # rejected batches and batches received before the window do not count
        later = claim(ledger, "d.csv")
        assert ledger.find_duplicate("acme", "same-sha", 0.0, later) == ledger.get_batch_by_seq(second).id
        assert ledger.find_duplicate("acme", "same-sha", time.time() + 60, later) is None
        assert ledger.get_batch_by_seq(first).sha256 == "same-sha" and ledger.get_batch_by_seq(first).size_bytes == 10

    def test_batches_are_listed_newest_first(self, ledger: LedgerProtocol) -> None:
        ledger.add_product(Product("beta", "x"))
        a, b, c = claim(ledger, "a.csv"), claim(ledger, "b.csv", "beta"), claim(ledger, "c.csv")
        assert [x.seq for x in ledger.list_batches()] == [c, b, a]
        assert [x.seq for x in ledger.list_batches("acme", limit=1)] == [c]
        ledger.set_spool_path(a, "/spool/elsewhere")
        assert ledger.get_batch_by_seq(a).spool_path == "/spool/elsewhere"

    def test_reports_follow_every_change(self, ledger: LedgerProtocol) -> None:
        seq = new_batch(ledger, 2)
        ((pending, version),) = ledger.unreported_batches()
        assert pending == seq and not ledger.report_is_current(seq)
        ledger.mark_reported(seq, version)
        assert ledger.unreported_batches() == [] and ledger.report_is_current(seq)
        ledger.mark_reported(seq, version - 1)  # an older report never wins
        assert ledger.report_is_current(seq)
        submit_all(ledger, ledger.lease("node", "acme", 1, time.time(), 60))
        assert [s for s, _ in ledger.unreported_batches()] == [seq]

    # --- messages and reports --------------------------------------------
    def test_stored_rows_come_back_in_file_order(self, ledger: LedgerProtocol) -> None:
        seq = claim(ledger)
        ledger.start_processing(seq)
        ledger.insert_messages(seq, "acme", rows(3, start=1))
        ledger.insert_messages(seq, "acme", rows(2, status=codes.ERROR, start=4))
        ledger.insert_messages(seq, "acme", rows(1, status=codes.SCHEDULED, start=6, not_before=pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=1)))
        assert ledger.max_row(seq) == 6
        frame = pd.concat(ledger.report_frames(seq, chunk_rows=2), ignore_index=True)
        assert frame["row_no"].tolist() == [1, 2, 3, 4, 5, 6]
        assert frame["climsgid"].tolist() == ["c1", "c2", "c3", "c4", "c5", "c6"]
        assert frame["status"].tolist() == ["002"] * 3 + ["005"] * 2 + ["011"]
        assert statuses(ledger, seq) == {"002": 3, "005": 2, "011": 1}
        assert ledger.max_row(claim(ledger, "empty.csv")) == 0

    def test_cancel_takes_only_what_is_still_pending(self, ledger: LedgerProtocol) -> None:
        seq = new_batch(ledger, 4)
        submit_all(ledger, ledger.lease("node", "acme", 1, time.time(), 60))
        assert ledger.cancel_pending(seq) == 3
        assert statuses(ledger, seq) == {codes.SUBMITTED: 1, codes.CANCELLED: 3}
        assert ledger.cancel_pending(seq) == 0

    def test_a_message_in_flight_when_its_batch_is_cancelled_keeps_its_answer(self, ledger: LedgerProtocol) -> None:
        seq = new_batch(ledger, 6)
        now = time.time()
        in_flight = ledger.lease("node", "acme", 3, now, 60)  # handed to the SMSC, no answer yet
        expiring = ledger.lease("dead-node", "acme", 1, now, 0.5)  # its node died: the lease runs out
        assert ledger.cancel_pending(seq) == 6
        # pending until their answers come (the batch cannot complete meanwhile)
        assert statuses(ledger, seq) == {codes.QUEUED: 4, codes.CANCELLED: 2}
        ledger.record_results("sim", [
            SubmitResult(in_flight[0].message_id, in_flight[0].attempt, upstream_id="u-sent"),
            SubmitResult(in_flight[1].message_id, in_flight[1].attempt, error_code=codes.E_DESTINATION, error_text="bad"),
            SubmitResult(in_flight[2].message_id, in_flight[2].attempt, error_text="link lost", retry=True),
        ])
        time.sleep(0.6)  # the dead node's lease is over
        # sent after all: submitted (and its receipt applies); refused: failed; handed back: cancelled for good
        assert statuses(ledger, seq) == {codes.SUBMITTED: 1, codes.ERROR: 1, codes.CANCELLED: 4}
        assert ledger.record_receipts([Receipt("sim", "u-sent", codes.DELIVERED, NOW)]) == 0
        assert statuses(ledger, seq) == {codes.DELIVERED: 1, codes.ERROR: 1, codes.CANCELLED: 4}
        frame = next(ledger.report_frames(seq))
        sent = frame[frame["upstream_id"] == "u-sent"].iloc[0]
        assert sent["error_text"] is None or pd.isna(sent["error_text"])
        # nothing of the batch is leased again
        assert ledger.lease("node", "acme", 10, time.time() + 120, 60) == []
        assert expiring and expiring[0].message_id not in {m.message_id for m in in_flight}

    # --- leases -----------------------------------------------------------
    def test_lease_takes_due_messages_once(self, ledger: LedgerProtocol) -> None:
        seq = new_batch(ledger, 5)
        first = ledger.lease("node", "acme", 3, time.time(), 60)
        second = ledger.lease("node", "acme", 10, time.time(), 60)
        assert [m.reference for m in first + second] == ["c1", "c2", "c3", "c4", "c5"]
        ids = [m.message_id for m in first + second]
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert ledger.lease("node", "acme", 10, time.time(), 60) == []
        assert all(m.attempt == 1 and m.product == "acme" for m in first + second)
        assert (first[0].destination, first[0].text, first[0].encoding, first[0].parts) == ("447700900001", "message 1", "gsm7", 1)
        assert statuses(ledger, seq) == {"002": 5}

    def test_scheduled_messages_wait_for_their_time(self, ledger: LedgerProtocol) -> None:
        seq = claim(ledger)
        at = pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=10)
        ledger.insert_messages(seq, "acme", rows(2, status=codes.SCHEDULED, not_before=at))
        assert ledger.lease("node", "acme", 10, time.time(), 60) == []
        assert len(ledger.lease("node", "acme", 10, at.timestamp() + 1, 60)) == 2

    def test_leases_are_per_product(self, ledger: LedgerProtocol) -> None:
        ledger.add_product(Product("beta", "x"))
        new_batch(ledger, 2, "a.csv", "acme")
        new_batch(ledger, 3, "b.csv", "beta")
        assert len(ledger.lease("node", "beta", 10, time.time(), 60)) == 3
        assert [m.product for m in ledger.lease("node", "acme", 10, time.time(), 60)] == ["acme", "acme"]

    def test_expired_lease_is_sent_again_and_flagged_possible_duplicate(self, ledger: LedgerProtocol) -> None:
        seq = new_batch(ledger, 3)
        now = time.time()
        leased = ledger.lease("crashed-node", "acme", 2, now, lease_seconds=5)
        assert len(leased) == 2
        # before expiry nobody else gets them; after it, they come back flagged
        assert [m.reference for m in ledger.lease("node-b", "acme", 10, now + 1, 60)] == ["c3"]
        again = ledger.lease("node-b", "acme", 10, now + 10, 60)
        assert [m.message_id for m in again] == [m.message_id for m in leased]
        assert [m.attempt for m in again] == [2, 2]
        assert possible_duplicates(ledger, seq) == 2
        # the crashed node's late answer (attempt 1) is ignored
        ledger.record_results("sim", [SubmitResult(leased[0].message_id, 1, upstream_id="late")])
        assert next(ledger.report_frames(seq)).loc[0, "upstream_id"] is None

    def test_restarted_node_resumes_its_own_leases_at_once(self, ledger: LedgerProtocol, open_ledger: OpenLedger) -> None:
        new_batch(ledger, 3)
        ledger.lease("node-a", "acme", 2, time.time(), lease_seconds=3600)
        ledger.lease("node-b", "acme", 1, time.time(), lease_seconds=3600)
        restarted = open_ledger()
        assert restarted.expire_leases_of("node-a") == 2
        assert len(restarted.lease("node-a", "acme", 10, time.time(), 60)) == 2  # node-b's lease still holds

    # --- answers and receipts ----------------------------------------------
    def test_stale_or_repeated_answers_change_nothing(self, ledger: LedgerProtocol) -> None:
        seq = new_batch(ledger, 1)
        (message,) = ledger.lease("node", "acme", 1, time.time(), 60)
        ledger.record_results("sim", [SubmitResult(message.message_id, message.attempt, upstream_id="u1")])
        # a late duplicate answer with another id, and one for an older attempt
        ledger.record_results("sim", [SubmitResult(message.message_id, message.attempt, upstream_id="u2")])
        ledger.record_results("sim", [SubmitResult(message.message_id, message.attempt - 1, error_code="105")])
        frame = next(ledger.report_frames(seq))
        assert frame.loc[0, "upstream_id"] == "u1"
        assert frame.loc[0, "account"] == "sim"
        assert frame.loc[0, "status"] == "003"
        # a receipt, then a contradicting one
        ledger.record_receipts([Receipt("sim", "u1", codes.DELIVERED, NOW)])
        ledger.record_receipts([Receipt("sim", "u1", codes.UNDELIVERABLE, NOW)])
        assert statuses(ledger, seq) == {"004": 1}

    def test_receipts_match_on_account_and_upstream_id(self, ledger: LedgerProtocol) -> None:
        seq = new_batch(ledger, 1)
        (message,) = ledger.lease("node", "acme", 1, time.time(), 60)
        ledger.record_results("smsc-a", [SubmitResult(message.message_id, 1, upstream_id="same")])
        assert ledger.record_receipts([Receipt("smsc-b", "same", codes.DELIVERED, NOW)]) == 1  # another SMSC's id
        assert statuses(ledger, seq) == {"003": 1}
        assert ledger.record_receipts([Receipt("smsc-a", "same", codes.DELIVERED, NOW)]) == 0
        assert statuses(ledger, seq) == {"004": 1}

    def test_failed_submits_are_final_with_their_code(self, ledger: LedgerProtocol) -> None:
        seq = new_batch(ledger, 2)
        a, b = ledger.lease("node", "acme", 2, time.time(), 60)
        ledger.record_results("sim", [SubmitResult(a.message_id, 1, error_code=codes.ROUTING_ERROR, error_text="no route"),
                                      SubmitResult(b.message_id, 1, error_code="105", error_text="throttled out")])
        frame = next(ledger.report_frames(seq))
        assert frame["status"].tolist() == [codes.ROUTING_ERROR, codes.ERROR]
        assert frame["error_code"].tolist() == [codes.ROUTING_ERROR, "105"]
        assert frame["error_text"].tolist() == ["no route", "throttled out"]
        assert ledger.lease("node", "acme", 10, time.time(), 60) == []

    def test_a_window_of_answers_and_receipts_in_one_call_each(self, ledger: LedgerProtocol) -> None:
        seq = new_batch(ledger, 2500)  # more than one statement's worth of rows
        messages = ledger.lease("node", "acme", 2500, time.time(), 60)
        ledger.record_results("sim", [SubmitResult(m.message_id, m.attempt, upstream_id=f"u{m.reference}") for m in messages])
        assert statuses(ledger, seq) == {"003": 2500}
        receipts = [Receipt("sim", f"u{m.reference}", codes.DELIVERED, NOW) for m in messages[:2000]]
        # the same message twice in one call: the first receipt decides, as when they come one by one
        receipts.append(Receipt("sim", f"u{messages[0].reference}", codes.UNDELIVERABLE, NOW, "late contradiction"))
        receipts += [Receipt("sim", f"u{m.reference}", codes.UNDELIVERABLE, NOW, "absent subscriber") for m in messages[2000:]]
        assert ledger.record_receipts(receipts) == 0
        assert statuses(ledger, seq) == {"004": 2000, "007": 500}
        frame = pd.concat(ledger.report_frames(seq))
        assert frame.loc[frame.row_no == 1, "error_text"].isna().all()
        assert (frame.loc[frame.row_no > 2000, "error_text"] == "absent subscriber").all()
        assert (frame.upstream_id == "uc" + frame.row_no.astype(str)).all()  # every answer reached its own row

    def test_one_call_with_open_final_and_unknown_receipts_parks_only_the_unknown(self, ledger: LedgerProtocol) -> None:
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

    def test_answers_and_receipts_in_one_call_apply_answers_first(self, ledger: LedgerProtocol) -> None:
        seq = new_batch(ledger, 2)
        a, b = ledger.lease("node", "acme", 2, time.time(), 60)
        parked = ledger.record_answers(
            "sim",
            [SubmitResult(a.message_id, 1, upstream_id="ua"), SubmitResult(b.message_id, 1, upstream_id="ub")],
            [Receipt("sim", "ua", codes.DELIVERED, NOW), Receipt("sim", "ux", codes.DELIVERED, NOW)],
        )
        assert parked == 1  # "ux" belongs to no message yet; "ua" found the answer given in the same call
        assert statuses(ledger, seq) == {"004": 1, "003": 1}

    def test_receipt_before_submit_answer_is_parked_then_applied(self, ledger: LedgerProtocol) -> None:
        seq = new_batch(ledger, 1)
        (message,) = ledger.lease("node", "acme", 1, time.time(), 60)
        assert ledger.record_receipts([Receipt("sim", "early", codes.UNDELIVERABLE, NOW, "absent subscriber")]) == 1
        assert statuses(ledger, seq) == {"002": 1}
        ledger.record_results("sim", [SubmitResult(message.message_id, message.attempt, upstream_id="early")])
        frame = next(ledger.report_frames(seq))
        assert frame.loc[0, "status"] == "007"
        assert frame.loc[0, "error_text"] == "absent subscriber"

    def test_a_run_of_answers_is_applied_as_its_answers_one_by_one(self, ledger: LedgerProtocol) -> None:
        """models.AcceptedRun: the ledger's ranged statement makes what the same results one by one make."""
        seq = new_batch(ledger, 8)
        leased = ledger.lease("node", "acme", 7, time.time(), 60)
        first, attempt = leased[0].message_id, leased[0].attempt
        assert [m.message_id for m in leased] == list(range(first, first + 7))  # one lease: consecutive ids
        ledger.record_results("sim", AcceptedRun(first, 5, attempt + 1, "run-", 100))  # a stale attempt
        assert statuses(ledger, seq) == {codes.QUEUED: 8}
        # the receipt of the run's third message overtakes the run: parked, then applied with it
        assert ledger.record_receipts([Receipt("sim", "run-102", codes.UNDELIVERABLE, NOW, "absent")]) == 1
        ledger.cancel_pending(seq)  # the seven in flight keep their answers; the eighth is cancelled
        ledger.mark_reported(seq, ledger.unreported_batches()[0][1])
        ledger.record_answers("sim", (), (), [AcceptedRun(first, 5, attempt, "run-", 100)])
        assert [s for s, _ in ledger.unreported_batches()] == [seq]  # its report follows
        assert statuses(ledger, seq) == {codes.SUBMITTED: 4, codes.UNDELIVERABLE: 1, codes.QUEUED: 2, codes.CANCELLED: 1}
        # each message got its own upstream id, and only the run's messages did
        assert ledger.record_receipts([Receipt("sim", f"run-{n}", codes.DELIVERED, NOW) for n in range(100, 106)]) == 1
        assert statuses(ledger, seq) == {codes.DELIVERED: 4, codes.UNDELIVERABLE: 1, codes.QUEUED: 2, codes.CANCELLED: 1}
        frame = next(ledger.report_frames(seq))
        upstream = [u if isinstance(u, str) else None for u in frame["upstream_id"]]
        assert upstream[:6] == ["run-100", "run-101", "run-102", "run-103", "run-104", None]
        assert pd.isna(frame["error_text"].iloc[0])  # cancelled in flight, sent after all: no cancel text
        assert frame["error_text"].iloc[2] == "absent"

    def test_a_run_of_receipts_is_applied_as_its_receipts_one_by_one(self, ledger: LedgerProtocol) -> None:
        """models.ReceiptRun: one range of the upstream-id index does what the same receipts one by one do."""
        seq = new_batch(ledger, 8)
        m = ledger.lease("node", "acme", 7, time.time(), 60)
        base = 10**11
        ledger.record_results("sim", AcceptedRun(m[0].message_id, 5, m[0].attempt, "r-", base))  # r-100000000000..4
        # sorts among the run's ids, but is longer: not one of them
        ledger.record_results("sim", [SubmitResult(m[6].message_id, m[6].attempt, f"r-{base + 1}5")])
        ledger.record_receipts([Receipt("sim", f"r-{base + 2}", codes.UNDELIVERABLE, NOW, "absent")])  # final first
        ledger.mark_reported(seq, ledger.unreported_batches()[0][1])
        # ids +5 (its message m[5] not answered yet) and +6 (no message at all) are parked
        parked = ledger.record_answers("", (), (), receipt_runs=[ReceiptRun("sim", "r-", base, 7, codes.DELIVERED, NOW)])
        assert parked == 2 and [s for s, _ in ledger.unreported_batches()] == [seq]
        assert statuses(ledger, seq) == {codes.DELIVERED: 4, codes.UNDELIVERABLE: 1, codes.SUBMITTED: 1, codes.QUEUED: 2}
        ledger.record_results("sim", [SubmitResult(m[5].message_id, m[5].attempt, f"r-{base + 5}")])
        assert statuses(ledger, seq) == {codes.DELIVERED: 5, codes.UNDELIVERABLE: 1, codes.SUBMITTED: 1, codes.QUEUED: 1}
        frame = next(ledger.report_frames(seq))
        assert frame["error_text"].iloc[2] == "absent" and frame["status"].tolist()[:7] == ["004"] * 2 + ["007"] + ["004"] * 3 + ["003"]
        # the same run again changes nothing and parks only what still has no message
        assert ledger.record_receipts(ReceiptRun("sim", "r-", base, 7, codes.UNDELIVERABLE, NOW)) == 1

    def test_retry_answer_returns_message_to_queue_without_duplicate_flag(self, ledger: LedgerProtocol) -> None:
        seq = new_batch(ledger, 1)
        (message,) = ledger.lease("node", "acme", 1, time.time(), 60)
        ledger.record_results("sim", [SubmitResult(message.message_id, message.attempt, retry=True)])
        (again,) = ledger.lease("node", "acme", 1, time.time(), 60)
        assert again.attempt == 2
        assert possible_duplicates(ledger, seq) == 0

    def test_overdue_receipts_stop_holding_the_batch_open(self, open_ledger: OpenLedger) -> None:
        ledger = open_ledger(receipt_timeout=0.0)
        ledger.add_product(Product("acme", "x"))
        assert ledger.receipt_timeout == 0.0
        seq = new_batch(ledger, 2)
        submit_all(ledger, ledger.lease("node", "acme", 2, time.time(), 60))
        assert ledger.time_out_receipts(time.time() - 60) == 0  # not overdue yet then
        assert ledger.time_out_receipts(time.time() + 1) == 2
        assert ledger.time_out_receipts(time.time() + 1) == 0
        (tally,) = ledger.status_counts(seq)
        assert (tally.status, tally.messages, tally.receipt_timeouts) == (codes.SUBMITTED, 2, 2)
        assert ledger.queue_depth()["awaiting_receipt"] == 0

    def test_may_be_finished_only_once_no_message_of_the_batch_is_open(self, open_ledger: OpenLedger) -> None:
        ledger = open_ledger(receipt_timeout=0.0)
        ledger.add_product(Product("acme", "x"))
        seq = new_batch(ledger, 3)
        assert not ledger.may_be_finished(seq, "acme")  # in its block
        leased = ledger.lease("node", "acme", 3, time.time(), 60)
        assert not ledger.may_be_finished(seq, "acme")  # leased: rows at 002
        submit_all(ledger, leased)
        ledger.record_receipts([Receipt("sim", f"u{leased[0].reference}", codes.DELIVERED, NOW)])
        assert not ledger.may_be_finished(seq, "acme")  # two await their receipts
        later = claim(ledger, "g.csv")  # another batch, scheduled: open, and no concern of the first
        at = pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=10)
        ledger.insert_messages(later, "acme", rows(1, status=codes.SCHEDULED, not_before=at))
        assert ledger.time_out_receipts(time.time() + 1) == 2
        assert ledger.may_be_finished(seq, "acme")  # the rest stopped waiting
        assert not ledger.may_be_finished(later, "acme")
        ledger.cancel_pending(later)
        assert ledger.may_be_finished(later, "acme")

    def test_counts_stay_true_while_a_big_batch_settles_in_stages(self, ledger: LedgerProtocol) -> None:
        """status_counts keeps the tallies of a batch's first rows once none can change (ledger/tallies.py).

        Each step would show a wrong count if rows still in blocks, awaiting
        their receipt, or cancelled in flight (a 006 holding its lease) were
        kept as settled.
        """
        from ftpbatch.ledger.tallies import COUNT_CHUNK_ROWS

        n = 2 * COUNT_CHUNK_ROWS + 500
        seq = new_batch(ledger, n)
        assert statuses(ledger, seq) == {codes.QUEUED: n}  # all in blocks
        first = ledger.lease("node", "acme", COUNT_CHUNK_ROWS + 100, time.time(), 60)
        submit_all(ledger, first)
        assert statuses(ledger, seq) == {codes.SUBMITTED: len(first), codes.QUEUED: n - len(first)}
        ledger.record_receipts([Receipt("sim", f"u{m.reference}", codes.DELIVERED, NOW) for m in first])
        assert statuses(ledger, seq) == {codes.DELIVERED: len(first), codes.QUEUED: n - len(first)}
        second = ledger.lease("node", "acme", COUNT_CHUNK_ROWS, time.time(), 60)
        assert statuses(ledger, seq) == {codes.DELIVERED: len(first), codes.QUEUED: n - len(first)}
        ledger.cancel_pending(seq)  # the second lease's messages are in flight: pending until answered
        left = n - len(first) - len(second)
        assert statuses(ledger, seq) == {codes.DELIVERED: len(first), codes.QUEUED: len(second), codes.CANCELLED: left}
        submit_all(ledger, second)
        assert statuses(ledger, seq) == {codes.DELIVERED: len(first), codes.SUBMITTED: len(second), codes.CANCELLED: left}
        (sent_delivered,) = [t for t in ledger.status_counts(seq) if t.status == codes.DELIVERED]
        assert (sent_delivered.sent, sent_delivered.parts) == (True, len(first))

    def test_counts_of_a_batch_still_being_read_take_in_its_later_rows(self, ledger: LedgerProtocol) -> None:
        """Rows rejected at intake are final at once; rows the intake has not stored yet are not settled."""
        from ftpbatch.ledger.tallies import COUNT_CHUNK_ROWS

        seq = claim(ledger)
        ledger.start_processing(seq)
        half = COUNT_CHUNK_ROWS + 100
        ledger.insert_messages(seq, "acme", rows(half, status=codes.ERROR))
        assert statuses(ledger, seq) == {codes.ERROR: half}
        ledger.insert_messages(seq, "acme", rows(2 * COUNT_CHUNK_ROWS, status=codes.ERROR, start=half + 1))
        ledger.finish_intake(seq, half + 2 * COUNT_CHUNK_ROWS, None)
        assert statuses(ledger, seq) == {codes.ERROR: half + 2 * COUNT_CHUNK_ROWS}

    # --- callback outbox -----------------------------------------------------
    def test_status_changes_reach_the_outbox_and_are_claimed_once(self, ledger: LedgerProtocol) -> None:
        ledger.update_product("acme", callback_url="http://127.0.0.1:9/cb", callback_level=3)
        seq = new_batch(ledger, 2)
        submit_all(ledger, ledger.lease("node", "acme", 2, time.time(), 60))
        ledger.record_receipts([Receipt("sim", "uc1", codes.DELIVERED, NOW)])
        now = time.time()
        jobs = ledger.claim_callbacks("node", 10, now, 30)
        # one per message at a time, in order: c1's 003 (its 004 waits for it) and c2's 003
        assert sorted((j.fields["cliMsgId"], j.fields["status"]) for j in jobs) == [("c1", "003"), ("c2", "003")]
        assert all(j.url == "http://127.0.0.1:9/cb" and j.fields["api_id"] == "acme" for j in jobs)
        assert ledger.claim_callbacks("node-b", 10, now, 30) == []  # leased
        ledger.record_callback_outcomes([CallbackOutcome(j.id, j.attempt, "delivered") for j in jobs], now)
        (later,) = ledger.claim_callbacks("node", 10, now, 30)
        assert (later.fields["cliMsgId"], later.fields["status"]) == ("c1", "004")
        ledger.record_callback_outcomes([CallbackOutcome(later.id, later.attempt, "retry", next_at=now + 60, error="503")], now)
        assert ledger.claim_callbacks("node", 10, now, 30) == []
        assert ledger.next_callback_due() == pytest.approx(now + 60)
        backlog = ledger.callback_backlog(now)
        assert (backlog.pending, backlog.due, backlog.delivered, backlog.given_up) == (1, 0, 2, 0)
        (again,) = ledger.claim_callbacks("node", 10, now + 61, 30)
        assert again.tries == 1
        ledger.record_callback_outcomes([CallbackOutcome(again.id, again.attempt, "failed", error="gone")], now + 61)
        assert ledger.callback_states() == {"delivered": 2, "failed": 1}
        assert ledger.callback_backlog(now).given_up == 1
        assert ledger.purge_callbacks(now + 120) == 3
        assert ledger.callback_states() == {}
        assert statuses(ledger, seq) == {"004": 1, "003": 1}

    def test_a_run_of_answers_reaches_the_outbox(self, ledger: LedgerProtocol) -> None:
        ledger.update_product("acme", callback_url="http://127.0.0.1:9/cb", callback_level=3)
        new_batch(ledger, 3)
        leased = ledger.lease("node", "acme", 2, time.time(), 60)
        ledger.record_results("sim", AcceptedRun(leased[0].message_id, 2, leased[0].attempt, "run-", 1))
        jobs = ledger.claim_callbacks("node", 10, time.time(), 30)
        assert sorted((j.fields["cliMsgId"], j.fields["status"]) for j in jobs) == [("c1", "003"), ("c2", "003")]

    def test_a_run_of_receipts_reaches_the_outbox(self, ledger: LedgerProtocol) -> None:
        ledger.update_product("acme", callback_url="http://127.0.0.1:9/cb", callback_level=2)  # final statuses only
        new_batch(ledger, 3)
        leased = ledger.lease("node", "acme", 2, time.time(), 60)
        ledger.record_results("sim", AcceptedRun(leased[0].message_id, 2, leased[0].attempt, "r-", 10))
        ledger.record_receipts(ReceiptRun("sim", "r-", 10, 2, codes.DELIVERED, NOW))
        jobs = ledger.claim_callbacks("node", 10, time.time(), 30)
        assert sorted((j.fields["cliMsgId"], j.fields["status"]) for j in jobs) == [("c1", "004"), ("c2", "004")]

    def test_callback_leases_expire_and_stale_outcomes_are_ignored(self, ledger: LedgerProtocol) -> None:
        ledger.update_product("acme", callback_url="http://127.0.0.1:9/cb", callback_level=2)
        new_batch(ledger, 1)
        (m,) = ledger.lease("node", "acme", 1, time.time(), 60)
        ledger.record_results("sim", [SubmitResult(m.message_id, 1, error_code="105")])  # final: level 2 hears it
        now = time.time()
        (job,) = ledger.claim_callbacks("crashed", 10, now, 3600)
        assert ledger.expire_callback_leases_of("crashed") == 1
        (again,) = ledger.claim_callbacks("node", 10, now, 30)
        assert again.id == job.id and again.attempt == job.attempt + 1
        ledger.record_callback_outcomes([CallbackOutcome(job.id, job.attempt, "delivered")], now)  # the old lease's
        assert ledger.callback_backlog(now).pending == 1
        ledger.record_callback_outcomes([CallbackOutcome(again.id, again.attempt, "released")], now)
        assert len(ledger.claim_callbacks("node", 10, now, 30, exclude=["acme"])) == 0
        assert len(ledger.claim_callbacks("node", 10, now, 30, only="acme")) == 1

    def test_no_callback_url_queues_nothing(self, ledger: LedgerProtocol) -> None:
        new_batch(ledger, 2)
        submit_all(ledger, ledger.lease("node", "acme", 2, time.time(), 60))
        assert ledger.claim_callbacks("node", 10, time.time(), 30) == []
        assert ledger.next_callback_due() is None

    # --- usage and operator totals ---------------------------------------
    def test_usage_and_totals_count_every_message_once(self, ledger: LedgerProtocol) -> None:
        seq = new_batch(ledger, 4)
        ledger.insert_messages(claim(ledger, "bad.csv"), "acme", rows(1, status=codes.ERROR))
        a, b = ledger.lease("node", "acme", 2, time.time(), 60)
        ledger.record_results("sim", [SubmitResult(a.message_id, 1, upstream_id="ua"), SubmitResult(b.message_id, 1, upstream_id="ub")])
        ledger.record_receipts([Receipt("sim", "ua", codes.DELIVERED, NOW), Receipt("sim", "ub", codes.UNDELIVERABLE, NOW)])
        (count,) = ledger.usage("product")
        assert (count.product, count.messages, count.parts, count.delivered, count.failed, count.rejected) == ("acme", 5, 2, 1, 1, 1)
        (by_day,) = ledger.usage("day", product="acme", since=time.time() - 3600, until=time.time() + 3600)
        assert by_day.day == int(time.time() // 86400) and by_day.messages == 5
        assert ledger.usage("day_product", since=time.time() + 3600) == []
        assert ledger.message_status_totals() == {("acme", "002"): 2, ("acme", "004"): 1, ("acme", "007"): 1, ("acme", "005"): 1}
        assert ledger.queue_depth() == {"queued": 2, "scheduled": 0, "awaiting_receipt": 0}
        assert ledger.batch_state_totals() == {("acme", DISPATCHING): 1, ("acme", RECEIVED): 1}
        assert ledger.batch_source_totals() == {("acme", "ftp"): 2}
        assert ledger.batches_in_flight() == {DISPATCHING: 1, RECEIVED: 1}
        assert ledger.products_active_since(time.time() - 60) == ["acme"]
        assert statuses(ledger, seq) == {"002": 2, "004": 1, "007": 1}

    # --- bans, counters, inbound --------------------------------------------
    def test_address_bans(self, ledger: LedgerProtocol) -> None:
        ledger.record_ban("127.0.0.9", 200.0, 5, "failed logins", 100.0)
        ledger.record_ban("127.0.0.9", 300.0, 6, "failed logins", 150.0)  # a later ban replaces the earlier
        ledger.record_ban("127.0.0.8", 120.0, 5, "failed logins", 100.0)
        assert [(b.address, b.banned_until, b.failures) for b in ledger.active_bans(110.0)] == [
            ("127.0.0.8", 120.0, 5), ("127.0.0.9", 300.0, 6)]
        assert ledger.prune_bans(130.0) == 1
        assert ledger.lift_ban("127.0.0.9") and not ledger.lift_ban("127.0.0.9")
        assert ledger.active_bans(0.0) == []

    def test_counters_add_up_across_openings(self, ledger: LedgerProtocol, open_ledger: OpenLedger) -> None:
        assert ledger.counter("logins_refused") == 0
        ledger.bump_counter("logins_refused")
        open_ledger().bump_counter("logins_refused", 4)
        assert ledger.counter("logins_refused") == 5

    def test_mo_messages_are_stored_in_order(self, ledger: LedgerProtocol) -> None:
        stored = ledger.inbound.store_mo([
            MoMessage("sim", "447700900001", "12345", "STOP", 0, NOW, b"STOP"),
            MoMessage("sim", "447700900002", "12345", "part", 8, NOW, b"\x00p", (7, 2, 1)),
        ])
        assert [m.id for m in stored] == sorted(m.id for m in stored if m.id is not None)
        back = ledger.inbound.mo_messages()
        assert [(m.text, m.concat, m.raw) for m in back] == [("STOP", None, b"STOP"), ("part", (7, 2, 1), b"\x00p")]
        assert back[0].received_at.timestamp() == pytest.approx(NOW.timestamp())
        assert [m.text for m in ledger.inbound.mo_messages(after_id=back[0].id or 0)] == ["part"]

    def test_overdue_receipts_are_queried_with_backoff_until_refused(self, ledger: LedgerProtocol) -> None:
        new_batch(ledger, 1)
        submit_all(ledger, ledger.lease("node", "acme", 1, time.time(), 60))
        now = time.time()
        inbound = ledger.inbound
        assert inbound.due_queries("sim", now, now - 60, 3600, 10, 100) == []  # submitted after the cut-off
        (query,) = inbound.due_queries("sim", now, now + 1, 3600, 10, 100)
        assert query.upstream_id == "uc1"
        assert inbound.due_queries("sim", now + 5, now + 1, 3600, 10, 100) == []  # asked lately
        assert len(inbound.due_queries("sim", now + 11, now + 1, 3600, 10, 100)) == 1
        inbound.note_query_outcomes([QueryOutcome("sim", query.message_id, "uc1", None, "ENROUTE"),
                                     QueryOutcome("sim", query.message_id, "uc1", None, "refused", refused=True)])
        assert inbound.query_refused("sim") and not inbound.query_refused("other")
        assert inbound.due_queries("sim", now + 3600, now + 1, 3600, 10, 100) == []
        assert inbound.query_tally() == {"asked": 2, "final": 0, "open": 2}

    def test_parked_receipts_are_retried_then_given_up(self, ledger: LedgerProtocol) -> None:
        seq = new_batch(ledger, 1)
        (message,) = ledger.lease("node", "acme", 1, time.time(), 60)
        assert ledger.record_receipts([Receipt("sim", "ghost", codes.DELIVERED, NOW)]) == 1
        assert ledger.inbound.unmatched_receipts() == {"parked": 1, "never_matched": 0}
        now = time.time()
        assert ledger.inbound.retry_parked(now, expire_after=3600) == (0, 0)
        assert ledger.inbound.retry_parked(now + 7200, expire_after=3600) == (0, 1)
        assert ledger.inbound.unmatched_receipts() == {"parked": 0, "never_matched": 1}
        assert statuses(ledger, seq) == {"002": 1}
        assert message.attempt == 1

    # --- opt-outs, controls, dry runs (issue 16) -------------------------------
    def test_optouts_are_kept_per_product_with_their_first_source(self, ledger: LedgerProtocol, open_ledger: OpenLedger) -> None:
        ledger.add_product(Product("beta", "x"))
        version = ledger.optouts_version("acme")
        assert ledger.add_optouts("acme", ["447700900001", "447700900002"], "ftp", now=100.0) == 2
        assert ledger.add_optouts("acme", ["447700900002", "447700900003"], "stop-reply", now=200.0) == 1
        assert ledger.add_optouts("beta", ["447700900009"], "cli") == 1
        assert ledger.list_optouts("acme") == [
            ("447700900001", 100.0, "ftp"), ("447700900002", 100.0, "ftp"), ("447700900003", 200.0, "stop-reply")]
        assert sorted(open_ledger().optout_numbers("acme")) == ["447700900001", "447700900002", "447700900003"]
        assert ledger.optouts_version("acme") > version
        changed = ledger.optouts_version("acme")
        assert ledger.remove_optouts("acme", ["447700900001", "447700900999"]) == 1
        assert ledger.optouts_version("acme") > changed
        assert ledger.optout_numbers("beta") == ["447700900009"]
        with pytest.raises(NotFound):
            ledger.add_optouts("nobody", ["447700900001"], "cli")
        with pytest.raises(ValueError):
            ledger.add_optouts("acme", ["447700900001"], "guess")

    def test_a_paused_batch_is_not_leased_until_resumed(self, ledger: LedgerProtocol, open_ledger: OpenLedger) -> None:
        paused, other = new_batch(ledger, 3, "a.csv"), new_batch(ledger, 2, "b.csv")
        (first,) = ledger.lease("node", "acme", 1, time.time(), 60)
        assert ledger.pause_batch(paused, "ftp") and not ledger.pause_batch(paused, "ftp")
        assert ledger.get_batch_by_seq(paused).paused
        # rows and blocks alike: a retry of the paused batch waits too
        ledger.record_results("sim", [SubmitResult(first.message_id, first.attempt, retry=True)])
        assert {m.reference for m in ledger.lease("node", "acme", 10, time.time(), 60)} == {"c1", "c2"}  # b.csv only
        assert ledger.lease("node", "acme", 10, time.time(), 60) == []
        assert open_ledger().resume_batch(paused, "cli") and not ledger.resume_batch(paused, "cli")
        assert not ledger.get_batch_by_seq(paused).paused
        assert sorted(m.reference for m in ledger.lease("node", "acme", 10, time.time(), 60)) == ["c1", "c2", "c3"]
        assert [(verb, source) for verb, source, _ in ledger.batch_controls(paused)] == [("pause", "ftp"), ("resume", "cli")]
        assert ledger.batch_controls(other) == []

    def test_cancel_of_a_paused_batch_leaves_the_rest_cancelled(self, ledger: LedgerProtocol) -> None:
        seq = new_batch(ledger, 4)
        submit_all(ledger, ledger.lease("node", "acme", 1, time.time(), 60))
        ledger.pause_batch(seq, "ftp")
        assert ledger.cancel_batch(seq, "ftp") == 3
        assert statuses(ledger, seq) == {codes.SUBMITTED: 1, codes.CANCELLED: 3}
        assert not ledger.get_batch_by_seq(seq).paused
        assert [verb for verb, _, _ in ledger.batch_controls(seq)] == ["pause", "cancel"]
        ledger.complete_batch(seq)
        assert not ledger.pause_batch(seq, "ftp")  # a finished batch cannot be paused

    def test_a_dry_run_is_checked_and_no_earlier_batch_for_duplicates(self, ledger: LedgerProtocol) -> None:
        check = ledger.record_claim("01DRYRUN000000000000000000", "acme", "a.csv", "/spool/a", "ftp", time.time(), dry_run=True)
        assert check.dry_run and not check.paused
        ledger.set_file_facts(check.seq, "same-sha", 10)
        assert not ledger.finish_check(check.seq, 5)  # not processing yet
        assert ledger.start_processing(check.seq)
        assert ledger.finish_check(check.seq, 5)
        done = ledger.get_batch_by_seq(check.seq)
        assert (done.state, done.rows, done.dry_run) == ("checked", 5, True) and done.completed_at is not None
        assert ledger.report_is_current(check.seq)  # intake wrote its reports
        later = claim(ledger, "b.csv")
        assert ledger.find_duplicate("acme", "same-sha", 0.0, later) is None
        assert not ledger.finish_check(later, 1)  # only dry runs are checked
        assert ledger.usage("product") == []
