"""The Clickatell-style ``key:value`` batch format (DESIGN §4).

The file is read twice. The first pass, done by ``open_batch`` itself, checks
every line and collects the settings (``text:`` may come after the ``to:``
lines), so every file-level error, credentials included, is raised before any
row is produced. The second pass streams the recipients in chunks; it stores
nothing but the current chunk, so a file with a million ``csv:`` lines stays
within bounded memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .. import codes
from ..errors import BatchRejected
from .columns import STRING, assemble
from .detect import KV_KEYS

_SINGLE_KEYS = ("from", "climsgid", "scheduled_time", "deliv_time", "validity", "delimiter", "unicode", "callback")
_FIELD_REF = re.compile(r"#field(\d+)#", re.IGNORECASE)


def _fail(line_no: int, message: str, code: str = codes.E_PARAMETERS) -> BatchRejected:
    return BatchRejected(f"line {line_no}: {message}", code=code)


@dataclass
class KvSettings:
    """Everything in a key:value file except the recipients themselves."""

    text: str = ""
    from_: str | None = None
    climsgid: str | None = None
    scheduled_time: str | None = None
    deliv_time: str | None = None
    validity: str | None = None
    delimiter: str = ","
    callback_level: int | None = None
    error_code: str | None = None  # a row-level code every row carries (116)
    error_text: str | None = None
    field_numbers: tuple[int, ...] = ()  # N of every #fieldN# in the text
    recipients: int = 0
    _seen: dict[str, tuple[str, int]] = field(default_factory=dict, repr=False)


def split_line(line: str, line_no: int) -> tuple[str, str] | None:
    """``(key, raw value)`` of one line, None for a blank line; unknown keys are refused."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    key, colon, value = line.partition(":")
    key = key.strip().lower()
    if not colon:
        raise _fail(line_no, f"{line[:40]!r} is not a 'key:value' line; write e.g. 'to:447700900123'")
    if key not in KV_KEYS:
        raise _fail(line_no, f"unknown key {key!r}; the keys are {', '.join(KV_KEYS)}")
    return key, value


def scan_settings(lines: Iterable[str], product: str, check_password: Callable[[str], bool]) -> KvSettings:
    """First pass: validate every line and collect the settings.

    Raises ``BatchRejected`` with 101 for an unknown key, a bad value, a
    setting given twice with different values, or a file without text or
    recipients; with 001 when ``api_id``/``user``/``password`` do not match
    the logged-in product.
    """
    settings = KvSettings()
    text_lines: list[str] = []
    data_lines: list[str] = []
    passwords: dict[str, int] = {}
    unicode = "0"
    for line_no, line in enumerate(lines, start=1):
        parsed = split_line(line, line_no)
        if parsed is None:
            continue
        key, value = parsed
        if key == "text":
            text_lines.append(value)
        elif key == "data":
            data_lines.append(value)
        elif key == "to":
            count = sum(1 for number in value.split(",") if number.strip())
            if not count:
                raise _fail(line_no, "'to:' has no number after it")
            settings.recipients += count
        elif key == "csv":
            if not value.strip():
                raise _fail(line_no, "'csv:' has no values after it")
            settings.recipients += 1
        elif key in ("api_id", "user"):
            if value.strip() != product:
                raise _fail(
                    line_no,
                    f"{key}:{value.strip()} does not match the product you are logged in as ({product}); "
                    f"correct the {key} line or remove it",
                    code=codes.E_AUTH,
                )
        elif key == "password":
            passwords.setdefault(value.strip(), line_no)
        else:
            value = _single_value(settings, key, value, line_no)
            if key == "unicode":
                unicode = value
    for password, line_no in passwords.items():
        if not check_password(password):  # slow hash: once per distinct value
            raise _fail(
                line_no,
                "the password does not match the product you are logged in as; correct it or remove the line",
                code=codes.E_AUTH,
            )
    if text_lines and data_lines:
        raise BatchRejected("the file has both 'text:' and 'data:' lines: use one of them", code=codes.E_PARAMETERS)
    if not text_lines and not data_lines:
        raise BatchRejected("the file has no 'text:' line: add the message text", code=codes.E_PARAMETERS)
    if not settings.recipients:
        raise BatchRejected("the file has no recipients: add 'to:' or 'csv:' lines", code=codes.E_PARAMETERS)
    # text lines keep the line breaks; data lines were wrapped by a mail client.
    settings.text = "\n".join(text_lines) if text_lines else "".join(data_lines)
    if unicode == "1":
        _decode_ucs2(settings)
    settings.field_numbers = tuple(sorted({int(n) for n in _FIELD_REF.findall(settings.text) if int(n) > 0}))
    return settings


