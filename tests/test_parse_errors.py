"""Every malformed file is refused with its code and a sentence saying what to fix."""

from __future__ import annotations

import codecs
import gzip
import io
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from ftpbatch import codes
from ftpbatch.errors import BatchRejected
from ftpbatch.parse import FileCredentials, decode, open_batch
from ftpbatch.parse.decode import BoundedStream, ExpansionLimit

CREDENTIALS = FileCredentials("shop", lambda password: password == "s3cret")


def write(tmp_path: Path, data: bytes | str, name: str = "batch.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def refused_at_open(path: Path, credentials: FileCredentials = CREDENTIALS, **options: Any) -> BatchRejected:
    """open_batch itself must raise: the problem is visible before any row."""
    with pytest.raises(BatchRejected) as caught:
        open_batch(path, path.name, credentials, **options)
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


@pytest.mark.parametrize("name", ["cut.xlsx", "cut.csv"])  # by content: the name does not matter
def test_a_workbook_cut_short_is_named_a_damaged_workbook_not_a_zip_or_csv(tmp_path: Path, name: str) -> None:
    book = Workbook()
    book.active.append(["to", "text"])
    book.active.append([447700900123, "hello"])
    whole = io.BytesIO()
    book.save(whole)
    path = write(tmp_path, whole.getvalue()[: len(whole.getvalue()) // 2], name)  # the central directory is gone
    error = refused_at_open(path)
    assert error.code == "100"
    assert "is an Excel workbook, but it is damaged" in error.message and "save it again" in error.message
    assert "csv" not in error.message.split("save it again")[0].lower() and "zip archive" not in error.message


# --- archives inside archives ----------------------------------------------


def _zip_bytes(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        (
            "nested.zip",
            _zip_bytes("inner.zip", _zip_bytes("a.csv", b"to,text\n447700900001,hi\n")),
            (
                "the zip archive holds 'inner.zip', which is itself a .zip file, not a batch file or an Excel workbook; "
                "a .zip inside a .zip is not supported: send the inner file"
            ),
        ),
        (
            "nested.zip",
            _zip_bytes("a.csv.gz", gzip.compress(b"to,text\n447700900001,hi\n")),
            (
                "the zip archive holds 'a.csv.gz', which is itself a .gz file, not a batch file or an Excel workbook; "
                "a .gz inside a .zip is not supported: send the inner file"
            ),
        ),
        (
            "nested.zip.gz",
            gzip.compress(_zip_bytes("a.csv", b"to,text\n447700900001,hi\n")),
            (
                "the gzip data holds a .zip file, not a batch file or an Excel workbook; "
                "a .zip inside a .gz is not supported: send the inner file"
            ),
        ),
    ],
    ids=["zip-in-zip", "gz-in-zip", "zip-in-gz"],
)
def test_archive_inside_an_archive(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    error = refused_at_open(write(tmp_path, data, name))
    assert (error.code, error.message) == ("100", message)


# --- decompressed size (131) -----------------------------------------------

MB = 1_000_000
ROW = b"to,text\n447700900001,hi\n"


def _product_limit(limit: int) -> str:
    return (
        f"the file is larger than {limit:,} bytes when decompressed, the limit set for this product: "
        "split the batch into smaller files and upload them one by one"
    )


def _ratio_limit(limit: int) -> str:
    return (
        f"the file is larger than {limit:,} bytes when decompressed, over 200 times its compressed size "
        "(the mark of a decompression bomb): split the batch into smaller files and upload them one by one"
    )


def gzip_bomb(total: int, head: bytes = ROW) -> bytes:
    """gzip of ``head`` then spaces up to ``total`` bytes, built without holding them all."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (1 << 20)
    parts, written = [compressor.compress(head)], len(head)
    while written < total:
        parts.append(compressor.compress(block[: total - written]))
        written += min(len(block), total - written)
    return b"".join([*parts, compressor.flush()])


def lie_about_size(data: bytes, name: str, size: int) -> bytes:
    """Make the local and central headers of member ``name`` declare ``size`` uncompressed bytes."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        local = archive.getinfo(name).header_offset
    patched = bytearray(data)
    struct.pack_into("<I", patched, local + 22, size)
    central = patched.find(b"PK\x01\x02")
    while central >= 0:
        length = struct.unpack_from("<H", patched, central + 28)[0]
        if patched[central + 46 : central + 46 + length] == name.encode():
            struct.pack_into("<I", patched, central + 24, size)
            return bytes(patched)
        central = patched.find(b"PK\x01\x02", central + 46)
    raise AssertionError(f"{name} not in the central directory")


def xlsx_bomb(tmp_path: Path, padding: int) -> bytes:
    """A real workbook whose sheet XML is padded with ``padding`` spaces (a few KB once zipped)."""
    book = Workbook()
    book.active.append(["to", "text"])
    book.active.append(["447700900001", "after the padding"])
    book.save(tmp_path / "made.xlsx")
    buffer = io.BytesIO()
    with zipfile.ZipFile(tmp_path / "made.xlsx") as source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = data.replace(b"<sheetData>", b"<sheetData>" + b" " * padding, 1)
            target.writestr(info.filename, data)
    return buffer.getvalue()


def test_gzip_bomb_is_refused_while_read(tmp_path: Path) -> None:
    # gzip declares no size up front (its trailer's is modulo 4 GB): only the count stops it.
    path = write(tmp_path, gzip_bomb(6 * MB), "bomb.csv.gz")
    assert path.stat().st_size < 10_000
    error = refused_at_open(path, max_bytes=1 * MB)
    assert (error.code, error.message) == ("131", _product_limit(1 * MB))


def test_gzip_bomb_without_product_limit_meets_the_ratio_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The floor is 100 MB in production; lowered so the test inflates little.
    monkeypatch.setattr(decode, "RATIO_FLOOR_BYTES", 1 * MB)
    path = write(tmp_path, gzip_bomb(6 * MB), "bomb.csv.gz")
    error = refused_at_open(path)
    assert (error.code, error.message) == ("131", _ratio_limit(max(1 * MB, 200 * path.stat().st_size)))


def test_zip_bomb_is_refused_by_its_declared_size_before_inflating(tmp_path: Path) -> None:
    data = bytearray(_zip_bytes("bomb.csv", ROW + b" " * (3 * MB)))
    # Spoil the deflate data: had the member been inflated, this would be 100 "damaged".
    start = data.index(b"bomb.csv") + len("bomb.csv")
    data[start + 2 : start + 40] = bytes(38)
    error = refused_at_open(write(tmp_path, bytes(data), "bomb.zip"), max_bytes=1 * MB)
    assert (error.code, error.message) == ("131", _product_limit(1 * MB))


def test_zip_bomb_lying_about_its_size_is_not_inflated_past_the_lie(tmp_path: Path) -> None:
    # Declares 1,000 bytes, inflates to 6 MB: zipfile cuts the member at the
    # declared size and its CRC fails, so it is refused as damaged, never read whole.
    data = lie_about_size(_zip_bytes("bomb.csv", ROW + b" " * (6 * MB)), "bomb.csv", 1_000)
    error = refused_at_open(write(tmp_path, data, "bomb.zip"), max_bytes=1 * MB)
    assert error.code == "100"
    assert error.message.startswith("the zip data is damaged or truncated (Bad CRC-32")


def test_xlsx_bomb_is_refused_by_its_declared_sizes(tmp_path: Path) -> None:
    path = write(tmp_path, xlsx_bomb(tmp_path, 3 * MB), "bomb.xlsx")
    assert path.stat().st_size < 50_000
    error = refused_at_open(path, max_bytes=1 * MB)
    assert (error.code, error.message) == ("131", _product_limit(1 * MB))


def test_xlsx_bomb_without_product_limit_meets_the_ratio_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "RATIO_FLOOR_BYTES", 1 * MB)
    path = write(tmp_path, xlsx_bomb(tmp_path, 3 * MB), "bomb.xlsx")
    error = refused_at_open(path)
    assert (error.code, error.message) == ("131", _ratio_limit(max(1 * MB, 200 * path.stat().st_size)))


def test_xlsx_bomb_inside_a_zip_is_refused(tmp_path: Path) -> None:
    # The outer member is small enough; the workbook inside it declares too much.
    inner = xlsx_bomb(tmp_path, 3 * MB)
    error = refused_at_open(write(tmp_path, _zip_bytes("bomb.xlsx", inner), "bomb.zip"), max_bytes=len(inner) + 1)
    assert (error.code, error.message) == ("131", _product_limit(len(inner) + 1))


def test_xlsx_lying_about_its_sheet_size_is_refused_as_damaged(tmp_path: Path) -> None:
    # The workbook's parts are only checked by their declared sizes; this
    # holds zipfile to never yielding more than a part declares.
    data = lie_about_size(xlsx_bomb(tmp_path, 6 * MB), "xl/worksheets/sheet1.xml", 2_000)
    path = write(tmp_path, data, "bomb.xlsx")
    with pytest.raises(BatchRejected) as caught:
        for _ in open_batch(path, path.name, CREDENTIALS, max_bytes=1 * MB).chunks:
            pass
    assert caught.value.code == "100"
    assert caught.value.message.startswith("'bomb.xlsx' cannot be read as an Excel workbook")


def _varied_rows(count: int) -> bytes:
    return b"to,text\n" + b"".join(
        b"4477%08d,Your code is %06d and valid for 10 minutes\n" % (i, i * 7919 % 1_000_000) for i in range(count)
    )


@pytest.mark.parametrize("container", ["gz", "zip"])
def test_large_compressed_file_at_the_limit_is_read_whole(tmp_path: Path, container: str) -> None:
    data = _varied_rows(40_000)
    packed = gzip.compress(data) if container == "gz" else _zip_bytes("batch.csv", data)
    path = write(tmp_path, packed, f"batch.csv.{container}")
    chunks = list(open_batch(path, path.name, CREDENTIALS, max_bytes=len(data)).chunks)
    assert sum(len(chunk) for chunk in chunks) == 40_000
    assert chunks[-1]["to"].iloc[-1] == "447700039999"
    error = refused_at_open(path, max_bytes=len(data) - 1)
    assert (error.code, error.message) == ("131", _product_limit(len(data) - 1))


def test_small_file_that_compresses_very_well_passes_the_ratio_guard(tmp_path: Path) -> None:
    data = b"to,text\n" + b"447700900001,Same text for all\n" * 60_000
    path = write(tmp_path, gzip.compress(data), "same.csv.gz")
    assert len(data) > decode.MAX_EXPANSION_RATIO * path.stat().st_size  # a ratio a bomb would have
    assert sum(len(chunk) for chunk in open_batch(path, path.name, CREDENTIALS).chunks) == 60_000


def test_xlsx_at_the_limit_is_read(tmp_path: Path) -> None:
    book = Workbook()
    book.active.append(["to", "text"])
    for i in range(2_000):
        book.active.append([447700000000 + i, f"row {i}"])
    path = tmp_path / "big.xlsx"
    book.save(path)
    with zipfile.ZipFile(path) as package:
        declared = sum(info.file_size for info in package.infolist())
    assert sum(len(chunk) for chunk in open_batch(path, path.name, CREDENTIALS, max_bytes=declared).chunks) == 2_000
    error = refused_at_open(path, max_bytes=declared - 1)
    assert (error.code, error.message) == ("131", _product_limit(declared - 1))


@pytest.mark.parametrize(
    ("compressed", "product_max", "expected"),
    [
        (10_000, 5_000_000, (5_000_000, "the limit set for this product")),
        (10_000, None, (100_000_000, "over 200 times its compressed size (the mark of a decompression bomb)")),
        (1_000_000, 10**10, (200_000_000, "over 200 times its compressed size (the mark of a decompression bomb)")),
        (50_000_000, None, (2_000_000_000, "the most one batch file may hold")),
    ],
    ids=["product", "ratio-floor", "ratio-under-product", "default-cap"],
)
def test_expansion_limit(compressed: int, product_max: int | None, expected: tuple[int, str]) -> None:
    limit = ExpansionLimit.for_file(compressed, product_max)
    assert (limit.max_bytes, limit.reason) == expected


def test_bounded_stream_counts_reads_and_seeks() -> None:
    def bounded(limit: int) -> BoundedStream:
        return BoundedStream(io.BytesIO(bytes(range(100))), ExpansionLimit(limit, "test"))

    with bounded(100) as stream:
        assert stream.read(10) == bytes(range(10))
        assert stream.seek(-10, io.SEEK_END) == 90  # reads to the end through the count
        assert stream.read() == bytes(range(90, 100))
        assert stream.seek(5) == 5 and stream.read(2) == b"\x05\x06"
    for move in (lambda s: s.read(), lambda s: s.read(1000), lambda s: s.seek(0, io.SEEK_END), lambda s: s.seek(100)):
        with bounded(99) as stream, pytest.raises(BatchRejected) as caught:
            move(stream)
        assert caught.value.code == "131"
        assert stream.tell() == 100  # one byte past the limit, never more


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
