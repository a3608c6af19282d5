"""The ledger contract for several nodes on one ledger: the nodes table, and leases two nodes take at once.

Like tests/ledger_contract.py: a backend's module subclasses
:class:`NodesContract` and provides ``open_ledger`` (each call a new
connection to the same store, as another node sees it). The tests speak
only :class:`~ftpbatch.ledger.protocol.LedgerProtocol`.
"""

from __future__ import annotations

import threading
import time

import pytest

from ftpbatch.ledger.protocol import LedgerProtocol
from ftpbatch.models import OutboundMessage, Product
from tests.ledger_contract import OpenLedger, new_batch


class NodesContract:
    """Subclass as ``Test<Backend>Nodes`` and provide the ``open_ledger`` fixture."""

    @pytest.fixture
    def open_ledger(self) -> OpenLedger:
        raise NotImplementedError("a backend's test class provides open_ledger")

    @pytest.fixture
    def ledger(self, open_ledger: OpenLedger) -> LedgerProtocol:
        ledger = open_ledger(receipt_timeout=3600.0)
        ledger.add_product(Product("acme", "x"))
        return ledger

    # --- the nodes table -------------------------------------------------------
    def test_a_node_is_recorded_at_start_and_its_heartbeat_says_what_it_holds(self, ledger: LedgerProtocol) -> None:
        now = time.time()
        ledger.node_started("node-a", "host-a", 1234, 30.0, now, "10.0.0.1:2121")
        (node,) = ledger.list_nodes()
        assert (node.node_id, node.host, node.pid, node.lease_seconds, node.ftp_address) == (
            "node-a", "host-a", 1234, 30.0, "10.0.0.1:2121")
        assert (node.binds, node.leases, node.stopped_at, node.started_at) == (0, 0, None, pytest.approx(now))
        assert node.state(now + 1) == "up"
        assert ledger.node_heartbeat("node-a", now + 5, binds=2, leases=40, detail={"jobs": ["rescan"]})
        node = ledger.get_node("node-a")
        assert node is not None
        assert (node.binds, node.leases, node.detail, node.heartbeat_at) == (2, 40, {"jobs": ["rescan"]}, pytest.approx(now + 5))
        assert node.started_at == pytest.approx(now) and node.ftp_address == "10.0.0.1:2121"
        assert ledger.node_heartbeat("nobody", now, 0, 0) is False  # no row: the caller starts it again
        assert ledger.get_node("nobody") is None

    def test_a_node_without_heartbeat_for_longer_than_its_leases_is_down(self, ledger: LedgerProtocol,
                                                                        open_ledger: OpenLedger) -> None:
        now = time.time()
        ledger.node_started("node-a", "host-a", 1, 10.0, now)
        other = open_ledger()  # another node's connection sees the same rows
        other.node_started("node-b", "host-b", 2, 10.0, now)
        other.node_heartbeat("node-b", now + 20, 1, 0)
        assert [n.node_id for n in other.list_nodes()] == ["node-a", "node-b"]
        assert ledger.live_nodes(now + 5) == ["node-a", "node-b"]
        assert ledger.live_nodes(now + 15) == ["node-b"]  # node-a: 15 s without a heartbeat, leases of 10 s
        states = {n.node_id: n.state(now + 15) for n in ledger.list_nodes()}
        assert states == {"node-a": "down", "node-b": "up"}

    def test_a_clean_stop_holds_nothing_and_a_restart_starts_afresh(self, ledger: LedgerProtocol) -> None:
        now = time.time()
        ledger.node_started("node-a", "host-a", 1, 10.0, now, "a:21")
        ledger.node_heartbeat("node-a", now + 1, 1, 7, {"x": 1})
        ledger.node_stopped("node-a", now + 2)
        node = ledger.get_node("node-a")
        assert node is not None and node.state(now + 2) == "stopped"
        assert (node.binds, node.leases, node.detail, node.stopped_at) == (0, 0, {}, pytest.approx(now + 2))
        assert ledger.live_nodes(now + 2) == []
        ledger.node_started("node-a", "host-a", 99, 10.0, now + 3, "a:21")
        node = ledger.get_node("node-a")
        assert node is not None and (node.pid, node.stopped_at, node.started_at) == (99, None, pytest.approx(now + 3))
        assert ledger.live_nodes(now + 3) == ["node-a"]
        assert ledger.forget_node("node-a") and ledger.list_nodes() == [] and not ledger.forget_node("node-a")

    # --- leases taken by several nodes at once ---------------------------------
    def _race(self, nodes: list[LedgerProtocol], window: int, now: float) -> dict[str, list[OutboundMessage]]:
        """Every node leases ``window`` at a time on its own thread until the queue is dry."""
        taken: dict[str, list[OutboundMessage]] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(len(nodes))

        def lease_until_dry(name: str, ledger: LedgerProtocol) -> None:
            mine = taken.setdefault(name, [])
            try:
                start.wait()
                while got := ledger.lease(name, "acme", window, now, 60):
                    mine.extend(got)
            except BaseException as exc:  # the test reports it
                errors.append(exc)

        threads = [threading.Thread(target=lease_until_dry, args=(f"node-{i}", node)) for i, node in enumerate(nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        return taken

    def test_nodes_leasing_at_once_take_every_message_exactly_once(self, ledger: LedgerProtocol,
                                                                    open_ledger: OpenLedger) -> None:
        # twelve batches (twelve message blocks), then the same messages again as rows whose leases expired
        for n in range(12):
            new_batch(ledger, 250, f"b{n}.csv")
        nodes = [ledger, open_ledger(), open_ledger()]
        now = time.time()
        taken = self._race(nodes, 40, now)
        ids = [m.message_id for got in taken.values() for m in got]
        assert len(ids) == 3000 and len(set(ids)) == 3000, (len(ids), len(set(ids)))
        assert all(m.attempt == 1 for got in taken.values() for m in got)
        # every lease expired (the nodes died): the rows are leased again, each once, flagged attempt 2
        again = self._race(nodes, 40, now + 120)
        ids_again = [m.message_id for got in again.values() for m in got]
        assert sorted(ids_again) == sorted(ids)
        assert all(m.attempt == 2 for got in again.values() for m in got)
