"""Every malformed file is refused with its code and a sentence saying what to fix."""

from __future__ import annotations

import codecs
import gzip
import zipfile
from pathlib import Path

import pytest
from openpyxl import Workbook

from ftpbatch import codes
from ftpbatch.errors import BatchRejected
from ftpbatch.parse import FileCredentials, decode, open_batch

CREDENTIALS = FileCredentials("shop", lambda password: password == "s3cret")


def write(tmp_path: Path, data: bytes | str, name: str = "batch.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def refused_at_open(path: Path, credentials: FileCredentials = CREDENTIALS) -> BatchRejected:
    """open_batch itself must raise: the problem is visible before any row."""
    with pytest.raises(BatchRejected) as caught:
        open_batch(path, path.name, credentials)
    return caught.value


def refused_while_reading(path: Path, chunk_rows: int = 250_000) -> BatchRejected:
    """Problems deep in the file surface from the chunk iterator."""
    parsed = open_batch(path, path.name, CREDENTIALS, chunk_rows=chunk_rows)
    with pytest.raises(BatchRejected) as caught:
        for _ in parsed.chunks:
            pass
    return caught.value


# --- empty and header-only ------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"", b"\n\r\n  \n", codecs.BOM_UTF8, codecs.BOM_UTF16_LE], ids=["zero", "blank", "bom8", "bom16"]
)
def test_empty_file(tmp_path: Path, data: bytes) -> None:
    error = refused_at_open(write(tmp_path, data))
    assert error.code == codes.E_MALFORMED
    assert "the file is empty" in error.message


def test_empty_gzip(tmp_path: Path) -> None:
    error = refused_at_open(write(tmp_path, gzip.compress(b""), "batch.csv.gz"))
    assert (error.code, "the file is empty" in error.message) == ("100", True)


def test_header_only(tmp_path: Path) -> None:
    error = refused_at_open(write(tmp_path, "to,text\r\n\r\n"))
    assert error.code == "100"
    assert error.message == "the file has a header row but no messages: add one row per message below the header"


def test_header_only_xlsx(tmp_path: Path) -> None:
    book = Workbook()
    book.active.append(["to", "text"])
    book.save(tmp_path / "b.xlsx")
    error = refused_at_open(tmp_path / "b.xlsx")
    assert (error.code, "header row but no messages" in error.message) == ("100", True)


def test_empty_xlsx(tmp_path: Path) -> None:
    Workbook().save(tmp_path / "b.xlsx")
    error = refused_at_open(tmp_path / "b.xlsx")
    assert (error.code, "first sheet of the workbook is empty" in error.message) == ("100", True)


# --- columns --------------------------------------------------------------


def test_no_to_column(tmp_path: Path) -> None:
    error = refused_at_open(write(tmp_path, "name,text\nFred,hi\n"))
    assert error.code == "100"
    assert error.message == (
        "the header row has no 'to' column (or msisdn, number, mobile, phone, recipient, destination); "
        "it has 'name', 'text': name the column with the phone numbers 'to'"
    )


def test_no_text_column(tmp_path: Path) -> None:
    error = refused_at_open(write(tmp_path, "msisdn;name\n447700900001;Fred\n"))
    assert error.code == "100"
    assert "no 'text' column (or message, body, msg)" in error.message


def test_same_column_twice(tmp_path: Path) -> None:
    error = refused_at_open(write(tmp_path, "to,text,msisdn\n447700900001,hi,447700900002\n"))
    assert error.code == "100"
    assert "the columns 'to' and 'msisdn' both give the 'to' value" in error.message


def test_headerless_single_column(tmp_path: Path) -> None:
    error = refused_at_open(write(tmp_path, "447700900001\n447700900002\n"))
    assert (error.code, "only one column" in error.message) == ("100", True)


def test_row_with_too_many_fields_names_its_line(tmp_path: Path) -> None:
    data = "to,text\n447700900001,a\n\n447700900002,hello, dear, friend\n"
    error = refused_while_reading(write(tmp_path, data))
    assert error.code == "100"
    assert error.message == (
        "line 4 has 4 fields but the header has 2: put double quotes around any value that contains "
        "the comma ',' delimiter"
    )


