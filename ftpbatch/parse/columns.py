"""The canonical chunk: column names, header aliases and template fields.

Every reader ends here, so every format yields frames of the same shape
(``CHUNK_COLUMNS``). String work is done on whole pyarrow arrays: the pandas 3
``str`` dtype is already Arrow-backed, so going through ``pyarrow.compute``
costs no copy and no per-row Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .. import codes
from ..errors import BatchRejected

#: Columns of every chunk, in this order.
CHUNK_COLUMNS: tuple[str, ...] = (
    "row",
    "to",
    "text",
    "from",
    "climsgid",
    "scheduled_time",
    "deliv_time",
    "validity",
    "error_code",
    "error_text",
)

#: Optional per-row values a file may carry besides ``to`` and ``text``.
OPTIONAL_COLUMNS: tuple[str, ...] = ("from", "climsgid", "scheduled_time", "deliv_time", "validity")

#: Header names accepted for each canonical column (after `header_key`).
ALIASES: dict[str, tuple[str, ...]] = {
    "to": ("to", "msisdn", "number", "mobile", "phone", "recipient", "destination"),
    "text": ("text", "message", "body", "msg"),
    "from": ("from", "sender", "sender_id"),
    "climsgid": ("climsgid", "client_id", "reference"),
    "scheduled_time": ("scheduled_time",),
    "deliv_time": ("deliv_time",),
    "validity": ("validity",),
}
_CANONICAL_BY_ALIAS = {alias: name for name, aliases in ALIASES.items() for alias in aliases}

#: Headerless files are read as these columns, in this order (DESIGN §4).
HEADERLESS_COLUMNS = ("to", "text", "from")

STRING = pa.large_string()  # the storage type of pandas' default ``str`` dtype

# Digits with an optional leading +, and the punctuation people type in numbers.
_PHONE_LIKE = re.compile(r"^\s*\+?[\d\s\-.()/]+$")
_MIN_PHONE_DIGITS = 8


def header_key(name: str) -> str:
    """Normalise a header cell: ``" Sender ID "`` and ``"sender-id"`` both become ``sender_id``."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def looks_like_phone(cell: object) -> bool:
    """True when a first cell is data rather than a header: a number of 8 digits or more."""
    if not isinstance(cell, str) or not _PHONE_LIKE.match(cell):
        return False
    return sum(ch.isdigit() for ch in cell) >= _MIN_PHONE_DIGITS


@dataclass(frozen=True)
class ColumnMap:
    """Which position of a tabular file feeds which chunk column or template field."""

    width: int  # columns in the file
    positions: Mapping[str, int]  # canonical column -> 0-based position
    named_fields: tuple[tuple[str, int], ...]  # (header name as written, position) of the other columns
    has_header: bool

    @classmethod
    def from_header(cls, header: Sequence[str]) -> ColumnMap:
        """Map a header row; reject a file without ``to``/``text`` or with a column given twice."""
        positions: dict[str, int] = {}
        named: list[tuple[str, int]] = []
        for pos, cell in enumerate(header):
            canonical = _CANONICAL_BY_ALIAS.get(header_key(cell))
            if canonical is None:
                name = cell.strip()
                if name:  # an empty header cell can still be used as #fieldN#
                    named.append((name, pos))
            elif canonical in positions:
                first = header[positions[canonical]].strip()
                raise BatchRejected(
                    f"the columns {first!r} and {cell.strip()!r} both give the {canonical!r} value: "
                    "keep only one of them",
                    code=codes.E_MALFORMED,
                )
            else:
                positions[canonical] = pos
        found = ", ".join(repr(c.strip()) for c in header)
        for required in ("to", "text"):
            if required not in positions:
                others = ", ".join(ALIASES[required][1:])
                raise BatchRejected(
                    f"the header row has no {required!r} column (or {others}); it has {found}: "
                    f"name the column with the {'phone numbers' if required == 'to' else 'message texts'} "
                    f"{required!r}",
                    code=codes.E_MALFORMED,
                )
        return cls(len(header), positions, tuple(named), has_header=True)

    @classmethod
    def headerless(cls, width: int) -> ColumnMap:
        """Columns ``to, text[, from]`` for a file whose first row is already data."""
        if width < 2:
            raise BatchRejected(
                "the file has no header row and only one column, so there is no message text: "
                "add a header row 'to,text' and a text column",
                code=codes.E_MALFORMED,
            )
        # Read at least to, text and from: later rows may carry a sender the first lacks.
        width = max(width, len(HEADERLESS_COLUMNS))
        positions = {name: pos for pos, name in enumerate(HEADERLESS_COLUMNS)}
        return cls(width, positions, (), has_header=False)

    def template_fields(self) -> list[tuple[str, int]]:
        """Every template name with its position: ``#name#`` first, then ``#fieldN#``."""
        return [*self.named_fields, *((f"field{pos + 1}", pos) for pos in range(self.width))]


