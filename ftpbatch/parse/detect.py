"""Tell the formats apart by content: workbook, key:value text, or delimited text."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

from .. import codes
from ..errors import BatchRejected
from .decode import OLE_MAGIC, ZIP_MAGIC

#: Keys of the key:value format (DESIGN §4).
KV_KEYS = (
    "text",
    "data",
    "to",
    "csv",
    "delimiter",
    "from",
    "climsgid",
    "unicode",
    "deliv_time",
    "scheduled_time",
    "validity",
    "callback",
    "api_id",
    "user",
    "password",
)
_KV_FIRST_LINE = re.compile(r"^\s*(?:" + "|".join(KV_KEYS) + r")\s*:", re.IGNORECASE)

DELIMITERS = ",;\t|"
# Enough lines for the Sniffer to judge consistency; it is slow on big samples.
_SNIFF_LINES = 50


def is_workbook(head: bytes) -> bool:
    """A zip package at the start of the (uncompressed) stream: treated as xlsx."""
    return head.startswith(ZIP_MAGIC)


def reject_binary_office(head: bytes, original_name: str) -> None:
    """Old .xls workbooks (and encrypted .xlsx) are OLE files we cannot read."""
    if head.startswith(OLE_MAGIC):
        raise BatchRejected(
            f"{original_name!r} is an Excel 97-2003 (.xls) or password-protected workbook: "
            "save it as .xlsx (without a password) or as CSV",
            code=codes.E_MALFORMED,
        )


def first_line(text: str) -> str | None:
    """The first line holding something other than white space, or None."""
    for line in text.splitlines():
        if line.strip():
            return line
    return None


def is_key_value(head_text: str) -> bool:
    """True when the first non-empty line is ``key:`` of the key:value format."""
    line = first_line(head_text)
    return line is not None and bool(_KV_FIRST_LINE.match(line))


def sniff_delimiter(head_text: str) -> str:
    """Pick one of ``, ; TAB |`` for a delimited file.

    ``csv.Sniffer`` judges consistency across lines, which copes with texts
    full of commas in a semicolon file. If it cannot decide, or picks a
    character the header line does not even contain, the delimiter that occurs
    most often in the first line wins, and a comma if none does.
    """
    lines = [line for line in head_text.splitlines() if line.strip()][:_SNIFF_LINES]
    if not lines:
        return ","
    if len(lines) > 1 and not head_text.endswith(("\n", "\r")):
        lines = lines[:-1]  # the head may end mid-line
    # A row of bare delimiters (",,," above the header) says nothing about the header.
    first = next((line for line in lines if line.strip(DELIMITERS + " ")), lines[0])
    try:
        delimiter = csv.Sniffer().sniff("\n".join(lines), delimiters=DELIMITERS).delimiter
    except csv.Error:
        delimiter = ""
    if delimiter and delimiter in first:
        return delimiter
    counts = {d: first.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


@dataclass(frozen=True)
class FirstRow:
    """The first non-blank record of a delimited file (its header, or its first data row)."""

    cells: list[str]
    more_rows: bool  # another non-blank record follows (or the head was cut short)


def first_record(head_text: str, delimiter: str, complete: bool) -> FirstRow | None:
    """Parse the first non-blank record of the head; None for an empty file.

    ``complete`` says the head is the whole file, so "nothing after the
    header" really means a header-only file.
    """
    reader = csv.reader(io.StringIO(head_text, newline=""), delimiter=delimiter, quotechar='"')
    cells: list[str] | None = None
    try:
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            if cells is None:
                cells = record
                continue
            return FirstRow(cells, more_rows=True)
    except csv.Error:
        # An unterminated quote at the cut-off point of the head: more follows.
        return FirstRow(cells, more_rows=True) if cells is not None else None
    if cells is None:
        return None
    return FirstRow(cells, more_rows=not complete)