def test_row_with_one_unquoted_delimiter_is_not_cut(tmp_path: Path) -> None:
    # One extra field fits the spare column kept for trailing delimiters;
    # it holds text, so the row is refused rather than sent as "hello".
    data = "to;text\n447700900001;a\n\n447700900002;hello; friend\n"
    error = refused_while_reading(write(tmp_path, data))
    assert error.code == "100"
    assert error.message.startswith("message row 2 (to '447700900002') has 3 fields but the header has 2")
    assert "semicolon ';'" in error.message


def test_bad_row_deep_in_the_file_surfaces_from_the_iterator(tmp_path: Path) -> None:
    data = "to,text\n" + "447700900001,ok\n" * 50 + "447700900002,a,b,c\n"
    error = refused_while_reading(write(tmp_path, data), chunk_rows=10)
    assert "line 52 has 4 fields" in error.message


# --- bytes that are not text ----------------------------------------------


def test_undecodable_byte_names_its_offset(tmp_path: Path) -> None:
    data = b"to,text\n447700900001,caf\xe9\n447700900002,\x81\n"
    error = refused_at_open(write(tmp_path, data))
    assert error.code == "100"
    offset = data.index(b"\x81")
    assert error.message == (
        f"byte 0x81 at byte offset {offset} of the file is not valid UTF-8 or Windows-1252: "
        "save the file as UTF-8 and upload it again"
    )


@pytest.mark.parametrize("block", [4, 64, 4096])
def test_undecodable_byte_deep_in_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    monkeypatch.setattr(decode, "BLOCK_BYTES", block)
    head = b"to,text\n" + b"447700900001,fine text\n" * 300
    data = head + b"447700900002,\xe2\x80\x9d then \x9d alone\n"  # valid UTF-8 until the lone 0x9D
    error = refused_at_open(write(tmp_path, data))
    offset = data.rindex(b"\x9d")
    assert offset == len(head) + 22
    assert error.message.startswith(f"byte 0x9D at byte offset {offset} of the file")


def test_utf8_with_bom_must_stay_utf8(tmp_path: Path) -> None:
    # A byte-order mark declares UTF-8: no falling back to Windows-1252.
    data = codecs.BOM_UTF8 + b"to,text\n447700900001,caf\xe9!\n"
    error = refused_at_open(write(tmp_path, data))
    assert error.code == "100"
    offset = data.index(b"\xe9")
    assert error.message.startswith(f"byte 0xE9 at byte offset {offset} of the file is not valid UTF-8:")


def test_nul_byte(tmp_path: Path) -> None:
    # UTF-16 without a byte-order mark is full of NULs: refused, with a hint.
    data = "to,text\n447700900001,hi\n".encode("utf-16-le")
    error = refused_at_open(write(tmp_path, data))
    assert error.code == "100"
    assert error.message.startswith("the file contains a NUL byte at byte offset 1 of the file")
    assert "UTF-16 needs a byte-order mark" in error.message


def test_nul_byte_in_utf8_with_bom(tmp_path: Path) -> None:
    data = codecs.BOM_UTF8 + b"to,text\n447700900001,a\x00b\n"
    error = refused_at_open(write(tmp_path, data))
    assert error.message.startswith(f"the file contains a NUL byte at byte offset {data.index(0)} of the file")


def test_nul_byte_in_gzip_names_uncompressed_offset(tmp_path: Path) -> None:
    data = gzip.compress(b"to,text\n447700900001,a\x00b\n")
    error = refused_at_open(write(tmp_path, data, "batch.csv.gz"))
    assert "NUL byte at byte offset 22 of the uncompressed data" in error.message


def test_utf16_with_unpaired_surrogate(tmp_path: Path) -> None:
    data = codecs.BOM_UTF16_LE + "to,text\n447700900001,".encode("utf-16-le") + b"\x00\xd8" + "x\n".encode("utf-16-le")
    error = refused_at_open(write(tmp_path, data))
    assert (error.code, "is not valid UTF-16" in error.message) == ("100", True)


def test_utf32_is_refused(tmp_path: Path) -> None:
    error = refused_at_open(write(tmp_path, "to,text\n1,a\n".encode("utf-32")))
    assert (error.code, "UTF-32" in error.message) == ("100", True)


# --- containers -----------------------------------------------------------


