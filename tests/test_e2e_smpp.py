"""``ftpbatch serve --connector smpp://...`` against the independent test SMSC (another SMPP implementation)."""

from __future__ import annotations

import collections
import io
import time
from pathlib import Path

from ftpbatch.ledger import Ledger

from .helpers import ServerProcess, add_product, find_summary, read_report, wait_for_summary

LONG_GSM = "Your parcel is on its way; track it with the code below. " * 4  # ~236 chars: 2 parts
LONG_UCS2 = "Привет! Ваш заказ отправлен, ожидайте доставку завтра. " * 2  # ~110 chars UCS-2: 2 parts


def campaign(rows: int, bad_every: int = 0) -> tuple[bytes, dict[str, str]]:
    """A CSV of distinct destinations with short, long GSM and long UCS-2 texts."""
    texts = {}
    lines = ["to,text"]
    for n in range(rows):
        number = f"4479{n:08d}"
        if bad_every and n % bad_every == bad_every - 1:
            number = "12"  # rejected at intake (105), never submitted
        text = (f"Hi {n}, short note", LONG_GSM + str(n), LONG_UCS2 + str(n))[n % 3]
        texts[number] = text
        lines.append(f'{number},"{text}"')
    return ("\n".join(lines) + "\n").encode(), texts


def upload(server: ServerProcess, account, name: str, data: bytes) -> None:
    with server.ftp(account) as client:
        client.storbinary(f"STOR /inbox/{name}", io.BytesIO(data))


def submits_by_dest(smsc) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = collections.defaultdict(list)
    for event in smsc.submits():
        grouped[event["dest"]].append(event)
    return grouped


def test_2000_rows_over_ftp_each_message_submitted_once_with_consistent_udh(tmp_path: Path, smsc_factory):
    smsc = smsc_factory("happy", receipt_delay=0.05)
    root = tmp_path / "root"
    account = add_product(root, "bank", "bank-password")
    data, _ = campaign(2000, bad_every=100)
    with ServerProcess(root, "--connector", smsc.url(window=50)) as server:
        upload(server, account, "campaign.csv", data)
        summary = wait_for_summary(root, "bank", "campaign.csv", ("complete",), timeout=90)
        report = read_report(root, "bank", summary)

    assert summary["counts"]["rows"] == 2000
    assert summary["counts"]["rejected"] == 20
    assert summary["counts"]["delivered"] == 1980
    by_dest = submits_by_dest(smsc)
    accepted = [r for r in report if r["status"] != "005"]
    assert len(accepted) == 1980 and len(by_dest) == 1980
    for row in accepted:
        parts = by_dest[row["to"]]
        # exactly once: one submit_sm per part, never a second copy of the message
        assert len(parts) == int(row["parts"]), row
        if len(parts) > 1:
            udhs = [p["udh"] for p in parts]
            assert len({u["ref"] for u in udhs}) == 1
            assert sorted(u["seq"] for u in udhs) == list(range(1, len(parts) + 1))
            assert {u["total"] for u in udhs} == {len(parts)}
        assert row["status"] == "004" and row["message_id"]
    assert sum(int(r["parts"]) for r in accepted) == summary["parts"]
    assert any(int(r["parts"]) == 2 for r in accepted)


def test_rejected_destinations_are_reported_with_105(tmp_path: Path, smsc_factory):
    smsc = smsc_factory("reject_some", reject_suffix="13")
    root = tmp_path / "root"
    account = add_product(root, "shop", "shop-password")
    numbers = [f"447700900{n:03d}" for n in range(10, 30)] + ["447700901113"]
    data = ("to,text\n" + "".join(f"{n},hello {n}\n" for n in numbers)).encode()
    with ServerProcess(root, "--connector", smsc.url()) as server:
        upload(server, account, "some.csv", data)
        summary = wait_for_summary(root, "shop", "some.csv", ("complete",), timeout=30)
        report = {r["to"]: r for r in read_report(root, "shop", summary)}
    assert report["447700900013"]["status"] == "005"
    assert report["447700900013"]["error_code"] == "105"
    assert report["447700901113"]["error_code"] == "105"
    assert report["447700900014"]["status"] == "004"
    assert summary["counts"]["delivered"] == 19
    assert summary["counts"]["failed"] == 2


