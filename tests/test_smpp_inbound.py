"""deliver_sm answered only once stored, re-delivery after a re-bind, query_sm, MO — against the test SMSC process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ftpbatch.dispatch.smpp import SmppConnector
from ftpbatch.models import QueryRequest
from tests.smsc.events import CollectingEvents
from tests.smsc.fixtures import SmscProcess
from tests.test_smpp_connector import FAST, msg, wait_results

Start = Callable[..., tuple[SmppConnector, CollectingEvents]]


@pytest.fixture
def start() -> Iterator[Start]:
    started: list[SmppConnector] = []

    def make(smsc: SmscProcess, auto_ack: bool = True, **options: Any) -> tuple[SmppConnector, CollectingEvents]:
        connector = SmppConnector.from_url(smsc.url(**{**FAST, **options}))
        events = CollectingEvents(auto_ack=auto_ack)
        connector.start(events)
        started.append(connector)
        assert events.wait_until(lambda e: any(e.ups()), 10), events.states
        return connector, events

    yield make
    for connector in started:
        connector.stop()


def test_receipts_are_answered_only_when_acknowledged(smsc: SmscProcess, start: Start) -> None:
    connector, events = start(smsc, auto_ack=False)
    connector.submit([msg(i) for i in range(20)])
    wait_results(events, 20)
    assert events.wait_until(lambda e: len(e.receipt_list) == 20, 10)
    assert smsc.wait_for(lambda s: len(s.events("receipt")) == 20)
    time.sleep(0.3)  # the receipts are here and unanswered; give a wrong answer time to show
    assert smsc.events("deliver_sm_resp") == []
    for ack in list(events.acks):
        ack()
    assert smsc.wait_for(lambda s: len(s.events("deliver_sm_resp")) == 20)
    # one answer per deliver_sm, to its own sequence number
    assert sorted(e["seq"] for e in smsc.events("deliver_sm_resp")) == sorted(e["seq"] for e in smsc.events("receipt"))


def test_unanswered_receipts_come_again_after_a_rebind(smsc: SmscProcess, start: Start) -> None:
    first, events = start(smsc, auto_ack=False)
    first.submit([msg(i) for i in range(10)])
    assert events.wait_until(lambda e: len(e.receipt_list) == 10, 10)
    first.stop()  # never acknowledged: the SMSC keeps them
    assert smsc.wait_for(lambda s: len(s.events("unanswered")) == 10)
    second, again = start(smsc)
    assert again.wait_until(lambda e: len(e.receipt_list) == 10, 10)
    assert {r.upstream_id for r in again.receipt_list} == {r.upstream_id for r in events.receipt_list}
    assert smsc.wait_for(lambda s: len(s.events("deliver_sm_resp")) == 10)
    assert all(e.get("redelivered") for e in smsc.events("receipt")[10:])


def test_query_sm_final_open_and_unknown(smsc_factory: Callable[..., SmscProcess], start: Start) -> None:
    smsc = smsc_factory("happy", receipt_delay=0.3, stat=["1=UNDELIV"], no_receipts=True)
    connector, events = start(smsc)
    connector.submit([msg(0, dest="447700900000"), msg(1, dest="447700900001")])
    wait_results(events, 2)
    ids = {r.message_id: r.upstream_id or "" for r in events.results}
    connector.query([QueryRequest(0, ids[0], "SHOP")])  # asked before its receipt is due: not final
    assert events.wait_until(lambda e: len(e.outcomes) == 1, 5)
    time.sleep(0.4)
    connector.query([QueryRequest(0, ids[0], "SHOP"), QueryRequest(1, ids[1], "SHOP"), QueryRequest(7, "FFFF", None)])
    assert events.wait_until(lambda e: len(e.outcomes) == 4, 5)
    by = {(o.message_id, o.status) for o in events.outcomes}
    assert by == {(0, None), (0, "004"), (1, "007"), (7, None)}
    assert not any(o.refused for o in events.outcomes)
    assert "ENROUTE" in events.outcomes[0].detail
    unknown = next(o for o in events.outcomes if o.message_id == 7)
    assert "ESME_RQUERYFAIL" in unknown.detail
    queried = smsc.events("query_sm")
    assert [q["id"] for q in queried][-3:] == [ids[0], ids[1], "FFFF"] or len(queried) == 4
    assert {q["source"] for q in queried if q["id"] != "FFFF"} == {"SHOP"}


@pytest.mark.parametrize("refusal", ["nack", "status"])
def test_query_sm_refused_is_remembered(smsc_factory: Callable[..., SmscProcess], start: Start, refusal: str) -> None:
    smsc = smsc_factory("happy", query_refusal=refusal)
    connector, events = start(smsc, window=2)  # one query in flight at a time
    connector.query([QueryRequest(i, f"{i:X}", None) for i in range(20)])
    assert events.wait_until(lambda e: len(e.outcomes) == 20, 5)
    assert all(o.refused and o.status is None for o in events.outcomes)
    assert len(smsc.events("query_sm")) == 1  # refused once, never asked again
    connector.query([QueryRequest(99, "99", None)])
    assert events.wait_until(lambda e: len(e.outcomes) == 21, 5)
    assert len(smsc.events("query_sm")) == 1


def test_mo_messages_are_decoded_and_answered_after_ack(smsc_factory: Callable[..., SmscProcess], start: Start) -> None:
    smsc = smsc_factory("happy", mo=["447700900001:12345:STOP please", "447700900002:12345:Стоп 😀"])
    connector, events = start(smsc, auto_ack=False)
    assert events.wait_until(lambda e: len(e.mo_list) == 2, 5)
    assert [(m.source, m.destination, m.text, m.data_coding) for m in events.mo_list] == [
        ("447700900001", "12345", "STOP please", 0), ("447700900002", "12345", "Стоп 😀", 8)]
    assert {m.account for m in events.mo_list} == {connector.account}
    time.sleep(0.2)
    assert smsc.events("deliver_sm_resp") == []
    for ack in events.acks:
        ack()
    assert smsc.wait_for(lambda s: len(s.events("deliver_sm_resp")) == 2)