def test_zip_with_two_members(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        archive.writestr("a.csv", "to,text\n447700900001,a\n")
        archive.writestr("b.csv", "to,text\n447700900002,b\n")
    error = refused_at_open(tmp_path / "two.zip")
    assert error.code == "100"
    assert error.message == (
        "a zip archive must contain exactly one batch file, this one contains 2 files ('a.csv', 'b.csv'): "
        "upload one file per archive"
    )


def test_zip_with_only_a_folder(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "dir.zip", "w") as archive:
        archive.writestr("folder/", "")
    error = refused_at_open(tmp_path / "dir.zip")
    assert "contains no file" in error.message


def test_empty_zip(tmp_path: Path) -> None:
    zipfile.ZipFile(tmp_path / "empty.zip", "w").close()
    error = refused_at_open(tmp_path / "empty.zip")
    assert (error.code, error.message) == ("100", "the zip archive is empty: put the batch file inside it")


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(b"to,text\n" + b"447700900001,hello\n" * 500)
    error = refused_at_open(write(tmp_path, data[: len(data) // 2], "batch.csv.gz"))
    assert error.code == "100"
    assert error.message.startswith("the gzip data is damaged or truncated")


def test_old_excel_file(tmp_path: Path) -> None:
    error = refused_at_open(write(tmp_path, decode.OLE_MAGIC + bytes(504), "old.xls"))
    assert error.code == "100"
    assert error.message.startswith("'old.xls' is an Excel 97-2003 (.xls) or password-protected workbook")


def test_damaged_xlsx(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "bad.xlsx", "w") as archive:
        archive.writestr("[Content_Types].xml", "<not really/>")
        archive.writestr("xl/workbook.xml", "garbage")
    error = refused_at_open(tmp_path / "bad.xlsx")
    assert error.code == "100"
    assert error.message.startswith("'bad.xlsx' cannot be read as an Excel workbook")


# --- key:value ------------------------------------------------------------


def test_kv_unknown_key_names_its_line(tmp_path: Path) -> None:
    error = refused_at_open(write(tmp_path, "text:hi\n\nto:447700900001\nmobile:447700900002\n", "kv.txt"))
    assert error.code == "101"
    assert error.message.startswith("line 4: unknown key 'mobile'; the keys are text, data, to, csv")


def test_kv_line_without_colon(tmp_path: Path) -> None:
    error = refused_at_open(write(tmp_path, "text:hi\n447700900001\n", "kv.txt"))
    assert error.code == "101"
    assert error.message.startswith("line 2: '447700900001' is not a 'key:value' line")


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("api_id:other", "api_id:other does not match the product you are logged in as (shop)"),
        ("user:Shop", "user:Shop does not match the product you are logged in as (shop)"),
        ("password:guess", "the password does not match the product you are logged in as"),
    ],
)
def test_kv_credentials_mismatch(tmp_path: Path, line: str, fragment: str) -> None:
    error = refused_at_open(write(tmp_path, f"text:hi\nto:447700900001\n{line}\n", "kv.txt"))
    assert error.code == codes.E_AUTH == "001"
    assert error.message.startswith(f"line 3: {fragment}")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("text:hi\nto:1\ncallback:5\n", "line 3: callback:5 is not valid; use a level from 0 to 3"),
        ("text:hi\nto:1\nunicode:2\n", "line 3: unicode:2 is not valid"),
        ("text:hi\nfrom:A\nto:1\nfrom:B\n", "line 4: 'from' is set again (first on line 2); give it once"),
        ("text:hi\nto:\n", "line 2: 'to:' has no number after it"),
        ("text:hi\ncsv: \n", "line 2: 'csv:' has no values after it"),
        ("to:447700900001\n", "the file has no 'text:' line"),
        ("text:hi\nfrom:Shop\n", "the file has no recipients"),
        ("text:a\ndata:b\nto:1\n", "the file has both 'text:' and 'data:' lines"),
        ("text:hi\nto:1\ndeliv_time:\n", "line 3: 'deliv_time:' has no value after it"),
    ],
)
def test_kv_bad_parameters(tmp_path: Path, data: str, fragment: str) -> None:
    error = refused_at_open(write(tmp_path, data, "kv.txt"))
    assert error.code == "101"
    assert error.message.startswith(fragment)


def test_kv_errors_after_recipients_are_still_raised_by_open_batch(tmp_path: Path) -> None:
    data = "text:hi\n" + "to:447700900001\n" * 1000 + "bogus:1\n"
    error = refused_at_open(write(tmp_path, data, "kv.txt"))
    assert error.message.startswith("line 1002: unknown key 'bogus'")
