"""The nodes contract (tests/ledger_contract_nodes.py) run against the SQLite ledger and the PostgreSQL one."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftpbatch.ledger import Ledger
from ftpbatch.ledger.protocol import LedgerProtocol
from ftpbatch.models import OutboundMessage, Product
from tests.ledger_contract import OpenLedger, new_batch
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