def test_connection_dropped_mid_window_recovers_and_reports_every_message(tmp_path: Path, smsc_factory):
    smsc = smsc_factory("drop_mid_window", drop_after=40, drop_times=2)
    root = tmp_path / "root"
    account = add_product(root, "shop", "shop-password")
    data = ("to,text\n" + "".join(f"4477009{n:05d},drop test {n}\n" for n in range(300))).encode()
    # receipts due on a connection that drops are gone (this SMSC does not
    # store them): a short receipt timeout lets the batch complete anyway
    url = smsc.url(window=20, reconnect_min=0.1, receipt_timeout=3)
    with ServerProcess(root, "--connector", url) as server:
        upload(server, account, "drops.csv", data)
        summary = wait_for_summary(root, "shop", "drops.csv", ("complete",), timeout=60)
        report = read_report(root, "shop", summary)
    counts = summary["counts"]
    assert counts["delivered"] + counts["receipt_timeouts"] == 300
    assert counts["submitted"] == counts["receipt_timeouts"]  # the report says which ones lack a receipt
    assert len(smsc.events("bind")) >= 3  # bound again after each drop
    # messages whose submit was cut by the drop were sent again: at most a window's worth
    by_dest = submits_by_dest(smsc)
    resent = [d for d, events in by_dest.items() if len(events) > 1]
    assert len(resent) <= 2 * 20
    assert {r["status"] for r in report} <= {"003", "004"}
    assert all(r["message_id"] for r in report)


def test_receipts_before_submit_responses_are_not_lost(tmp_path: Path, smsc_factory):
    smsc = smsc_factory("receipt_first")
    root = tmp_path / "root"
    account = add_product(root, "shop", "shop-password")
    data = ("to,text\n" + "".join(f"4477009{n:05d},early {n}\n" for n in range(200))).encode()
    with ServerProcess(root, "--connector", smsc.url(window=20)) as server:
        upload(server, account, "early.csv", data)
        summary = wait_for_summary(root, "shop", "early.csv", ("complete",), timeout=60)
    assert summary["counts"]["delivered"] == 200


def test_sigkill_mid_batch_loses_nothing_and_flags_bounded_duplicates(tmp_path: Path, smsc_factory):
    window = 10
    # slow answers so that the kill lands with submits in flight
    smsc = smsc_factory("happy", resp_delay=0.01, receipt_delay=0.05)
    root = tmp_path / "root"
    account = add_product(root, "bank", "bank-password")
    rows = 3000
    data = ("to,text\n" + "".join(f"4479{n:08d},kill test {n}\n" for n in range(rows))).encode()
    url = smsc.url(window=window, receipt_timeout=3)
    server = ServerProcess(root, "--connector", url).start()
    try:
        upload(server, account, "kill.csv", data)
        assert smsc.wait_for(lambda s: len(s.submits()) >= 400, timeout=60)
    finally:
        server.kill()  # SIGKILL: no clean shutdown, answers in flight are lost
    sent_before = len(smsc.submits())
    assert sent_before < rows, "the batch finished before the kill; make the SMSC slower"

    with ServerProcess(root, "--connector", url) as server:
        summary = wait_for_summary(root, "bank", "kill.csv", ("complete",), timeout=90)
        report = read_report(root, "bank", summary)

    assert summary["counts"]["rows"] == rows
    assert [int(r["row"]) for r in report] == list(range(1, rows + 1))
    counts = summary["counts"]
    # nothing lost: every message was submitted; receipts sent to the killed
    # process are gone (this SMSC does not store them) and time out instead
    assert counts["queued"] == 0 and counts["failed"] == 0
    assert counts["delivered"] + counts["receipt_timeouts"] == rows
    assert all(r["message_id"] for r in report)
    by_dest = submits_by_dest(smsc)
    assert set(by_dest) == {r["to"] for r in report}
    resent = {d for d, events in by_dest.items() if len(events) > 1}
    flagged = {r["to"] for r in report if r["possible_duplicate"] == "1"}
    assert resent <= flagged  # every message sent twice is flagged in the report
    assert len(flagged) <= 2 * window  # and they are bounded by the window
    assert summary["counts"]["possible_duplicates"] == len(flagged)


# ---------------------------------------------------------------- lose nothing
def test_five_sigkills_with_receipts_in_flight_every_message_reaches_004(tmp_path: Path, smsc_factory):
    """Kill the gateway's process group five times mid-batch; every receipt still lands.

    The SMSC refuses query_sm, so only re-delivery of unanswered deliver_sm
    can bring back a receipt that reached a killed gateway: if a receipt were
    answered before it was stored, its message would stay at 003 and the
    batch (receipt_timeout 48 h) would not complete.
    """
    window = 10
    smsc = smsc_factory("happy", resp_delay=0.004, receipt_delay=0.2, query_refusal="nack")
    root = tmp_path / "root"
    account = add_product(root, "bank", "bank-password")
    rows = 2500
    data = ("to,text\n" + "".join(f"4479{n:08d},kill loop {n}\n" for n in range(rows))).encode()
    url = smsc.url(window=window, reconnect_min=0.1)
    for kill, at in enumerate((200, 600, 1000, 1500, 2000)):
        server = ServerProcess(root, "--connector", url, group=True).start()
        try:
            if kill == 0:
                upload(server, account, "kill.csv", data)
            assert smsc.wait_for(lambda s: len(s.submits()) >= at, timeout=60), len(smsc.submits())
        finally:
            server.kill_group()
    assert len(smsc.submits()) < rows + 5 * 2 * window, "the batch finished before the last kill"
    with ServerProcess(root, "--connector", url, group=True) as server:
        summary = wait_for_summary(root, "bank", "kill.csv", ("complete",), timeout=60)
        report = read_report(root, "bank", summary)

    assert {r["status"] for r in report} == {"004"}, collections.Counter(r["status"] for r in report)
    assert summary["counts"]["delivered"] == rows and summary["counts"]["receipt_timeouts"] == 0
    by_dest = submits_by_dest(smsc)
    assert set(by_dest) == {r["to"] for r in report}
    resent = {d for d, events in by_dest.items() if len(events) > 1}
    flagged = {r["to"] for r in report if r["possible_duplicate"] == "1"}
    assert resent <= flagged and len(flagged) <= 5 * 2 * window
    # the kills did land with receipts sent and not yet answered, and the SMSC sent them again
    assert smsc.events("unanswered"), "no kill caught a receipt in flight; the test proved nothing"
    assert any(e.get("redelivered") for e in smsc.events("receipt"))
    assert len(smsc.events("query_sm")) <= window  # refused once, then never asked again


