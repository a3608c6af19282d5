"""SmppConnector against a real SMSC process that misbehaves one way per test.

The SMSC (tests/smsc/server.py) is built on smpp.pdu3 + asyncio, not on the
client library, and records every PDU it gets; the assertions read both
sides: what the connector reported and what the SMSC saw.
"""

from __future__ import annotations

import socket
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ftpbatch.models import OutboundMessage
from ftpbatch.dispatch.smpp import SmppConnector
from ftpbatch.dispatch.smpp.encoding import unpack_septets
from ftpbatch.dispatch.smpp.sockets import nodelay_states
from ftpbatch.rules.gsm import GSM_BASIC, GSM_EXTENSION
from ftpbatch.rules.segments import split_parts
from tests.smsc.events import CollectingEvents
from tests.smsc.fixtures import SmscProcess

Connect = Callable[..., tuple[SmppConnector, CollectingEvents]]

# Test defaults: fast re-binds and throttle pauses, short timeouts.
FAST = {"reconnect_min": 0.1, "throttle_min": 0.02, "response_timeout": 3}


@pytest.fixture
def connect() -> Iterator[Connect]:
    """Start an SmppConnector on an SMSC, wait for the bind; stopped at teardown."""
    started: list[SmppConnector] = []

    def make(smsc: SmscProcess, wait_up: bool = True, **options: Any) -> tuple[SmppConnector, CollectingEvents]:
        connector = SmppConnector.from_url(smsc.url(**{**FAST, **options}))
        events = CollectingEvents()
        connector.start(events)
        started.append(connector)
        if wait_up:
            assert events.wait_until(lambda e: any(e.ups()), 10), events.states
        return connector, events

    yield make
    for connector in started:
        connector.stop()


def msg(i: int, text: str = "", encoding: str = "gsm7", dest: str | None = None, sender: str | None = "SHOP",
        **kw: Any) -> OutboundMessage:
    text = text or f"Hello {i}, your code is {i * 7919 % 100000:05d}"
    return OutboundMessage(message_id=i, attempt=1, product="p", destination=dest or f"447{i:07d}00",
                           sender=sender, text=text, encoding=encoding, parts=len(split_parts(text, encoding)), **kw)


def wait_results(events: CollectingEvents, n: int, timeout: float = 10.0) -> None:
    assert events.wait_until(lambda e: len(e.results) >= n, timeout), f"{len(events.results)} of {n} results"


def assert_once_each(events: CollectingEvents, ids: range | list[int]) -> None:
    by = events.by_message()
    assert sorted(by) == sorted(ids)
    assert all(len(v) == 1 for v in by.values()), {k: v for k, v in by.items() if len(v) != 1}


_GSM_DECODE = {i: ch for i, ch in enumerate(GSM_BASIC)}
_GSM_EXT_DECODE = {v: k for k, v in GSM_EXTENSION.items()}


def decode_body(record: dict[str, Any], packed: bool = False) -> str:
    """The text of one recorded submit_sm, independent of the connector's encoder."""
    body = bytes.fromhex(record["short_message"])
    udh_len = 0
    if record["esm_class"] & 0x40:
        udh_len = body[0] + 1
    data = body[udh_len:]
    if record["data_coding"] == 8:
        return data.decode("utf-16-be", "surrogatepass").encode("utf-16", "surrogatepass").decode("utf-16")
    if packed:
        fill = (7 - (udh_len * 8) % 7) % 7
        count = (len(data) * 8 - fill) // 7
        septets = unpack_septets(data, count, fill)
        if septets and septets[-1] == 0x0D and (count * 7 + fill) % 8 == 0:
            septets = septets[:-1]  # the CR pad of 03.38 (never sent by these tests' texts otherwise)
    else:
        septets = list(data)
    out, escape = [], False
    for s in septets:
        if escape:
            out.append(_GSM_EXT_DECODE[s])
            escape = False
        elif s == 0x1B:
            escape = True
        else:
            out.append(_GSM_DECODE[s])
    return "".join(out)


