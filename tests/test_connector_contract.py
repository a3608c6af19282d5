"""The connector contract (DESIGN.md §9, dispatch/connector.py), run against every connector: ``sim`` and ``smpp``.

What the dispatcher relies on from any connector:

* every handed message gets exactly one :class:`SubmitResult`, with the
  message's id and attempt echoed back;
* accepted messages carry upstream ids unique within the account;
* receipts are keyed by (``account``, upstream id) of an accepted message;
  when they come with an ``ack``, it may be called from another thread;
* ``is_up`` is true once started, false after ``stop``; a message handed over
  after ``stop`` comes back ``retry=True`` at once;
* ``window`` bounds what may be outstanding, and ``submit`` of more than the
  window blocks but does not lose anything;
* a connector that says ``can_query`` answers every query once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from ftpbatch.dispatch.connector import Connector
from ftpbatch.dispatch.connectors import make_connector
from ftpbatch.models import QueryRequest
from tests.smsc.events import CollectingEvents
from tests.smsc.fixtures import SmscProcess
from tests.test_smpp_connector import FAST, msg, wait_results

Make = Callable[[], Connector]


@pytest.fixture(params=["sim", "smpp"])
def make(request: pytest.FixtureRequest, smsc_factory: Callable[..., SmscProcess]) -> Iterator[Make]:
    made: list[Connector] = []

    def build() -> Connector:
        if request.param == "sim":
            connector = make_connector("sim://?receipt_delay=0.05&window=20")
        else:
            smsc = smsc_factory("happy", receipt_delay=0.05)
            connector = make_connector(smsc.url(window=20, **FAST))
        made.append(connector)
        return connector

    yield build
    for connector in made:
        connector.stop()


def started(make: Make) -> tuple[Connector, CollectingEvents]:
    connector = make()
    events = CollectingEvents()
    connector.start(events)
    assert events.wait_until(lambda e: connector.is_up, 10), events.states
    return connector, events


def test_every_message_gets_one_result_with_its_attempt(make: Make) -> None:
    connector, events = started(make)
    messages = [msg(i) for i in range(150)]  # more than the window: submit blocks, nothing is lost
    connector.submit(messages)
    wait_results(events, 150)
    by = events.by_message()
    assert sorted(by) == list(range(150)) and all(len(v) == 1 for v in by.values())
    assert {r.attempt for r in events.results} == {1}
    ids = [r.upstream_id for r in events.results]
    assert all(ids) and len(set(ids)) == 150


def test_receipts_are_keyed_by_account_and_upstream_id(make: Make) -> None:
    connector, events = started(make)
    connector.submit([msg(i) for i in range(30)])
    wait_results(events, 30)
    assert events.wait_until(lambda e: len(e.receipt_list) == 30, 10)
    assert {r.account for r in events.receipt_list} == {connector.account}
    assert {r.upstream_id for r in events.receipt_list} == {r.upstream_id for r in events.results}
    assert {r.status for r in events.receipt_list} == {"004"}


def test_acks_may_come_from_another_thread(make: Make) -> None:
    connector = make()
    events = CollectingEvents(auto_ack=False)
    connector.start(events)
    assert events.wait_until(lambda e: connector.is_up, 10)
    connector.submit([msg(i) for i in range(10)])
    assert events.wait_until(lambda e: len(e.receipt_list) == 10, 10)
    threads = [threading.Thread(target=ack) for ack in events.acks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert not any(t.is_alive() for t in threads)


def test_after_stop_it_is_down_and_hands_messages_back(make: Make) -> None:
    connector, events = started(make)
    connector.submit([msg(1)])
    wait_results(events, 1)
    connector.stop()
    assert not connector.is_up
    connector.submit([msg(2)])
    wait_results(events, 2, timeout=2)
    assert events.by_message()[2][0].retry


def test_queries_are_answered_once_each_when_supported(make: Make) -> None:
    connector, events = started(make)
    if not connector.can_query:
        pytest.skip(f"{type(connector).__name__} does not query (can_query is False)")
    connector.submit([msg(i) for i in range(3)])
    wait_results(events, 3)
    connector.query([QueryRequest(r.message_id, r.upstream_id or "", "SHOP") for r in events.results])
    assert events.wait_until(lambda e: len(e.outcomes) == 3, 5)
    assert sorted(o.message_id for o in events.outcomes) == [0, 1, 2]
    assert {o.account for o in events.outcomes} == {connector.account}
