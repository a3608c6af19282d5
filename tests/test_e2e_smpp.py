"""``ftpbatch serve --connector smpp://...`` against the independent test SMSC (another SMPP implementation)."""

from __future__ import annotations

import collections
import io
from pathlib import Path


from .helpers import ServerProcess, add_product, read_report, wait_for_summary

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
