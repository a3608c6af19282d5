"""Excel workbooks uploaded over FTP (issue 15): numbers whose leading 0 Excel dropped, and workbooks of several sheets."""

from __future__ import annotations

import io
from pathlib import Path

from openpyxl import Workbook

from .helpers import ServerProcess, add_product, read_report, upload, wait_for_summary

NOTE = (
    "read as a national number of +44: '7700900023' is not a valid international number, "
    "and spreadsheets drop a national number's leading 0"
)


def workbook(rows: list[tuple[object, str]]) -> bytes:
    book = Workbook()
    sheet = book.active
    sheet.append(["to", "text"])
    for row in rows:
        sheet.append(list(row))
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def test_an_excel_number_without_its_leading_0_goes_to_the_national_number(tmp_path: Path, smsc_factory) -> None:
    smsc = smsc_factory("happy", receipt_delay=0.05)
    root = tmp_path / "root"
    account = add_product(root, "shop", "shop-password", dial_prefix="44")
    # 07700 900023 typed into Excel is stored as the number 7700900023; the
    # German mobile is a real international number and must stay one
    data = workbook([(7700900023, "numeric cell"), ("7911123456", "text cell"), (4915112345678, "german")])
    with ServerProcess(root, "--connector", smsc.url()) as server:
        with server.ftp(account) as client:
            upload(client, "numbers.xlsx", data)
        summary = wait_for_summary(root, "shop", "numbers.xlsx", ("complete",), timeout=30)
        report = read_report(root, "shop", summary)
    sent = {event["dest"] for event in smsc.submits()}
    assert sent == {"447700900023", "447911123456", "4915112345678"}
    assert [r["to"] for r in report] == ["447700900023", "447911123456", "4915112345678"]
    assert {r["status"] for r in report} == {"004"}
    assert report[0]["note"] == NOTE
    assert report[1]["note"].startswith("read as a national number of +44: '7911123456'")
    assert report[2]["note"] == ""


def test_a_workbook_of_several_sheets_says_that_only_the_first_was_read(tmp_path: Path) -> None:
    root = tmp_path / "root"
    account = add_product(root, "shop", "shop-password", dial_prefix="44")
    book = Workbook()
    book.active.title = "Messages"
    book.active.append(["to", "text"])
    book.active.append(["07700900023", "hello"])
    book.create_sheet("Notes").append(["do not send before Monday"])
    book.create_sheet("More numbers").append(["07700900024", "never read"])
    buffer = io.BytesIO()
    book.save(buffer)
    with ServerProcess(root) as server:
        with server.ftp(account) as client:
            upload(client, "two.xlsx", buffer.getvalue())
            upload(client, "one.xlsx", workbook([("07700900025", "one sheet")]))
        several = wait_for_summary(root, "shop", "two.xlsx", ("complete",), timeout=30)
        single = wait_for_summary(root, "shop", "one.xlsx", ("complete",), timeout=30)
    assert several["counts"]["rows"] == 1
    assert several["notes"] == [
        "the workbook has 3 sheets and only the first, 'Messages', was read (not 'Notes', 'More numbers'): "
        "put every message on the first sheet, or upload each sheet as a file of its own"
    ]
    assert single["notes"] == []


def test_a_dry_run_shows_the_number_it_would_read_as_national_and_the_ignored_sheets(tmp_path: Path) -> None:
    root = tmp_path / "root"
    account = add_product(root, "shop", "shop-password", dial_prefix="44")
    book = Workbook()
    book.active.append(["to", "text"])
    book.active.append([7700900023, "numeric cell"])
    book.active.append([4915112345678, "german"])
    book.create_sheet("Notes")
    buffer = io.BytesIO()
    book.save(buffer)
    with ServerProcess(root) as server:
        with server.ftp(account) as client:
            upload(client, "check.xlsx", buffer.getvalue(), folder="/check")
        summary = wait_for_summary(root, "shop", "check.xlsx", ("checked", "rejected"), timeout=30)
        report = read_report(root, "shop", summary)
    assert summary["state"] == "checked" and summary["notes"][0].startswith("the workbook has 2 sheets")
    assert [(r["to"], r["note"]) for r in report] == [("447700900023", NOTE), ("4915112345678", "")]
