"""Each batch format comes out as the same canonical chunks (DESIGN §4)."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gzip
import io
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook

from ftpbatch.parse import CHUNK_COLUMNS, FileCredentials, ParsedFile, open_batch

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
NO_PASSWORD = FileCredentials("shop", lambda password: False)


def parse(path: Path, credentials: FileCredentials = NO_PASSWORD, **kwargs: int) -> tuple[ParsedFile, pd.DataFrame]:
    parsed = open_batch(path, path.name, credentials, **kwargs)
    chunks = list(parsed.chunks)
    return parsed, pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def records(frame: pd.DataFrame, *columns: str) -> list[tuple[object, ...]]:
    """Rows as tuples, with missing values as None so they compare plainly."""
    subset = frame[list(columns)].astype(object)
    return [tuple(None if pd.isna(v) else v for v in row) for row in subset.itertuples(index=False)]


# --- the chunk contract ---------------------------------------------------


def test_sample_hello_csv_keeps_numbers_as_written() -> None:
    parsed, rows = parse(SAMPLES / "hello.csv")
    assert (parsed.format, parsed.encoding, parsed.callback_level) == ("csv", "utf-8", None)
    assert list(rows.columns) == list(CHUNK_COLUMNS)
    assert records(rows, "row", "to", "text") == [
        (1, "07700900001", "Hello from ftpbatch!"),
        (2, "+447700900002", "Hello to an international number."),
        (3, "07700900003", "Hi, commas are fine inside double quotes."),
        (4, "07700900004", "Your order #1234 has shipped."),
        (5, "07700900005", "Last one: see you soon."),
    ]
    assert rows["row"].dtype == np.int64
    assert all(rows[c].dtype == "str" for c in CHUNK_COLUMNS[1:])
    assert rows[["from", "climsgid", "error_code", "error_text"]].isna().all().all()


def test_rows_are_numbered_across_chunks(tmp_path: Path) -> None:
    lines = "".join(f"0770090{i:04d},message {i}\n" for i in range(1, 8))
    path = write(tmp_path, "seven.csv", "to,text\n" + lines)
    chunks = list(open_batch(path, "seven.csv", NO_PASSWORD, chunk_rows=3).chunks)
    assert [len(c) for c in chunks] == [2, 3, 2]  # the header takes a slot of the first read
    assert [list(c["row"]) for c in chunks] == [[1, 2], [3, 4, 5], [6, 7]]
    assert [list(c.index) for c in chunks] == [[0, 1], [0, 1, 2], [0, 1]]
    assert chunks[2]["text"].tolist() == ["message 6", "message 7"]


# --- CSV ------------------------------------------------------------------


def test_header_aliases_are_case_insensitive(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "aliases.csv",
        " MSISDN ,Message,Sender ID,Client-ID,scheduled_time,Deliv_Time,VALIDITY\n"
        "447700900001,hi,MyShop,ref-1,2025-06-01T10:00:00Z,30,1440\n",
    )
    _, rows = parse(path)
    assert records(rows, *CHUNK_COLUMNS[:8]) == [
        (1, "447700900001", "hi", "MyShop", "ref-1", "2025-06-01T10:00:00Z", "30", "1440")
    ]


@pytest.mark.parametrize(
    ("header", "column", "value"),
    [
        ("number,text", "to", "447700900001"),
        ("Mobile,text", "to", "447700900001"),
        ("phone,text", "to", "447700900001"),
        ("recipient,text", "to", "447700900001"),
        ("destination,text", "to", "447700900001"),
        ("to,body", "text", "hi"),
        ("to,msg", "text", "hi"),
        ("to,text,sender", "from", "Shop"),
        ("to,text,reference", "climsgid", "Shop"),
    ],
)
def test_each_alias(tmp_path: Path, header: str, column: str, value: str) -> None:
    data = header + "\n" + ",".join(["447700900001", "hi", "Shop"][: header.count(",") + 1]) + "\n"
    _, rows = parse(write(tmp_path, "a.csv", data))
    assert rows.loc[0, column] == value


def test_templates_by_name_and_by_position(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "templates.csv",
        "to,text,First Name,Amount\n"
        "447700900001,Hi #first name#: #AMOUNT# due (#field4#) to #Field1#,Fred,£15.50\n"
        "447700900002,Hi #First Name#: #amount# due,Ann,\n"
        "447700900003,No placeholder # here,Joe,3\n"
        "447700900004,#unknown# stays,Sue,4\n",
    )
    _, rows = parse(path)
    assert rows["text"].tolist() == [
        "Hi Fred: £15.50 due (£15.50) to 447700900001",
        "Hi Ann:  due",
        "No placeholder # here",
        "#unknown# stays",
    ]


def test_templates_with_non_ascii_names(tmp_path: Path) -> None:
    path = write(tmp_path, "fr.csv", "to;text;Prénom\n447700900001;Bonjour #PRÉNOM# et #prénom#;Zoé\n")
    _, rows = parse(path)
    assert rows["text"].tolist() == ["Bonjour Zoé et Zoé"]


def test_templates_in_a_large_chunk_are_per_row(tmp_path: Path) -> None:
    body = "".join(f"4477009{i:05d},Dear #name# (#field1#),N{i}\n" for i in range(2000))
    _, rows = parse(write(tmp_path, "many.csv", "to,text,name\n" + body), chunk_rows=700)
    assert rows["text"].iloc[0] == "Dear N0 (447700900000)"
    assert rows["text"].iloc[1999] == "Dear N1999 (447700901999)"
    assert rows["row"].tolist() == list(range(1, 2001))


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_delimiter_is_detected(tmp_path: Path, delimiter: str) -> None:
    # Commas inside the texts must not fool the sniffer into splitting on them.
    lines = ["to", "text", "from"], ["07700900001", "Hi, Fred, hello", "Shop"], ["07700900002", "a,b,c", "Shop"]
    data = "\n".join(delimiter.join(cells) for cells in lines) + "\n"
    if delimiter == ",":
        data = 'to,text,from\n07700900001,"Hi, Fred, hello",Shop\n07700900002,"a,b,c",Shop\n'
    _, rows = parse(write(tmp_path, "d.txt", data))
    assert records(rows, "to", "text", "from") == [
        ("07700900001", "Hi, Fred, hello", "Shop"),
        ("07700900002", "a,b,c", "Shop"),
    ]


def test_sniffer_guess_missing_from_the_header_is_overruled(tmp_path: Path) -> None:
    # csv.Sniffer reads "'a';'b'" as quoted fields split by ';', but the
    # header line has no ';' at all: the header's own delimiter wins.
    data = "to,text\n447700900001,options: 'a';'b';'c'\n447700900002,hi\n"
    _, rows = parse(write(tmp_path, "q.csv", data))
    assert records(rows, "to", "text") == [("447700900001", "options: 'a';'b';'c'"), ("447700900002", "hi")]


def test_sample_semicolon(tmp_path: Path) -> None:
    parsed, rows = parse(SAMPLES / "hello-semicolon.csv")
    assert parsed.format == "csv"
    assert records(rows, "row", "to", "text", "from", "climsgid") == [
        (1, "07700900001", "Hello Fred, your table for 2 is booked.", "MyShop", "order-1001"),
        (2, "07700900002", "Hello Ann, your table for 4 is booked.", "MyShop", "order-1002"),
        (3, "07700900003", "Hello Joe, your order order-1003 is ready.", "MyShop", "order-1003"),
    ]


def test_quoting_blank_lines_and_values_that_look_missing(tmp_path: Path) -> None:
    data = (
        '\n\nto,text,from\n'
        '"07700900001","He said ""hi""\nover two lines",\n'
        '\n'
        '   \n'
        ',,\n'  # an Excel export's empty row: not a recipient
        '007700900002,NA,null\n'
        ',no number,\n'
    )
    _, rows = parse(write(tmp_path, "q.csv", data))
    assert records(rows, "row", "to", "text", "from") == [
        (1, "07700900001", 'He said "hi"\nover two lines', None),
        (2, "007700900002", "NA", "null"),
        (3, "", "no number", None),
    ]


def test_empty_cells_row_before_the_header(tmp_path: Path) -> None:
    # pandas keeps ",," as a row (only blank lines are skipped): the header is
    # the first row with content, and neither is a recipient.
    _, rows = parse(write(tmp_path, "pre.csv", ",,\r\n\r\nto,text\r\n447700900001,hi\r\n"))
    assert records(rows, "row", "to", "text") == [(1, "447700900001", "hi")]


def test_trailing_delimiter_on_every_line_is_harmless(tmp_path: Path) -> None:
    _, rows = parse(write(tmp_path, "t.csv", "to,text\n07700900001,a,\n07700900002,b,\n"))
    assert records(rows, "to", "text") == [("07700900001", "a"), ("07700900002", "b")]


def test_short_rows_get_empty_values(tmp_path: Path) -> None:
    _, rows = parse(write(tmp_path, "s.csv", "to,text,from\n07700900001\n07700900002,b\n"))
    assert records(rows, "to", "text", "from") == [("07700900001", "", None), ("07700900002", "b", None)]


def test_headerless_file_reads_to_text_from(tmp_path: Path) -> None:
    data = "+44 (0)7700 900001,Hello,Shop\n07700-900-002,Second\n447700900003,Third,Other\n"
    _, rows = parse(write(tmp_path, "nohdr.csv", data))
    assert records(rows, "row", "to", "text", "from") == [
        (1, "+44 (0)7700 900001", "Hello", "Shop"),
        (2, "07700-900-002", "Second", None),
        (3, "447700900003", "Third", "Other"),
    ]


def test_short_number_in_first_cell_is_a_header(tmp_path: Path) -> None:
    # "1234" has too few digits to be a phone number, so the row is a header
    # and the file is refused for lacking a 'to' column.
    from ftpbatch.errors import BatchRejected

    with pytest.raises(BatchRejected, match="no 'to' column"):
        parse(write(tmp_path, "h.csv", "1234,text\n07700900001,x\n"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.from_regex(r"\+?[0-9]{8,15}", fullmatch=True),
            st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00#"), min_size=1),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_csv_written_by_the_csv_module_round_trips(rows_in: list[tuple[str, str]]) -> None:
    # Whatever text a spreadsheet tool writes (quotes, delimiters, line breaks,
    # any script), the parser returns it unchanged, numbers included.
    rows_in = [(to, text) for to, text in rows_in if text.strip()]
    if not rows_in:
        return
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["to", "text"])
    writer.writerows(rows_in)
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), "rt.csv", buffer.getvalue())
        _, rows = parse(path)
    assert records(rows, "to", "text") == rows_in


# --- key:value ------------------------------------------------------------


def test_sample_kv_with_csv_lines_and_templates() -> None:
    parsed, rows = parse(SAMPLES / "hello-kv.txt")
    assert (parsed.format, parsed.encoding, parsed.callback_level) == ("kv", "utf-8", None)
    assert records(rows, "row", "to", "text", "from") == [
        (1, "07700900001", "Hi Fred, your balance is £15.50.", "MyShop"),
        (2, "+447700900002", "Hi Ann, your balance is £3.20.", "MyShop"),
        (3, "07700900003", "Hi Joe, your balance is £0.00.", "MyShop"),
    ]


def test_sample_kv_simple() -> None:
    parsed, rows = parse(SAMPLES / "hello-kv-simple.txt")
    assert parsed.callback_level == 3
    text = "Hello from ftpbatch!\nThis text has two lines."
    assert records(rows, "row", "to", "text", "from") == [
        (1, "07700900001", text, "MyShop"),
        (2, "+447700900002", text, "MyShop"),
        (3, "07700900003", text, "MyShop"),
    ]


def test_kv_every_key(tmp_path: Path) -> None:
    checked: list[str] = []

    def check(password: str) -> bool:
        checked.append(password)
        return password == "s3cret"

    data = (
        "api_id:shop\n"
        "user: shop \n"
        "password:s3cret\n"
        "to:447700900001\n"  # recipients may come before the text
        "data:Hello #field1#, this is a long line that a mail \n"
        "data:client wrapped\n"
        "csv:447700900002,Fred,ignored\n"
        "TO: 447700900003 , ,447700900004\n"
        "from:Shop\n"
        "climsgid:batch-7\n"
        "deliv_time:30\n"
        "scheduled_time:2025-06-01T10:00:00+01:00\n"
        "validity:1440\n"
        "callback:0\n"
        "\n"
        "csv:447700900005\n"
    )
    parsed, rows = parse(write(tmp_path, "all.txt", data), FileCredentials("shop", check))
    assert checked == ["s3cret"]
    assert parsed.callback_level == 0
    long = "this is a long line that a mail client wrapped"
    assert records(rows, "row", "to", "text") == [
        (1, "447700900001", f"Hello , {long}"),
        (2, "447700900002", f"Hello Fred, {long}"),
        (3, "447700900003", f"Hello , {long}"),
        (4, "447700900004", f"Hello , {long}"),
        (5, "447700900005", f"Hello , {long}"),
    ]
    assert set(records(rows, "from", "climsgid", "deliv_time", "scheduled_time", "validity")) == {
        ("Shop", "batch-7", "30", "2025-06-01T10:00:00+01:00", "1440")
    }
    assert rows["error_code"].isna().all()


def test_kv_password_not_checked_without_password_line(tmp_path: Path) -> None:
    def never(password: str) -> bool:
        raise AssertionError("the slow hash must not run")

    _, rows = parse(write(tmp_path, "k.txt", "text:hi\nto:447700900001\n"), FileCredentials("shop", never))
    assert records(rows, "to", "text") == [("447700900001", "hi")]


def test_kv_unicode_hex(tmp_path: Path) -> None:
    hex_text = "Привет #field1# ✓".encode("utf-16-be").hex().upper()
    data = f"unicode:1\ntext:{hex_text[:20]}\ntext:{hex_text[20:]}\ncsv:447700900001,Фёдор\n"
    _, rows = parse(write(tmp_path, "u.txt", data))
    # hex split over several text lines joins with a line break, which is white space in hex
    assert records(rows, "text", "error_code") == [("Привет Фёдор ✓", None)]


def test_kv_invalid_unicode_hex_marks_rows_116(tmp_path: Path) -> None:
    data = "unicode:1\ntext:0048006Z\nto:447700900001,447700900002\n"
    _, rows = parse(write(tmp_path, "bad.txt", data))
    assert rows["error_code"].tolist() == ["116", "116"]
    assert rows["text"].tolist() == ["0048006Z", "0048006Z"]
    assert "not valid hex UCS-2" in rows["error_text"].iloc[0]


def test_kv_csv_delimiter_tab(tmp_path: Path) -> None:
    data = "text:#field2#/#field1#\ndelimiter:\t\ncsv:447700900001\tA\tB\n"
    _, rows = parse(write(tmp_path, "tab.txt", data))
    assert rows["text"].tolist() == ["B/A"]


def test_kv_field_references_ignore_case(tmp_path: Path) -> None:
    data = "text:#FIELD1#/#field0#/#Field2#/#field3#\ncsv:447700900001,a,b\ncsv:447700900002\n"
    _, rows = parse(write(tmp_path, "k.txt", data))
    assert rows["text"].tolist() == ["a/#field0#/b/", "/#field0#//"]


def test_kv_chunks(tmp_path: Path) -> None:
    data = "text:x\n" + "".join(f"to:4477009000{i:02d}\n" for i in range(10))
    chunks = list(open_batch(write(tmp_path, "k.txt", data), "k.txt", NO_PASSWORD, chunk_rows=4).chunks)
    assert [list(c["row"]) for c in chunks] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]


# --- Excel ----------------------------------------------------------------


def _workbook(tmp_path: Path, rows: list[list[object]], name: str = "b.xlsx") -> Path:
    book = Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    book.create_sheet("Second").append(["to", "text"])  # only the first sheet counts
    path = tmp_path / name
    book.save(path)
    return path


def test_xlsx_numbers_come_out_as_integers(tmp_path: Path) -> None:
    path = _workbook(
        tmp_path,
        [
            ["Phone", "Message", "Amount", "Scheduled_Time", "Sender"],
            [447700900123, "Pay #amount#", 15.5, dt.datetime(2025, 6, 1, 10, 30), "Shop"],
            [447700900124.0, "Pay #Amount#", 20.0, None, None],
            [None, None, None, None, None],
            ["+447700900125", "Pay #field3#", "£1", "2025-06-01T10:00:00Z", 12345],
        ],
    )
    parsed, rows = parse(path)
    assert (parsed.format, parsed.callback_level) == ("xlsx", None)
    assert records(rows, "row", "to", "text", "scheduled_time", "from") == [
        (1, "447700900123", "Pay 15.5", "2025-06-01T10:30:00", "Shop"),
        (2, "447700900124", "Pay 20", None, None),
        (3, "+447700900125", "Pay £1", "2025-06-01T10:00:00Z", "12345"),
    ]


def test_xlsx_numbers_stored_as_floats(tmp_path: Path) -> None:
    # Many writers store 447700900124 as "4.47700900124E+11"; openpyxl reads
    # that back as a float, which must still print as the whole number.
    path = _workbook(tmp_path, [["to", "text", "n"], [447700900124, "#n#", 1234]])
    patched = tmp_path / "floats.xlsx"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(patched, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                assert b"<v>447700900124</v>" in data
                data = data.replace(b"<v>447700900124</v>", b"<v>4.47700900124E+11</v>")
                data = data.replace(b"<v>1234</v>", b"<v>12.5</v>")
            target.writestr(item, data)
    _, rows = parse(patched)
    assert records(rows, "to", "text") == [("447700900124", "12.5")]


def test_xlsx_headerless_and_chunked(tmp_path: Path) -> None:
    path = _workbook(tmp_path, [[447700900000 + i, f"text {i}"] for i in range(1, 6)])
    chunks = list(open_batch(path, "b.xlsx", NO_PASSWORD, chunk_rows=2).chunks)
    assert [list(c["row"]) for c in chunks] == [[1, 2], [3, 4], [5]]
    assert chunks[2]["to"].tolist() == ["447700900005"]
    assert chunks[0]["text"].tolist() == ["text 1", "text 2"]


def test_xlsx_inside_zip_and_gzip(tmp_path: Path) -> None:
    path = _workbook(tmp_path, [["to", "text"], [447700900001, "hi"]])
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as archive:
        archive.write(path, "batch.xlsx")
    (tmp_path / "b.xlsx.gz").write_bytes(gzip.compress(path.read_bytes()))
    for name in ("b.zip", "b.xlsx.gz"):
        parsed, rows = parse(tmp_path / name)
        assert parsed.format == "xlsx"
        assert records(rows, "to", "text") == [("447700900001", "hi")]


def _open_descriptors_of(path: Path) -> int:
    """How many file descriptors of this process point at ``path`` (Linux: /proc/self/fd)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
    return count


