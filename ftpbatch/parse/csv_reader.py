"""Delimited text (CSV, TSV, semicolon, pipe) read in chunks by pandas' C parser."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

import pandas as pd
import pyarrow.compute as pc

from .. import codes
from ..errors import BatchRejected
from .columns import ColumnMap, looks_like_phone, tabular_chunk, to_arrow
from .decode import Encoding, Source
from .detect import first_record, sniff_delimiter

_PARSER_FIELDS = re.compile(r"Expected \d+ fields in line (\d+), saw (\d+)")
_DELIMITER_NAMES = {",": "comma ','", ";": "semicolon ';'", "\t": "tab", "|": "pipe '|'"}


@dataclass(frozen=True)
class CsvLayout:
    """What the head of the file told us: its delimiter and its columns."""

    delimiter: str
    columns: ColumnMap

    @classmethod
    def from_head(cls, head_text: str, head_is_whole_file: bool) -> CsvLayout:
        """Sniff the delimiter and read the header; reject empty and header-only files."""
        delimiter = sniff_delimiter(head_text)
        first = first_record(head_text, delimiter, complete=head_is_whole_file)
        if first is None:
            raise BatchRejected(
                "the file is empty: upload a file with a header row 'to,text' and one row per message",
                code=codes.E_MALFORMED,
            )
        if looks_like_phone(first.cells[0]):
            return cls(delimiter, ColumnMap.headerless(len(first.cells)))
        columns = ColumnMap.from_header(first.cells)
        if not first.more_rows:
            raise BatchRejected(
                "the file has a header row but no messages: add one row per message below the header",
                code=codes.E_MALFORMED,
            )
        return cls(delimiter, columns)

    def too_many_fields(self, where: str, seen: str) -> str:
        """The sentence for a row that has more fields than the header."""
        owner = "the header has" if self.columns.has_header else "the first row has"
        delimiter = _DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))
        return (
            f"{where} has {seen} fields but {owner} {self.columns.width}: put double quotes around "
            f"any value that contains the {delimiter} delimiter"
        )


def read_csv_chunks(source: Source, encoding: Encoding, layout: CsvLayout, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Yield canonical chunks of at most ``chunk_rows`` recipients.

    The header row is read as data and dropped, so blank lines before it and
    the parser's own line counting stay consistent. One spare column is read
    past the header's width: a trailing delimiter on every data line (a common
    export quirk) lands there harmlessly, while a real value there means a
    text with an unquoted delimiter, which is refused rather than silently cut.
    """
    columns = layout.columns
    next_row = 1
    header_pending = columns.has_header
    stream = source.open()
    try:
        reader = pd.read_csv(
            stream,
            sep=layout.delimiter,
            header=None,
            names=[f"c{i}" for i in range(columns.width + 1)],
            index_col=False,
            dtype=str,
            keep_default_na=False,
            na_filter=False,  # an empty cell is "", and "NA" is a text, not a missing value
            skip_blank_lines=True,
            quotechar='"',
            doublequote=True,
            encoding=encoding.codec,
            encoding_errors="strict",
            engine="c",
            chunksize=chunk_rows,
        )
        with reader:
            for raw in _mapped_errors(_growing(reader, chunk_rows), layout):
                if header_pending:
                    raw = raw.iloc[_rows_through_header(raw) :]
                    header_pending = False
                if raw.empty:
                    continue
                _check_spare_column(raw, layout, next_row)
                chunk = tabular_chunk([to_arrow(raw.iloc[:, i]) for i in range(columns.width)], columns, next_row)
                if len(chunk):
                    next_row += len(chunk)
                    yield chunk
    finally:
        stream.close()
    if next_row == 1:
        raise BatchRejected("the file has no message rows: add one row per message", code=codes.E_MALFORMED)


#: rows of the first chunk read: then twice as many each time, up to chunk_rows
FIRST_CHUNK_ROWS = 10_000


def _growing(reader: Any, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The parser's chunks, small first: the first messages are queued (and sent) while the rest is read.

    A million-row file read 250,000 rows at a time queued nothing for its
    first ~1.9 s; starting with 10,000 rows, the first are on their way after
    a few tens of milliseconds, and the chunks soon reach their full size.
    """
    size = min(FIRST_CHUNK_ROWS, chunk_rows)
    while True:
        try:
            yield reader.get_chunk(size)
        except StopIteration:
            return
        size = min(size * 2, chunk_rows)


def _mapped_errors(reader: Iterator[pd.DataFrame], layout: CsvLayout) -> Iterator[pd.DataFrame]:
    """Re-raise the parser's complaints as sentences for the sender."""
    try:
        yield from reader
    except pd.errors.ParserError as exc:
        match = _PARSER_FIELDS.search(str(exc))
        if match is None:
            raise BatchRejected(
                f"the file cannot be read as delimited text ({exc}): check the double quotes in it",
                code=codes.E_MALFORMED,
            ) from None
        message = layout.too_many_fields(f"line {match.group(1)}", match.group(2))
        raise BatchRejected(message, code=codes.E_MALFORMED) from None
    except UnicodeDecodeError:  # only if the file changed after the encoding scan
        raise BatchRejected(
            "the file is not valid text in the encoding it started with: save it as UTF-8 and upload it again",
            code=codes.E_MALFORMED,
        ) from None


def _rows_through_header(raw: pd.DataFrame) -> int:
    """How many leading rows of the first chunk are blank or the header itself."""
    for i, cells in enumerate(raw.itertuples(index=False)):
        if any(str(cell).strip() for cell in cells):
            return i + 1
    return len(raw)


def _check_spare_column(raw: pd.DataFrame, layout: CsvLayout, next_row: int) -> None:
    width = layout.columns.width
    used = pc.not_equal(to_arrow(raw.iloc[:, width]), "")
    if not pc.any(used).as_py():
        return
    first = int(pc.index(used, True).as_py())
    # Blank rows before the culprit are not recipients: count them out so the
    # row number matches the report's.
    blank_before = int((raw.iloc[:first, :width] == "").all(axis=1).sum())
    to = raw.iloc[first, layout.columns.positions["to"]]
    where = f"message row {next_row + first - blank_before} (to {to!r})"
    # Exactly one field too many, or the parser itself would have complained.
    raise BatchRejected(layout.too_many_fields(where, str(width + 1)), code=codes.E_MALFORMED)