# --------------------------------------------------------------- happy path
def test_happy_every_message_once_unique_ids_and_receipts(smsc: SmscProcess, connect: Connect) -> None:
    connector, events = connect(smsc)
    messages = [msg(i) for i in range(200)] + [msg(200 + i, "Привет, мир! Код 4711", "ucs2") for i in range(20)]
    connector.submit(messages)
    wait_results(events, 220)

    assert_once_each(events, range(220))
    ids = [r.upstream_id for r in events.results]
    assert all(ids) and len(set(ids)) == 220
    assert not [r for r in events.results if r.retry or r.error_code]
    assert events.calls < 220 / 2  # results come back in batches, not one call each

    assert events.wait_until(lambda e: len(e.receipt_list) == 220, 10)
    assert {r.upstream_id for r in events.receipt_list} == set(ids)
    assert {r.status for r in events.receipt_list} == {"004"}
    assert {r.account for r in events.receipt_list} == {connector.account}
    assert connector.account == f"smpp:esme@127.0.0.1:{smsc.port}"

    submits = smsc.submits()
    assert len(submits) == 220  # exactly once on the wire
    by_dest = {s["dest"]: s for s in submits}
    for m in messages:
        record = by_dest[m.destination]
        assert record["data_coding"] == (8 if m.encoding == "ucs2" else 0)
        assert record["esm_class"] == 0 and record["registered_delivery"] == 1
        assert (record["source"], record["source_ton"], record["source_npi"]) == ("SHOP", 5, 0)
        assert (record["dest_ton"], record["dest_npi"]) == (1, 1)
        assert decode_body(record) == m.text
    assert smsc.wait_for(lambda s: len(s.events("deliver_sm_resp")) == 220)
    assert {e["status"] for e in smsc.events("deliver_sm_resp")} == {"ESME_ROK"}


def test_receipt_stat_words_map_to_contract_statuses(smsc_factory: Callable[..., SmscProcess],
                                                      connect: Connect) -> None:
    smsc = smsc_factory("happy", stat=["1=UNDELIV", "2=EXPIRED", "3=REJECTD", "4=DELETED", "5=UNKNOWN",
                                       "6=ACCEPTD", "7=ENROUTE"])
    connector, events = connect(smsc)
    connector.submit([msg(i, dest=f"44770090000{i}") for i in range(8)])
    wait_results(events, 8)
    id_of = {r.message_id: r.upstream_id or "" for r in events.results}
    assert events.wait_until(lambda e: len(e.receipt_list) == 7, 5)
    assert smsc.wait_for(lambda s: len(s.events("deliver_sm_resp")) == 8)
    status = {r.upstream_id: (r.status, r.error_text) for r in events.receipt_list}
    expected = {0: "004", 1: "007", 2: "010", 3: "007", 4: "005", 5: "005", 6: "005"}
    assert {i: status[id_of[i]][0] for i in expected} == expected
    assert status[id_of[0]][1] is None and "UNDELIV" in (status[id_of[1]][1] or "")
    assert events.wait_until(lambda e: connector.stats["receipts_intermediate"] == 1, 5)
    assert id_of[7] not in status  # ENROUTE is intermediate: logged and counted, not final