def to_arrow(values: pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array:
    """A contiguous ``large_string`` array (pandas ``str`` columns convert without a copy)."""
    if isinstance(values, pd.Series):
        values = pa.array(values.array) if values.dtype == "str" else pa.array(values, type=STRING)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values if values.type == STRING else values.cast(STRING)


def _literal_regex(text: str) -> str:
    # RE2 has no re.escape; \x{...} is unambiguous for every character.
    return "".join(ch if ch.isalnum() or ch == "_" else f"\\x{{{ord(ch):x}}}" for ch in text)


def _placeholders_present(text: pa.Array, names: Sequence[str]) -> set[str]:
    """The spellings (``#Name#``, ``#name#``...) of the given placeholders found in ``text``.

    One C-level regex pass over the raw character buffer instead of one
    per-string scan per placeholder. The buffer may hold bytes outside a
    sliced array, so a spelling found here may match no row: harmless.
    """
    data = text.buffers()[2]
    if data is None or not names:
        return set()
    raw = memoryview(data)
    if raw.tobytes().find(b"#") < 0:  # a memchr: most files have no templates
        return set()
    alternation = b"|".join(re.escape(name.encode()) for name in names)
    pattern = re.compile(b"#(?:" + alternation + b")#", re.IGNORECASE)
    return {found.decode("ascii") for found in set(pattern.findall(raw))}


def substitute_templates(text: pa.Array, fields: Sequence[tuple[str, pa.Array]]) -> pa.Array:
    """Replace ``#name#`` (case-insensitive) in each row's text with that row's field value.

    Vectorised: for each placeholder spelling that occurs, the texts are split
    at it and re-joined with the per-row value as the separator. A missing
    value becomes the empty string; a null text stays null. When two fields
    share a name, the first (leftmost column) wins.
    """
    by_key: dict[str, pa.Array] = {}
    for name, values in fields:
        by_key.setdefault(name.lower(), values)
    ascii_names = [name for name in by_key if name.isascii()]
    for spelling in sorted(_placeholders_present(text, ascii_names)):
        values = pc.fill_null(by_key[spelling[1:-1].lower()], "")
        text = pc.binary_join(pc.split_pattern(text, spelling), values)
    # Python's bytes regex folds ASCII case only; other names go through RE2.
    for name in (name for name in by_key if not name.isascii()):
        pattern = "(?i)" + _literal_regex(f"#{name}#")
        if pc.any(pc.match_substring_regex(text, pattern)).as_py():
            text = pc.binary_join(pc.split_pattern_regex(text, pattern), pc.fill_null(by_key[name], ""))
    return text


def _null_column(n: int) -> pa.Array:
    return pa.nulls(n, STRING)


def _as_str_array(values: pa.Array) -> pd.api.extensions.ExtensionArray:
    return pd.array(values, dtype="str")


def empty_to_null(values: pa.Array) -> pa.Array:
    """An empty optional cell means "not given": make it missing."""
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, STRING), values)


def assemble(
    first_row: int,
    to: pa.Array,
    text: pa.Array,
    optional: Mapping[str, pa.Array | str | None],
    error_code: pa.Array | str | None = None,
    error_text: pa.Array | str | None = None,
) -> pd.DataFrame:
    """Build one chunk with exactly ``CHUNK_COLUMNS``; scalars are repeated on every row."""
    n = len(to)

    def column(value: pa.Array | str | None) -> pa.Array:
        if value is None:
            return _null_column(n)
        if isinstance(value, str):
            return pa.repeat(pa.scalar(value, STRING), n)
        return value

    data: dict[str, object] = {"row": np.arange(first_row, first_row + n, dtype=np.int64)}
    data["to"] = _as_str_array(to)
    data["text"] = _as_str_array(text)
    for name in OPTIONAL_COLUMNS:
        data[name] = _as_str_array(column(optional.get(name)))
    data["error_code"] = _as_str_array(column(error_code))
    data["error_text"] = _as_str_array(column(error_text))
    return pd.DataFrame(data, columns=list(CHUNK_COLUMNS))


def tabular_chunk(cells: Sequence[pa.Array], columns: ColumnMap, first_row: int) -> pd.DataFrame:
    """Turn positional string columns (of CSV or sheet rows) into a chunk.

    ``cells[i]`` holds the i-th column of the file. Rows whose every cell is
    empty are dropped: spreadsheet exports end with lines of bare delimiters,
    and those are not recipients.
    """
    cells = list(cells[: columns.width])
    blank = None
    for values in cells:
        is_empty = pc.fill_null(pc.equal(values, ""), True)
        blank = is_empty if blank is None else pc.and_(blank, is_empty)
        if not pc.any(blank).as_py():
            break  # the usual case: decided after the first column
    else:
        if blank is not None:
            keep = pc.invert(blank)
            cells = [pc.filter(values, keep) for values in cells]
    positions = columns.positions
    text = substitute_templates(
        cells[positions["text"]], [(name, cells[pos]) for name, pos in columns.template_fields()]
    )
    optional = {name: empty_to_null(cells[pos]) for name, pos in positions.items() if name in OPTIONAL_COLUMNS}
    return assemble(first_row, cells[positions["to"]], text, optional)