def _single_value(settings: KvSettings, key: str, raw: str, line_no: int) -> str:
    """Store a setting that may be given once (repeating the same value is harmless)."""
    value = raw.strip()
    if key == "delimiter" and raw and not value:
        value = raw  # a tab or a space is a legitimate delimiter
    if not value:
        raise _fail(line_no, f"'{key}:' has no value after it")
    if key in settings._seen and settings._seen[key][0] != value:
        raise _fail(line_no, f"'{key}' is set again (first on line {settings._seen[key][1]}); give it once")
    settings._seen[key] = (value, line_no)
    if key == "unicode" and value not in ("0", "1"):
        raise _fail(line_no, f"unicode:{value} is not valid; use unicode:1 for hex UCS-2 text or unicode:0")
    if key == "callback":
        if value not in ("0", "1", "2", "3"):
            raise _fail(line_no, f"callback:{value} is not valid; use a level from 0 to 3")
        settings.callback_level = int(value)
    elif key == "delimiter":
        settings.delimiter = value
    elif key == "from":
        settings.from_ = value
    elif key in ("climsgid", "scheduled_time", "deliv_time", "validity"):
        setattr(settings, key, value)
    return value


def _decode_ucs2(settings: KvSettings) -> None:
    """``unicode:1``: the text is UCS-2 as hex, 4 digits per UTF-16 unit, big-endian."""
    digits = re.sub(r"\s+", "", settings.text)
    if len(digits) % 4:
        problem = f"it has {len(digits)} hex digits, not a multiple of 4"
    else:
        try:
            encoded = bytes.fromhex(digits)
        except ValueError:
            problem = "it contains characters that are not hex digits"
        else:
            try:
                settings.text = encoded.decode("utf-16-be")
                return
            except UnicodeDecodeError:
                problem = "it contains an unpaired UTF-16 surrogate"
    settings.error_code = codes.E_UNICODE
    settings.error_text = f"the unicode:1 text is not valid hex UCS-2 ({problem}): give 4 hex digits per character"


def recipient_chunks(lines: Iterable[str], settings: KvSettings, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Second pass: yield the ``to:`` and ``csv:`` recipients in file order.

    Every line was checked by the first pass, so this loop only picks out the
    recipients; it is the one per-line Python loop of the parser, inherent in
    a line-oriented format (about 1 s per million ``csv:`` lines).
    """
    numbers: list[str] = []
    fields: list[list[str]] = []
    next_row = 1
    delimiter = settings.delimiter
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "to":
            for number in value.split(","):
                if number := number.strip():
                    numbers.append(number)
                    fields.append([])
        elif key == "csv":
            number, *values = value.rstrip("\r\n").split(delimiter)
            numbers.append(number.strip())
            fields.append(values)
        else:
            continue
        if len(numbers) >= chunk_rows:
            yield _chunk(numbers[:chunk_rows], fields[:chunk_rows], settings, next_row)
            next_row += chunk_rows
            del numbers[:chunk_rows], fields[:chunk_rows]
    if numbers:
        yield _chunk(numbers, fields, settings, next_row)


def _chunk(numbers: list[str], fields: list[list[str]], settings: KvSettings, first_row: int) -> pd.DataFrame:
    n = len(numbers)
    if settings.field_numbers and settings.error_code is None:
        # One template for every row: concatenate its literal pieces with the
        # per-row field columns, element-wise, in one pyarrow call.
        pieces = _FIELD_REF.split(settings.text)  # literal, N, literal, N, ..., literal
        parts: list[pa.Scalar | pa.Array] = []
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                parts.append(pa.scalar(piece, STRING))
            else:
                k = int(piece)
                if k == 0:  # "#field0#" refers to nothing: keep it as written
                    parts.append(pa.scalar(f"#field{piece}#", STRING))
                else:
                    parts.append(pa.array([row[k - 1] if len(row) >= k else "" for row in fields], STRING))
        text = pc.binary_join_element_wise(*parts, pa.scalar("", STRING))  # an array: field_numbers holds an N > 0
    else:
        text = pa.repeat(pa.scalar(settings.text, STRING), n)
    optional = {
        "from": settings.from_,
        "climsgid": settings.climsgid,
        "scheduled_time": settings.scheduled_time,
        "deliv_time": settings.deliv_time,
        "validity": settings.validity,
    }
    return assemble(
        first_row,
        pa.array(numbers, STRING),
        text,
        optional,
        error_code=settings.error_code,
        error_text=settings.error_text,
    )