# ---------------------------------------------------------------- multipart
def test_multipart_udh_reference_consistent_and_receipt_on_last_part(smsc: SmscProcess, connect: Connect) -> None:
    connector, events = connect(smsc)
    gsm_text = "Long GSM text with {braces} and € signs. " * 10  # escapes across part boundaries
    ucs_text = "Длинное сообщение 😀 с эмодзи. " * 8
    messages = [msg(i, gsm_text + str(i)) for i in range(10)] + [msg(10 + i, ucs_text + str(i), "ucs2") for i in range(10)]
    assert all(m.parts >= 3 for m in messages)
    connector.submit(messages)
    wait_results(events, 20)
    assert_once_each(events, range(20))

    parts_by_dest: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in smsc.submits():
        parts_by_dest[record["dest"]].append(record)
    refs = set()
    result_of = {r.message_id: r for r in events.results}
    for m in messages:
        parts = sorted(parts_by_dest[m.destination], key=lambda r: r["udh"]["seq"])
        assert len(parts) == m.parts  # the rules stage's count is what went out
        assert {p["esm_class"] for p in parts} == {0x40}
        assert {(p["udh"]["ref"], p["udh"]["total"], p["udh"]["udhl"]) for p in parts} == {
            (parts[0]["udh"]["ref"], m.parts, 5)}
        assert [p["udh"]["seq"] for p in parts] == list(range(1, m.parts + 1))
        assert [p["registered_delivery"] for p in parts] == [0] * (m.parts - 1) + [1]
        assert "".join(decode_body(p) for p in parts) == m.text
        assert all(len(bytes.fromhex(p["short_message"])) <= 6 + (153 if m.encoding == "gsm7" else 134) for p in parts)
        assert result_of[m.message_id].upstream_id == parts[-1]["message_id"]
        refs.add(parts[0]["udh"]["ref"])
    assert len(refs) == 20  # each message its own reference
    # One receipt per message (only the last part asked), each one matching a result.
    assert events.wait_until(lambda e: len(e.receipt_list) == 20, 5)
    assert {r.upstream_id for r in events.receipt_list} == {r.upstream_id for r in events.results}


def test_multipart_sar_tlvs(smsc: SmscProcess, connect: Connect) -> None:
    connector, events = connect(smsc, sar=1)
    text = "SAR segmented message. " * 12
    connector.submit([msg(1, text), msg(2, text)])
    wait_results(events, 2)
    for dest in (msg(1).destination, msg(2).destination):
        parts = sorted((r for r in smsc.submits() if r["dest"] == dest), key=lambda r: r["sar"]["seq"])
        assert len(parts) == 2
        assert {p["esm_class"] for p in parts} == {0} and {p["udh"] is None for p in parts} == {True}
        assert {(p["sar"]["ref"], p["sar"]["total"]) for p in parts} == {(parts[0]["sar"]["ref"], 2)}
        assert "".join(decode_body(p) for p in parts) == text


