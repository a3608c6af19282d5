"""Bind-count leases: an account's binds across nodes are capped by ``max_binds`` (dispatch/bind_slots.py).

Two SMPP connectors stand for two nodes, each with its own ledger handle on
one ledger (SQLite, and a real PostgreSQL server), against the test SMSC.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ftpbatch.dispatch.bind_slots import LedgerBindSlots
from ftpbatch.dispatch.smpp import SmppConnector
from ftpbatch.errors import ConfigError
from ftpbatch.ledger import Ledger
from tests.smsc.events import CollectingEvents
from tests.smsc.fixtures import SmscProcess

FAST = {"reconnect_min": 0.1, "reconnect_max": 0.3, "response_timeout": 3}


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_at(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ftpbatch.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def node(ledger_at: str) -> Iterator[Callable[..., tuple[SmppConnector, CollectingEvents, Ledger]]]:
    started: list[tuple[SmppConnector, Ledger]] = []

    def make(smsc: SmscProcess, holder: str, max_binds: int = 1, **options: Any):
        ledger = Ledger(ledger_at)
        connector = SmppConnector.from_url(smsc.url(max_binds=max_binds, **{**FAST, **options}))
        connector.bind_slots = LedgerBindSlots(ledger, connector.account, max_binds, holder, seconds=1.5)
        events = CollectingEvents()
        connector.start(events)
        started.append((connector, ledger))
        return connector, events, ledger

    yield make
    for connector, ledger in started:
        connector.stop()
        ledger.close()


def test_one_bind_slot_two_nodes_only_one_binds_and_the_other_takes_over(smsc: SmscProcess, node) -> None:
    a, events_a, ledger = node(smsc, "node-a")
    assert events_a.wait_until(lambda e: any(e.ups()), 10), events_a.states
    b, events_b, _ = node(smsc, "node-b")
    time.sleep(2.0)  # longer than a lease (1.5 s): node-a keeps renewing its slot
    assert not b.is_up and not any(events_b.ups())
    assert len(smsc.events("bind")) == 1
    assert any("held by other nodes" in detail for _, detail in events_b.states), events_b.states
    assert [(j.name, j.holder) for j in ledger.job_holders("bind:")] == [(f"bind:{a.account}:0", "node-a#0")]
    a.stop()  # a clean stop gives the slot up: node-b binds within its retry delay
    assert events_b.wait_until(lambda e: any(e.ups()), 5), events_b.states
    assert len(smsc.events("bind")) == 2
    assert [j.holder for j in ledger.job_holders("bind:")] == ["node-b#0"]


def test_a_node_that_lost_its_slot_unbinds(smsc: SmscProcess, node) -> None:
    a, events_a, ledger = node(smsc, "node-a")
    assert events_a.wait_until(lambda e: any(e.ups()), 10), events_a.states
    # node-a was cut off long enough for another node to take its slot
    slot = f"bind:{a.account}:0"
    assert ledger.release_job(slot, "node-a#0") and ledger.take_job(slot, "node-c#0", 60)
    assert smsc.wait_for(lambda s: len(s.events("unbind")) == 1, 5), smsc.events()
    assert events_a.wait_until(lambda e: not a.is_up, 5)
    time.sleep(1.0)
    assert not a.is_up and len(smsc.events("bind")) == 1  # and it does not bind again while node-c holds it


def test_two_slots_a_transmitter_and_receiver_pair_needs_both(smsc: SmscProcess, node) -> None:
    a, events_a, ledger = node(smsc, "node-a", max_binds=3, bind="tx+rx")
    assert events_a.wait_until(lambda e: any(e.ups()), 10), events_a.states
    b, events_b, _ = node(smsc, "node-b", max_binds=3, bind="tx+rx")
    time.sleep(1.0)
    assert not b.is_up and len(smsc.events("bind")) == 2  # one slot left: not enough for node-b's pair
    assert sorted(j.holder for j in ledger.job_holders("bind:")) == ["node-a#0", "node-a#1"]  # none left half-taken


def test_max_binds_must_allow_a_bind() -> None:
    with pytest.raises(ConfigError, match="max_binds=1 must allow at least one bind"):
        SmppConnector.from_url("smpp://esme:secret@127.0.0.1:2775?bind=tx%2Brx&max_binds=1")


class _SlowSlots:
    """Bind slots whose ledger answers slowly: a renewal is under way whenever the connector stops."""

    seconds = 0.3  # renewed every 0.1 s

    def __init__(self) -> None:
        self.running = 0
        self.renewals = 0

    def take(self, binds: int) -> bool:
        return True

    def renew(self) -> bool:
        self.running += 1
        time.sleep(0.5)
        self.renewals += 1
        self.running -= 1
        return True

    def release(self) -> None:
        pass

    def describe(self) -> str:
        return "slow slots"


def test_stop_returns_only_after_a_bind_slot_call_in_progress_ended(smsc: SmscProcess) -> None:
    # The gateway closes the ledger right after stopping its connectors: a slot renewal still
    # running on the connector's executor then used a closed SQLite connection (a segfault).
    connector = SmppConnector.from_url(smsc.url(max_binds=1, **FAST))
    slots = _SlowSlots()
    connector.bind_slots = slots
    events = CollectingEvents()
    connector.start(events)
    try:
        assert events.wait_until(lambda e: any(e.ups()), 10), events.states
        deadline = time.monotonic() + 5
        while not slots.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slots.running == 1
    finally:
        connector.stop()
    assert slots.running == 0 and slots.renewals >= 1
