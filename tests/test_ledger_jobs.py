"""Job leases in the ledger (ledger/jobs.py), on SQLite and on a real PostgreSQL server.

Two ledger handles stand for two nodes: each opens its own connections, as
two machines would. Races are real threads released by one barrier.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest

from ftpbatch.ledger import Ledger
from ftpbatch.ledger.jobs import JobLease

OpenLedger = Callable[[], Ledger]
T0 = 1_800_000_000.0


class JobContract:
    @pytest.fixture
    def open_ledger(self) -> Iterator[OpenLedger]:  # pragma: no cover - each backend provides it
        raise NotImplementedError
        yield

    def test_one_holder_at_a_time_and_renewal(self, open_ledger: OpenLedger) -> None:
        a, b = open_ledger(), open_ledger()
        assert a.take_job("reports", "node-a", 30, T0)
        assert not b.take_job("reports", "node-b", 30, T0 + 1)
        assert a.take_job("reports", "node-a", 30, T0 + 20)  # a renewal by the holder
        assert not b.take_job("reports", "node-b", 30, T0 + 45)  # renewed until T0 + 50
        assert a.renew_job("reports", "node-a", 30, T0 + 49)
        [held] = b.job_holders("rep")
        assert (held.name, held.holder, held.expires, held.taken_at) == ("reports", "node-a", T0 + 79, T0)

    def test_a_dead_holders_job_moves_on_after_expiry(self, open_ledger: OpenLedger) -> None:
        a, b = open_ledger(), open_ledger()
        assert a.take_job("retention", "node-a", 30, T0)
        # node-a dies: no renewal. Before the expiry nobody else may take it; at it, the other does.
        assert not b.take_job("retention", "node-b", 30, T0 + 29.9)
        assert b.take_job("retention", "node-b", 30, T0 + 30)
        # the old holder, back from a cut, finds it lost: neither renewal nor take succeed
        assert not a.renew_job("retention", "node-a", 30, T0 + 31)
        assert not a.take_job("retention", "node-a", 30, T0 + 31)
        assert [(j.holder, j.taken_at) for j in a.job_holders()] == [("node-b", T0 + 30)]

    def test_release_hands_over_at_once_and_only_by_the_holder(self, open_ledger: OpenLedger) -> None:
        a, b = open_ledger(), open_ledger()
        assert a.take_job("callbacks", "node-a", 30, T0)
        assert not b.release_job("callbacks", "node-b")
        assert not b.take_job("callbacks", "node-b", 30, T0 + 1)
        assert a.release_job("callbacks", "node-a")
        assert b.take_job("callbacks", "node-b", 30, T0 + 1)
        assert a.take_job("x", "node-a", 30, T0) and a.take_job("y", "node-a", 30, T0)
        assert b.release_jobs_of("node-a") == 2
        assert [j.name for j in b.job_holders()] == ["callbacks"]

    def test_racing_nodes_exactly_one_takes_each_job(self, open_ledger: OpenLedger) -> None:
        nodes = [open_ledger() for _ in range(4)]
        jobs = [f"ingest:{n}" for n in range(40)]
        won: dict[str, list[str]] = {job: [] for job in jobs}
        lock = threading.Lock()
        start = threading.Barrier(len(nodes))

        def node(i: int) -> None:
            start.wait()
            for job in jobs:
                if nodes[i].take_job(job, f"node-{i}", 30, T0):
                    with lock:
                        won[job].append(f"node-{i}")

        threads = [threading.Thread(target=node, args=(i,)) for i in range(len(nodes))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert {job: len(w) for job, w in won.items()} == {job: 1 for job in jobs}
        assert {j.name: j.holder for j in nodes[0].job_holders("ingest:")} == {job: w[0] for job, w in won.items()}

    def test_a_job_run_by_two_nodes_runs_on_one_then_moves_on_when_it_dies(self, open_ledger: OpenLedger) -> None:
        clock = [T0]
        a, b = open_ledger(), open_ledger()
        leases = {"node-a": JobLease(a, "usage-files", "node-a", 30, lambda: clock[0]),
                  "node-b": JobLease(b, "usage-files", "node-b", 30, lambda: clock[0])}
        ran: list[str] = []
        start = threading.Barrier(2)

        def rounds(holder: str, n: int) -> None:
            start.wait()
            for _ in range(n):
                if leases[holder].held():
                    ran.append(holder)

        threads = [threading.Thread(target=rounds, args=(h, 50)) for h in leases]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(ran) == 50 and len(set(ran)) == 1, ran
        first = ran[0]
        other = "node-b" if first == "node-a" else "node-a"
        # the holder dies (no more rounds); until its lease expires the other still does nothing
        clock[0] = T0 + 29
        assert not leases[other].held()
        clock[0] = T0 + 31
        assert leases[other].held()
        assert [(j.holder) for j in a.job_holders("usage")] == [other]
        # a clean stop hands over at once
        leases[other].release()
        assert leases[first].held()

    def test_slots_count_the_holders_of_an_account(self, open_ledger: OpenLedger) -> None:
        a, b, c = open_ledger(), open_ledger(), open_ledger()
        assert a.take_slot("bind:esme", 2, "node-a", 30, T0) == "bind:esme:0"
        assert b.take_slot("bind:esme", 2, "node-b", 30, T0) == "bind:esme:1"
        assert c.take_slot("bind:esme", 2, "node-c", 30, T0) is None
        # a holder renewing keeps its own slot
        assert b.take_slot("bind:esme", 2, "node-b", 30, T0 + 10) == "bind:esme:1"
        # node-a dies: its slot goes to the one waiting, after the expiry
        assert c.take_slot("bind:esme", 2, "node-c", 30, T0 + 29) is None
        assert c.take_slot("bind:esme", 2, "node-c", 30, T0 + 31) == "bind:esme:0"
        assert a.take_slot("bind:esme", 2, "node-a", 30, T0 + 32) is None
        assert sorted(j.holder for j in a.job_holders("bind:esme:")) == ["node-b", "node-c"]


class TestSQLiteJobs(JobContract):
    @pytest.fixture
    def open_ledger(self, tmp_path: Path) -> Iterator[OpenLedger]:
        opened: list[Ledger] = []

        def open_ledger() -> Ledger:
            opened.append(Ledger(tmp_path / "ledger.db"))
            return opened[-1]

        yield open_ledger
        for ledger in opened:
            ledger.close()


class TestPostgresJobs(JobContract):
    @pytest.fixture
    def open_ledger(self, pg_url: str) -> Iterator[OpenLedger]:
        opened: list[Ledger] = []

        def open_ledger() -> Ledger:
            opened.append(Ledger(pg_url))
            return opened[-1]

        yield open_ledger
        for ledger in opened:
            ledger.close()