def test_gsm_packed(smsc: SmscProcess, connect: Connect) -> None:
    connector, events = connect(smsc, gsm_packed=1)
    short, long = "Packed: @£$ [x] ~ €", "Packed long text, {escapes} included. " * 6
    connector.submit([msg(1, short), msg(2, long)])
    wait_results(events, 2)
    one = [r for r in smsc.submits() if r["dest"] == msg(1).destination]
    assert len(one) == 1 and decode_body(one[0], packed=True) == short
    septets = len(short) + sum(ch in GSM_EXTENSION for ch in short)
    assert len(bytes.fromhex(one[0]["short_message"])) == -(-septets * 7 // 8)  # 7 bits each, not 8
    parts = sorted((r for r in smsc.submits() if r["dest"] == msg(2).destination), key=lambda r: r["udh"]["seq"])
    assert "".join(decode_body(p, packed=True) for p in parts) == long
    assert all(len(bytes.fromhex(p["short_message"])) <= 140 for p in parts)


# ------------------------------------------------------------- misbehaviour
def test_rejected_destinations_are_105_others_accepted(smsc_factory: Callable[..., SmscProcess],
                                                      connect: Connect) -> None:
    smsc = smsc_factory("reject_some", reject_suffix="13")
    connector, events = connect(smsc)
    messages = [msg(i, dest=f"4477009{i:03d}13" if i % 4 == 0 else None) for i in range(40)]
    connector.submit(messages)
    wait_results(events, 40)
    assert_once_each(events, range(40))
    for r in events.results:
        if r.message_id % 4 == 0:
            assert (r.error_code, r.upstream_id, r.retry) == ("105", None, False)
            assert "ESME_RINVDSTADR" in (r.error_text or "")
        else:
            assert r.upstream_id and not r.error_code


def test_throttled_submits_are_retried_and_all_succeed(smsc_factory: Callable[..., SmscProcess],
                                                       connect: Connect) -> None:
    smsc = smsc_factory("throttled", throttle_every=8)
    connector, events = connect(smsc)
    connector.submit([msg(i) for i in range(60)])
    wait_results(events, 60)
    assert_once_each(events, range(60))
    assert all(r.upstream_id and not r.retry for r in events.results)
    answers = Counter(r["answer"] for r in smsc.submits())
    assert answers["ESME_RTHROTTLED"] >= 6 and answers["ok"] == 60
    accepted_per_dest = Counter(r["dest"] for r in smsc.submits() if r["answer"] == "ok")
    assert set(accepted_per_dest.values()) == {1}  # accepted exactly once each
    assert connector.stats["throttled"] == answers["ESME_RTHROTTLED"]


def test_generic_nack_is_retried(smsc_factory: Callable[..., SmscProcess], connect: Connect) -> None:
    smsc = smsc_factory("nack_some", nack_every=6)
    connector, events = connect(smsc)
    connector.submit([msg(i) for i in range(40)])
    wait_results(events, 40)
    assert_once_each(events, range(40))
    assert all(r.upstream_id for r in events.results)
    assert connector.stats["generic_nacks"] >= 5


def test_throttled_beyond_retry_max_comes_back_for_retry(smsc_factory: Callable[..., SmscProcess],
                                                         connect: Connect) -> None:
    smsc = smsc_factory("throttled", throttle_every=1)  # the SMSC takes nothing
    connector, events = connect(smsc, retry_max=2, window=2)
    connector.submit([msg(1), msg(2)])
    wait_results(events, 2)
    assert all(r.retry and not r.upstream_id for r in events.results)
    assert Counter(r["dest"] for r in smsc.submits()) == {msg(1).destination: 3, msg(2).destination: 3}


def test_connection_drop_rebinds_and_every_message_is_answered(smsc_factory: Callable[..., SmscProcess],
                                                               connect: Connect) -> None:
    smsc = smsc_factory("drop_mid_window", drop_after=30)
    connector, events = connect(smsc, window=10)
    connector.submit([msg(i) for i in range(120)])
    wait_results(events, 120)
    assert_once_each(events, range(120))

    ups = events.ups()
    assert ups[:3] == [True, False, True], events.states
    assert [e["type"] for e in smsc.events("bind")] == ["transceiver", "transceiver"]
    ok = events.ok()
    retried = [r for r in events.results if r.retry]
    assert len(ok) + len(retried) == 120 and not [r for r in events.results if r.error_code]
    assert 1 <= len(retried) <= 10  # only what was in flight (the window) is in doubt
    assert len({r.upstream_id for r in ok}) == len(ok)
    accepted = {r["message_id"]: r["dest"] for r in smsc.submits() if r["answer"] == "ok"}
    for r in ok:  # every reported id is one the SMSC gave, to this message's destination
        assert accepted[r.upstream_id] == msg(r.message_id).destination
    sent = Counter(r["dest"] for r in smsc.submits())
    assert max(sent.values()) == 1  # the connector itself never re-sent anything


def test_server_unbind_rebinds(smsc_factory: Callable[..., SmscProcess], connect: Connect) -> None:
    smsc = smsc_factory("server_unbind", unbind_after=20)
    connector, events = connect(smsc)
    connector.submit([msg(i) for i in range(80)])
    wait_results(events, 80)
    assert_once_each(events, range(80))
    assert events.ups()[:3] == [True, False, True]
    assert not [r for r in events.results if r.error_code]
    assert len([r for r in events.results if r.retry]) <= 10
    assert events.wait_until(lambda e: connector.is_up, 5)


def test_no_answer_comes_back_for_retry_after_response_timeout(smsc_factory: Callable[..., SmscProcess],
                                                               connect: Connect) -> None:
    smsc = smsc_factory("no_answer", silent_suffix="99")
    connector, events = connect(smsc, response_timeout=0.5)
    messages = [msg(i, dest=f"44770090{i:02d}99" if i % 5 == 0 else None) for i in range(30)]
    started = time.monotonic()
    connector.submit(messages)
    wait_results(events, 30)
    elapsed = time.monotonic() - started
    assert_once_each(events, range(30))
    for r in events.results:
        if r.message_id % 5 == 0:
            assert r.retry and not r.upstream_id and "no submit_sm_resp within 0.5s" in (r.error_text or "")
        else:
            assert r.upstream_id and not r.retry
    assert 0.5 <= elapsed < 3.0
    assert connector.is_up  # a silent SMSC is not a dead bind


def test_receipt_before_submit_response_is_still_reported(smsc_factory: Callable[..., SmscProcess],
                                                          connect: Connect) -> None:
    smsc = smsc_factory("receipt_first", resp_delay=0.1)
    connector, events = connect(smsc)
    connector.submit([msg(i) for i in range(10)])
    # The receipts overtake the answers: they are reported before any result.
    assert events.wait_until(lambda e: len(e.receipt_list) == 10, 5)
    wait_results(events, 10)
    assert {r.upstream_id for r in events.receipt_list} == {r.upstream_id for r in events.results}


def test_decimal_receipt_ids_match_hex_submit_ids(smsc_factory: Callable[..., SmscProcess],
                                                  connect: Connect) -> None:
    smsc = smsc_factory("happy", id_format="hex", receipt_text_id="dec", no_receipt_tlv=True)
    connector, events = connect(smsc, receipt_id="dec")
    connector.submit([msg(i) for i in range(10)])
    wait_results(events, 10)
    assert events.wait_until(lambda e: len(e.receipt_list) == 10, 5)
    ids = {r.upstream_id for r in events.results}
    assert {r.upstream_id for r in events.receipt_list} == ids
    smsc_ids = {r["message_id"] for r in smsc.submits()}
    assert {format(int(i, 16), "x") for i in smsc_ids} == ids  # stored as lower-case hex
    assert {r["text_id"] for r in smsc.events("receipt")} == {str(int(i, 16)) for i in smsc_ids}


def test_receipt_text_only_as_is(smsc_factory: Callable[..., SmscProcess], connect: Connect) -> None:
    smsc = smsc_factory("happy", no_receipt_tlv=True)
    connector, events = connect(smsc)
    connector.submit([msg(i) for i in range(5)])
    wait_results(events, 5)
    assert events.wait_until(lambda e: len(e.receipt_list) == 5, 5)
    assert {r.upstream_id for r in events.receipt_list} == {r.upstream_id for r in events.results}


# ------------------------------------------------------------ binds, limits
def test_transmitter_plus_receiver_binds(smsc: SmscProcess, connect: Connect) -> None:
    connector, events = connect(smsc, bind="tx+rx", system_type="ftpb")
    connector.submit([msg(i) for i in range(20)])
    wait_results(events, 20)
    assert events.wait_until(lambda e: len(e.receipt_list) == 20, 5)
    binds = smsc.events("bind")
    assert sorted(b["type"] for b in binds) == ["receiver", "transmitter"]
    assert {b["system_type"] for b in binds} == {"ftpb"}
    receiver_conn = next(b["conn"] for b in binds if b["type"] == "receiver")
    assert {r["conn"] for r in smsc.events("receipt")} == {receiver_conn}


def test_window_limits_outstanding_submits_and_submit_blocks(smsc_factory: Callable[..., SmscProcess],
                                                             connect: Connect) -> None:
    smsc = smsc_factory("happy", resp_delay=0.2, no_receipts=True)
    connector, events = connect(smsc, window=2)
    started = time.monotonic()
    connector.submit([msg(i) for i in range(10)])
    blocked = time.monotonic() - started
    wait_results(events, 10)
    total = time.monotonic() - started
    # 10 messages, 2 at a time, 0.2 s each: 5 rounds. Window 1 would take 10, window 3 only 4.
    assert 0.95 <= total < 1.6, total
    # submit() keeps at most 2 × window handed over: it returned once 6 were answered.
    assert blocked >= 0.55, blocked


def test_tps_limit(smsc_factory: Callable[..., SmscProcess], connect: Connect) -> None:
    smsc = smsc_factory("happy", no_receipts=True)
    connector, events = connect(smsc, tps=40, window=10)
    started = time.monotonic()
    connector.submit([msg(i) for i in range(40)])
    wait_results(events, 40)
    elapsed = time.monotonic() - started
    assert 0.85 <= elapsed < 2.5, elapsed


def test_tcp_nodelay_is_set(smsc: SmscProcess, connect: Connect) -> None:
    connect(smsc)
    assert nodelay_states("127.0.0.1", smsc.port) == [True]


def test_the_connector_runs_on_uvloop(smsc: SmscProcess, connect: Connect) -> None:
    # the standard asyncio loop costs a third of the dispatch rate (ftpbatch/dispatch/smpp/loop.py)
    _, events = connect(smsc)
    assert "uvloop" in next(detail for up, detail in events.states if up)


def test_stop_unbinds_cleanly(smsc: SmscProcess, connect: Connect) -> None:
    connector, events = connect(smsc)
    connector.submit([msg(i) for i in range(20)])
    wait_results(events, 20)
    connector.stop()
    assert not connector.is_up
    assert smsc.wait_for(lambda s: len(s.events("unbind")) == 1 and len(s.events("disconnect")) == 1)
    assert events.states[-1][0] is False and "stopped" in events.states[-1][1]
    connector.submit([msg(99)])  # after stop: handed straight back
    assert events.by_message()[99][0].retry


def test_stop_answers_everything_outstanding(smsc_factory: Callable[..., SmscProcess], connect: Connect) -> None:
    smsc = smsc_factory("happy", resp_delay=0.3, no_receipts=True)
    connector, events = connect(smsc, window=5)
    connector.submit([msg(i) for i in range(10)])  # 5 in flight, 5 waiting
    time.sleep(0.1)
    connector.stop(timeout=2.0)
    assert_once_each(events, range(10))
    ok = events.ok()
    assert len(ok) == 5  # the in-flight ones were answered before the unbind
    assert all(r.retry for r in events.results if not r.upstream_id)
    assert len(smsc.events("unbind")) == 1


def test_unreachable_smsc_hands_messages_back(connect: Connect, tmp_path: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    class Nowhere:
        def url(self, **options: Any) -> str:
            return f"smpp://esme:secret@127.0.0.1:{port}?" + "&".join(f"{k}={v}" for k, v in options.items())

    connector, events = connect(Nowhere(), wait_up=False, connect_timeout=0.5, response_timeout=0.5)  # type: ignore[arg-type]
    connector.submit([msg(i) for i in range(3)])
    wait_results(events, 3, timeout=5)
    assert all(r.retry for r in events.results)
    assert not connector.is_up
    assert events.states and not any(events.ups())
    assert "failed" in events.states[0][1]
    connector.submit([msg(10)])  # still down: straight back, no blocking
    wait_results(events, 4, timeout=1)


def test_bad_password_is_reported_and_retried(smsc: SmscProcess) -> None:
    bad = SmppConnector.from_url(smsc.url(password="wrong", connect_timeout=0.3, **FAST))  # type: ignore[arg-type]
    bad_events = CollectingEvents()
    bad.start(bad_events)
    try:
        assert bad_events.wait_until(lambda e: len(e.states) >= 2, 5)
        assert not any(bad_events.ups())
        assert all("bind" in detail and "failed" in detail for _, detail in bad_events.states)
        assert "ESME_RINVPASWD" in bad_events.states[0][1]  # the refusal is named, not a timeout
        assert {b["status"] for b in smsc.events("bind") if b["type"] == "transceiver"} >= {"ESME_RINVPASWD"}
    finally:
        bad.stop()
