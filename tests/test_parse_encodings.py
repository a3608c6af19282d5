"""Encodings and line endings are detected from the bytes (DESIGN §4)."""

from __future__ import annotations

import codecs
import gzip
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ftpbatch.parse import FileCredentials, ParsedFile, decode, open_batch

CREDENTIALS = FileCredentials("shop", lambda password: False)
CSV = "to,text\r\n07700900001,Café “quoted” – 5€\r\n07700900002,naïve\r\n"
EXPECTED = [("07700900001", "Café “quoted” – 5€"), ("07700900002", "naïve")]


def parse(path: Path) -> tuple[ParsedFile, list[tuple[str, str]]]:
    parsed = open_batch(path, path.name, CREDENTIALS)
    rows = pd.concat(list(parsed.chunks), ignore_index=True)
    return parsed, list(zip(rows["to"], rows["text"]))


def write(tmp_path: Path, data: bytes, name: str = "batch.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (CSV.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + CSV.encode("utf-8"), "utf-8-sig"),
        (CSV.encode("utf-16"), "utf-16"),  # native order with its BOM
        (codecs.BOM_UTF16_LE + CSV.encode("utf-16-le"), "utf-16"),
        (codecs.BOM_UTF16_BE + CSV.encode("utf-16-be"), "utf-16"),
        (CSV.encode("cp1252"), "cp1252"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16", "utf-16-le", "utf-16-be", "cp1252"],
)
def test_encodings(tmp_path: Path, data: bytes, encoding: str) -> None:
    parsed, rows = parse(write(tmp_path, data))
    assert parsed.encoding == encoding
    assert rows == EXPECTED


def test_bom_is_not_part_of_the_first_header_name(tmp_path: Path) -> None:
    # "\ufeffto" would not match the 'to' alias and the file would be refused.
    parsed, rows = parse(write(tmp_path, codecs.BOM_UTF8 + b"to;text\n447700900001;x\n"))
    assert (parsed.encoding, rows) == ("utf-8-sig", [("447700900001", "x")])


def test_utf8_right_quote_holds_a_byte_cp1252_lacks(tmp_path: Path) -> None:
    # U+201D is E2 80 9D in UTF-8; 0x9D is undefined in Windows-1252. The file
    # is valid UTF-8 and must be read as such.
    parsed, rows = parse(write(tmp_path, "to,text\n447700900001,”\n".encode()))
    assert (parsed.encoding, rows) == ("utf-8", [("447700900001", "”")])


@pytest.mark.parametrize("block", [1, 2, 3, 5, 7, 64])
def test_multibyte_characters_across_scan_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    monkeypatch.setattr(decode, "BLOCK_BYTES", block)
    parsed, rows = parse(write(tmp_path, "to,text\n447700900001,€😀é\n".encode()))
    assert (parsed.encoding, rows) == ("utf-8", [("447700900001", "€😀é")])


def test_windows_1252_character_deep_in_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first non-ASCII byte is far past the head: still Windows-1252,
    # decided before any row is produced.
    monkeypatch.setattr(decode, "BLOCK_BYTES", 256)
    lines = [f"4477009{i:05d},plain ascii text {i}" for i in range(200)] + ["447700999999,José"]
    data = ("to,text\n" + "\n".join(lines) + "\n").encode("cp1252")
    parsed, rows = parse(write(tmp_path, data))
    assert parsed.encoding == "cp1252"
    assert rows[-1] == ("447700999999", "José")
    assert len(rows) == 201


def test_windows_1252_character_as_last_byte(tmp_path: Path) -> None:
    # A lone 0xE9 at the very end is an unfinished UTF-8 sequence: Windows-1252.
    parsed, rows = parse(write(tmp_path, b"to,text\n447700900001,caf\xe9"))
    assert (parsed.encoding, rows) == ("cp1252", [("447700900001", "café")])


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_line_endings_csv(tmp_path: Path, newline: str) -> None:
    data = newline.join(["to,text", "447700900001,a", "", "447700900002,b"]) + newline
    _, rows = parse(write(tmp_path, data.encode()))
    assert rows == [("447700900001", "a"), ("447700900002", "b")]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_line_endings_kv(tmp_path: Path, newline: str) -> None:
    data = newline.join(["text:line one", "text:line two", "to:447700900001", "to:447700900002"]) + newline
    parsed, rows = parse(write(tmp_path, data.encode(), "kv.txt"))
    assert parsed.format == "kv"
    assert rows == [("447700900001", "line one\nline two"), ("447700900002", "line one\nline two")]


@pytest.mark.parametrize("codec", ["utf-16", "cp1252", "utf-8-sig"])
def test_kv_in_other_encodings(tmp_path: Path, codec: str) -> None:
    data = "text:Grüße aus Köln\r\nto:447700900001\r\n".encode(codec)
    parsed, rows = parse(write(tmp_path, data, "kv.txt"))
    assert (parsed.format, parsed.encoding) == ("kv", codec)
    assert rows == [("447700900001", "Grüße aus Köln")]


def test_gzip_of_windows_1252(tmp_path: Path) -> None:
    parsed, rows = parse(write(tmp_path, gzip.compress(CSV.encode("cp1252")), "batch.csv.gz"))
    assert (parsed.encoding, rows) == ("cp1252", EXPECTED)


# Every character Windows-1252 can encode, except the ones that end lines or
# start templates: a Windows user's export must come back exactly.
CP1252_TEXT = st.text(
    st.sampled_from(
        sorted(
            {ch for ch in bytes(range(0x20, 0x100)).decode("cp1252", errors="ignore") if ch not in '#"'}
        )
    ),
    min_size=1,
    max_size=30,
).filter(lambda text: text.strip() != "")


@settings(max_examples=60, deadline=None)
@given(st.lists(CP1252_TEXT, min_size=1, max_size=10))
def test_windows_1252_texts_round_trip(texts: list[str]) -> None:
    lines = [f"4477009{i:05d},\"{text}\"" for i, text in enumerate(texts)]
    data = ("to,text\r\n" + "\r\n".join(lines) + "\r\n").encode("cp1252")
    # "Ã©" in Windows-1252 is the UTF-8 for "é": such files are UTF-8 by
    # definition, so only texts whose bytes are not valid UTF-8 can round-trip.
    assume(data.isascii() or not _valid_utf8(data))
    with tempfile.TemporaryDirectory() as tmp:
        parsed, rows = parse(write(Path(tmp), data))
    assert [text for _, text in rows] == texts
    expected = "utf-8" if all(text.isascii() for text in texts) else "cp1252"
    assert parsed.encoding == expected


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
