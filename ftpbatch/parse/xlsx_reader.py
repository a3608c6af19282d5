"""Excel workbooks (.xlsx): the first sheet, read row by row with openpyxl."""

from __future__ import annotations

import datetime as dt
import itertools
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from typing import Any, BinaryIO, Callable, Generator, Iterator
from xml.etree.ElementTree import ParseError

import pandas as pd
import pyarrow as pa

from .. import codes
from ..errors import BatchRejected
from .columns import STRING, ColumnMap, looks_like_phone, tabular_chunk
from .decode import ExpansionLimit

# What a damaged package or sheet makes openpyxl raise (with its InvalidFileException,
# added where a workbook is read: openpyxl is imported only then, so
# that ``process`` and ``serve`` do not pay its import, a tenth of a second, at start).
_BROKEN_BASE: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    KeyError,
    IndexError,
    OSError,
    ValueError,
    ParseError,
    EOFError,
    zlib.error,
)


def _broken(original_name: str, exc: BaseException) -> BatchRejected:
    return BatchRejected(
        f"{original_name!r} cannot be read as an Excel workbook ({exc}): save it again as .xlsx or CSV",
        code=codes.E_MALFORMED,
    )


@contextmanager
def _quiet() -> Iterator[None]:
    # openpyxl warns about styles, data validation and the like that it
    # ignores; none of it matters for reading values and with warnings as
    # errors it would fail the batch.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def cell_text(value: Any) -> str:
    """A cell as the sender sees it: numbers as integers where they are whole.

    ``447700900123`` stored as a number must not come out as ``4.477e11`` or
    ``447700900123.0``; a float that is a whole number is printed as one.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def other_sheets_note(titles: list[str]) -> str:
    """What summary.json says of a workbook of several sheets: only the first one is read."""
    others = ", ".join(repr(t) for t in titles[1:6]) + (", ..." if len(titles) > 6 else "")
    return (
        f"the workbook has {len(titles)} sheets and only the first, {titles[0]!r}, was read "
        f"(not {others}): put every message on the first sheet, or upload each sheet as a file of its own"
    )


def _row_cells(row: tuple[Any, ...]) -> list[str]:
    cells = [cell_text(v) for v in row]
    while cells and not cells[-1].strip():
        cells.pop()  # sheets pad rows with empty cells up to the used range
    return cells


def read_xlsx(
    open_stream: Callable[[], BinaryIO],
    original_name: str,
    chunk_rows: int,
    limit: ExpansionLimit,
    notes: list[str] | None = None,
) -> Iterator[pd.DataFrame]:
    """Open the first sheet now, read its rows later.

    The workbook is opened and its header checked before this returns, so an
    unreadable, empty or header-only sheet raises ``BatchRejected`` here, and
    so does (131) a package whose parts declare more than ``limit`` bytes in
    all. The returned generator owns the open workbook: closing it (or
    dropping it) releases the file even if no chunk was ever asked for.
    A workbook of several sheets adds a sentence saying so to ``notes``.
    """
    chunks = _sheet_chunks(open_stream, original_name, chunk_rows, limit, notes if notes is not None else [])
    next(chunks)  # run up to the header check
    return chunks  # the None sentinel was consumed by the next() above


def _sheet_chunks(
    open_stream: Callable[[], BinaryIO], original_name: str, chunk_rows: int, limit: ExpansionLimit, notes: list[str]
) -> Generator[pd.DataFrame | None, None, None]:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    broken = (*_BROKEN_BASE, InvalidFileException)
    stream = open_stream()
    book = None
    try:
        try:
            _check_declared_sizes(stream, limit)
            with _quiet():
                book = load_workbook(stream, read_only=True, data_only=True)
                sheet = book.worksheets[0]
                if len(book.worksheets) > 1:
                    notes.append(other_sheets_note([ws.title for ws in book.worksheets]))
                # Some writers record a wrong used range (A1:A1); openpyxl
                # would believe it and cut the rows short.
                sheet.reset_dimensions()
                rows = iter(sheet.iter_rows(values_only=True))
                columns, rows = _header(rows)
        except broken as exc:
            raise _broken(original_name, exc) from None
        yield None  # primed: the header is fine, rows follow on demand
        width = columns.width
        next_row = 1
        while True:
            try:
                with _quiet():
                    block = list(itertools.islice(rows, chunk_rows))
            except broken as exc:
                raise _broken(original_name, exc) from None
            if not block:
                break
            # One Python pass per cell is unavoidable here: openpyxl itself
            # builds every cell in Python, which dominates the cost anyway.
            padded = [(list(row) + [None] * width)[:width] for row in block]
            cells = [pa.array([cell_text(v) for v in column], STRING) for column in zip(*padded)]
            chunk = tabular_chunk(cells, columns, next_row)
            if len(chunk):
                next_row += len(chunk)
                yield chunk
    finally:
        if book is not None:
            book.close()
        stream.close()  # openpyxl does not close a stream it was handed


def _check_declared_sizes(stream: BinaryIO, limit: ExpansionLimit) -> None:
    """Refuse (131) a package whose parts declare more than ``limit`` bytes in all.

    openpyxl opens the parts itself, so they cannot be counted while read;
    the declared sizes are a true bound all the same: ``zipfile`` never
    yields more than a part's declared size (a part that would inflate
    further is cut there and fails its CRC check, so the workbook is refused
    as damaged). ``test_parse_errors`` holds zipfile to that.
    """
    with zipfile.ZipFile(stream) as package:
        limit.check_declared(sum(info.file_size for info in package.infolist()))
    stream.seek(0)


def _header(rows: Iterator[tuple[Any, ...]]) -> tuple[ColumnMap, Iterator[tuple[Any, ...]]]:
    """Read the header (or detect a headerless sheet); return the rows that follow."""
    header = next((cells for cells in map(_row_cells, rows) if cells), None)
    if header is None:
        raise BatchRejected(
            "the first sheet of the workbook is empty: put a header row 'to, text' and one row per "
            "message on the first sheet",
            code=codes.E_MALFORMED,
        )
    if looks_like_phone(header[0]):
        return ColumnMap.headerless(len(header)), itertools.chain([tuple(header)], rows)
    columns = ColumnMap.from_header(header)
    first = next((row for row in rows if _row_cells(row)), None)
    if first is None:
        raise BatchRejected(
            "the first sheet has a header row but no messages: add one row per message below it",
            code=codes.E_MALFORMED,
        )
    return columns, itertools.chain([first], rows)
