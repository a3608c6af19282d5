"""The nodes contract (tests/ledger_contract_nodes.py) run against the SQLite ledger and the PostgreSQL one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ftpbatch.ledger import Ledger
from ftpbatch.ledger.protocol import LedgerProtocol
from ftpbatch.models import OutboundMessage, Product, Receipt, SubmitResult
from tests.ledger_contract import NOW, OpenLedger, new_batch, statuses
from tests.ledger_contract_nodes import NodesContract


def _opener(location: str | Path) -> Iterator[OpenLedger]:
    opened: list[Ledger] = []

    def open_ledger(receipt_timeout: float = 3600.0) -> LedgerProtocol:
        ledger = Ledger(location, receipt_timeout=receipt_timeout)
        opened.append(ledger)
        return ledger

    yield open_ledger
    for ledger in opened:
        ledger.close()


class TestSQLiteNodes(NodesContract):
    @pytest.fixture
    def open_ledger(self, tmp_path: Path) -> Iterator[OpenLedger]:
        yield from _opener(tmp_path / "ledger.db")


class TestPostgresNodes(NodesContract):
    """On a real PostgreSQL server (tests/pg_server.py), one database per test."""

    @pytest.fixture
    def open_ledger(self, pg_url: str) -> Iterator[OpenLedger]:
        yield from _opener(pg_url)


class TestPostgresLeasesSkipLocked:
    """A node's lease never waits for another's: the rows (and blocks) one is taking are passed over.

    Node A's lease is held inside an open transaction (as while its
    statement runs); node B's lease must come back at once with other
    messages. Leasing that waited on A's locks, or took A's rows, fails here.
    """

    @pytest.fixture
    def nodes(self, pg_url: str) -> Iterator[tuple[Ledger, Ledger]]:
        a, b = Ledger(pg_url), Ledger(pg_url)
        a.add_product(Product("acme", "x"))
        yield a, b
        a.close()
        b.close()

    def _while_a_holds(self, a: Ledger, b: Ledger, now: float) -> tuple[list[OutboundMessage], list[OutboundMessage]]:
        held = threading.Event()
        release = threading.Event()
        got_a: list[OutboundMessage] = []

        def node_a() -> None:
            with a.db.transaction():  # the lease below joins it: its locks stay until we release
                got_a.extend(a.lease("node-a", "acme", 10, now, 60))
                held.set()
                release.wait(10)

        thread = threading.Thread(target=node_a)
        thread.start()
        try:
            assert held.wait(10)
            started = time.monotonic()
            got_b = b.lease("node-b", "acme", 10, now, 60)
            waited = time.monotonic() - started
        finally:
            release.set()
            thread.join(10)
        assert waited < 2.0, f"node B waited {waited:.1f}s for node A's lease"
        return got_a, got_b

    def test_blocks_being_taken_by_one_node_are_passed_over_by_another(self, nodes: tuple[Ledger, Ledger]) -> None:
        a, b = nodes
        new_batch(a, 10, "one.csv")
        new_batch(a, 10, "two.csv")  # a second message block
        got_a, got_b = self._while_a_holds(a, b, time.time())
        assert len(got_a) == 10 and len(got_b) == 10
        assert {m.reference for m in got_a} == {m.reference for m in got_b}  # the same rows of two files
        assert not {m.message_id for m in got_a} & {m.message_id for m in got_b}
        assert a.lease("node-c", "acme", 10, time.time(), 60) == []

    def test_messages_being_leased_by_one_node_are_passed_over_by_another(self, nodes: tuple[Ledger, Ledger]) -> None:
        a, b = nodes
        new_batch(a, 20)
        now = time.time()
        assert len(a.lease("dead-node", "acme", 20, now, 1)) == 20  # rows now, their leases soon expired
        got_a, got_b = self._while_a_holds(a, b, now + 5)
        assert len(got_a) == 10 and len(got_b) == 10
        assert not {m.message_id for m in got_a} & {m.message_id for m in got_b}
        assert a.lease("node-c", "acme", 10, now + 5, 60) == []


class TestPostgresCrossedReceipts:
    """A receipt reaching node B while node A is still writing its message's submit answer.

    B finds no message with that upstream id yet and parks the receipt; A,
    looking for parked receipts before B committed, finds none. Each
    ordering of the two commits is forced here (one side is held between
    its work and its commit), and the receipt must be applied either way,
    at once, not left to the periodic retry of parked receipts.
    """

    @pytest.fixture
    def nodes(self, pg_url: str) -> Iterator[tuple[Ledger, Ledger]]:
        a, b = Ledger(pg_url), Ledger(pg_url)
        a.add_product(Product("acme", "x"))
        yield a, b
        a.close()
        b.close()

    @staticmethod
    def _held(monkeypatch: pytest.MonkeyPatch, store: object, method: str) -> tuple[threading.Event, threading.Event]:
        """Make ``store.method`` stop after its work, before its transaction commits, until released."""
        done, release = threading.Event(), threading.Event()
        original = getattr(store, method)

        def held(*args: object, **kwargs: object) -> object:
            result = original(*args, **kwargs)
            done.set()
            assert release.wait(10)
            return result

        monkeypatch.setattr(store, method, held)
        return done, release

    @staticmethod
    def _started(target: Callable[..., object], *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args)
        thread.start()
        return thread

    @staticmethod
    def _applied_and_nothing_parked(a: Ledger, seq: int) -> None:
        assert statuses(a, seq) == {"004": 1}
        assert a.inbound.unmatched_receipts()["parked"] == 0

    def _setup(self, a: Ledger) -> tuple[int, list[SubmitResult], Receipt]:
        seq = new_batch(a, 1)
        (message,) = a.lease("node-a", "acme", 1, time.time(), 60)
        answer = [SubmitResult(message.message_id, message.attempt, upstream_id="up-1")]
        return seq, answer, Receipt("smsc", "up-1", "004", NOW, None)

    def test_receipt_parked_while_the_answer_is_being_written(self, nodes: tuple[Ledger, Ledger],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
        a, b = nodes
        seq, answer, receipt = self._setup(a)
        done, release = self._held(monkeypatch, a.answers, "_apply_results")
        writer = self._started(a.record_answers, "smsc", answer, ())
        assert done.wait(10)  # A's answer is written, not committed, and A found nothing parked
        assert b.record_answers("smsc", (), [receipt]) == 1  # so B parks the receipt
        release.set()
        writer.join(10)
        self._applied_and_nothing_parked(a, seq)

    def test_answer_written_while_the_receipt_is_being_parked(self, nodes: tuple[Ledger, Ledger],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
        a, b = nodes
        seq, answer, receipt = self._setup(a)
        done, release = self._held(monkeypatch, b.answers, "_apply_receipts")
        parker = self._started(b.record_answers, "smsc", (), [receipt])
        assert done.wait(10)  # B parked the receipt, not committed yet
        a.record_answers("smsc", answer, ())  # A's answer commits, and finds nothing parked
        assert statuses(a, seq) == {"003": 1}
        release.set()
        parker.join(10)
        self._applied_and_nothing_parked(a, seq)

    def test_answer_committed_between_a_receipts_update_and_its_parking(self, nodes: tuple[Ledger, Ledger],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
        a, b = nodes
        seq, answer, receipt = self._setup(a)
        a_done, a_release = self._held(monkeypatch, a.answers, "_apply_results")
        b_missed, b_release = threading.Event(), threading.Event()
        find = b.answers._find_upstream

        def find_after_a_committed(*args: object) -> object:
            b_missed.set()  # B's update found no message at 003
            assert b_release.wait(10)
            return find(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(b.answers, "_find_upstream", find_after_a_committed)
        writer = self._started(a.record_answers, "smsc", answer, ())
        assert a_done.wait(10)
        receiver = self._started(b.record_answers, "smsc", (), [receipt])
        assert b_missed.wait(10)
        a_release.set()
        writer.join(10)  # A committed: B now sees the message known, at 003
        b_release.set()
        receiver.join(10)
        self._applied_and_nothing_parked(a, seq)