def test_unread_xlsx_releases_its_file(tmp_path: Path) -> None:
    # A caller that gives up before the first chunk must not leak the open workbook.
    import gc

    path = _workbook(tmp_path, [["to", "text"], [447700900001, "hi"]])
    (tmp_path / "b.xlsx.gz").write_bytes(gzip.compress(path.read_bytes()))
    for name in ("b.xlsx", "b.xlsx.gz"):
        parsed = open_batch(tmp_path / name, name, NO_PASSWORD)
        assert _open_descriptors_of(tmp_path / name) == 1  # the probe sees the open workbook
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            del parsed
            gc.collect()
        assert _open_descriptors_of(tmp_path / name) == 0, f"{name} still open after its batch was dropped"
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]


# --- compression ----------------------------------------------------------


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    data = gzip.compress((SAMPLES / "hello.csv").read_bytes())
    parsed, rows = parse(write(tmp_path, "upload.csv", data))  # no .gz extension
    assert parsed.format == "csv"
    assert rows["to"].tolist()[:2] == ["07700900001", "+447700900002"]
    assert len(rows) == 5


def test_zip_with_one_member_and_archiver_junk(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "batch.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("folder/", "")
        archive.writestr("__MACOSX/folder/._kv.txt", b"\x00\x05\x16\x07junk")
        archive.writestr("folder/.DS_Store", b"\x00\x00\x00\x01Bud1")
        archive.write(SAMPLES / "hello-kv-simple.txt", "folder/kv.txt")
    parsed, rows = parse(tmp_path / "batch.zip")
    assert (parsed.format, parsed.callback_level) == ("kv", 3)
    assert rows["to"].tolist() == ["07700900001", "+447700900002", "07700900003"]