def test_dropped_receipts_are_recovered_by_query_sm(tmp_path: Path, smsc_factory):
    smsc = smsc_factory("happy", drop_receipt_suffix="7", stat=["57=UNDELIV", "3=UNDELIV"])
    root = tmp_path / "root"
    account = add_product(root, "shop", "shop-password")
    numbers = [f"4477009{n:05d}" for n in range(100)]
    data = ("to,text\n" + "".join(f"{n},hello {n}\n" for n in numbers)).encode()
    env = {"FTPBATCH_DISPATCH_RECEIPT_QUERY_AFTER": "1"}
    with ServerProcess(root, "--connector", smsc.url(), env=env) as server:
        upload(server, account, "dropped.csv", data)
        summary = wait_for_summary(root, "shop", "dropped.csv", ("complete",), timeout=40)
        report = {r["to"]: r for r in read_report(root, "shop", summary)}
    dropped = {e["dest"] for e in smsc.submits() if e.get("receipt") == "dropped"}
    assert len(dropped) == 10
    for number in numbers:
        expected = "007" if number.endswith(("3", "57")) else "004"  # ...57: dropped, and undeliverable
        assert report[number]["status"] == expected, (number, report[number])
    assert summary["counts"]["delivered"] == 89 and summary["counts"]["failed"] == 11
    queried = collections.Counter(e["id"] for e in smsc.events("query_sm"))
    dropped_ids = {e["message_id"] for e in smsc.submits() if e.get("receipt") == "dropped"}
    assert dropped_ids <= set(queried)  # each dropped one was asked about


def test_smsc_refusing_query_sm_is_not_asked_again(tmp_path: Path, smsc_factory):
    smsc = smsc_factory("happy", drop_receipt_suffix="7", query_refusal="status")
    root = tmp_path / "root"
    account = add_product(root, "shop", "shop-password")
    data = ("to,text\n" + "".join(f"4477009{n:05d},hello {n}\n" for n in range(50))).encode()
    env = {"FTPBATCH_DISPATCH_RECEIPT_QUERY_AFTER": "0.5"}
    with ServerProcess(root, "--connector", smsc.url(window=4), env=env) as server:
        upload(server, account, "refused.csv", data)
        assert smsc.wait_for(lambda s: len(s.events("query_sm")) >= 1, timeout=30)
        first = wait_for_summary(root, "shop", "refused.csv", ("dispatching",), timeout=30)
        # several query sweeps (one a second) later: nothing more asked
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            time.sleep(0.2)
        asked = len(smsc.events("query_sm"))
    assert asked <= 2  # at most the queries already in flight when the refusal came back (half the window)
    with ServerProcess(root, "--connector", smsc.url(window=4), env=env):  # remembered across a restart
        time.sleep(3)
    assert len(smsc.events("query_sm")) == asked
    report = read_report(root, "shop", find_summary(root, "shop", "refused.csv") or first)
    statuses = collections.Counter(r["status"] for r in report)
    assert statuses == {"004": 45, "003": 5}


def test_mo_messages_are_stored_with_decoded_text(tmp_path: Path, smsc_factory):
    smsc = smsc_factory("happy", mo=["447700900001:12345:STOP", "447700900002:12345:Привет"])
    root = tmp_path / "root"
    add_product(root, "shop", "shop-password")
    with ServerProcess(root, "--connector", smsc.url()):
        assert smsc.wait_for(lambda s: len(s.events("deliver_sm_resp")) == 2, timeout=20)
    ledger = Ledger(root / "ftpbatch.db")
    try:
        stored = ledger.inbound.mo_messages()
    finally:
        ledger.close()
    assert [(m.source, m.destination, m.text) for m in stored] == [
        ("447700900001", "12345", "STOP"), ("447700900002", "12345", "Привет")]
    assert [m.data_coding for m in stored] == [0, 8]
    assert all(m.account.startswith("smpp:esme@127.0.0.1:") and m.id for m in stored)
