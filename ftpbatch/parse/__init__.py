"""Parse stage: turn a claimed batch file into pandas DataFrame chunks.

``open_batch`` looks at the file eagerly (compression, encoding, format,
header, key:value settings and credentials), so file-level problems raise
``BatchRejected`` before anything is queued. Rows then come lazily, in chunks
of ``CHUNK_COLUMNS``, so memory stays bounded whatever the file size::

    parsed = open_batch(path, "june.csv", FileCredentials("shop", check))
    for chunk in parsed.chunks:      # may still raise BatchRejected (e.g. a
        ...                          # malformed line deep in the file)

Modules: ``decode`` (gzip/zip, encoding scan), ``detect`` (format sniffing),
``columns`` (aliases, templates, chunk shape), and one reader per format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from .columns import CHUNK_COLUMNS
from .csv_reader import CsvLayout, read_csv_chunks
from .decode import HEAD_BYTES, Encoding, Source, decode_head, detect_encoding, open_source, open_text
from .detect import is_key_value, is_workbook, reject_binary_office
from .kv_reader import KvSettings, recipient_chunks, scan_settings
from .xlsx_reader import read_xlsx

__all__ = ["CHUNK_COLUMNS", "FileCredentials", "ParsedFile", "open_batch"]


@dataclass(frozen=True)
class FileCredentials:
    """The logged-in product, to check ``api_id``/``user``/``password`` lines of key:value files."""

    product: str
    check_password: Callable[[str], bool]  # slow hash check; called only if a password line is present


@dataclass
class ParsedFile:
    """A batch file whose format is known; ``chunks`` yields its rows lazily."""

    format: str  # "csv" | "kv" | "xlsx"
    encoding: str  # "utf-8", "utf-8-sig", "utf-16" or "cp1252" ("utf-8" for xlsx: its XML is UTF-8)
    callback_level: int | None  # from a key:value ``callback:`` line (0-3), else None
    chunks: Iterator[pd.DataFrame]
    #: what the sender should know about the whole file (e.g. only the first sheet of a workbook read)
    notes: list[str] = field(default_factory=list)


def open_batch(
    path: Path,
    original_name: str,
    credentials: FileCredentials,
    *,
    chunk_rows: int = 250_000,
    max_bytes: int | None = None,
) -> ParsedFile:
    """Detect the format of ``path`` and return its rows as an iterator of chunks.

    Raises ``BatchRejected`` (100 malformed, 101 bad key:value parameters,
    001 credentials mismatch) for every problem visible before the rows are
    read. Each chunk has the columns ``CHUNK_COLUMNS``: ``row`` (int64,
    1-based recipient number, consecutive across chunks), then strings
    (pandas ``str`` dtype, missing = NaN) ``to`` as written, ``text`` with
    templates substituted, ``from``, ``climsgid``, ``scheduled_time``,
    ``deliv_time``, ``validity`` as written, and ``error_code``/``error_text``
    for row problems the parser already knows (116 for bad ``unicode:1`` hex).

    ``max_bytes`` (the product's ``max_file_bytes``) bounds what a ``.gz``,
    ``.zip`` or ``.xlsx`` may expand to; past it, or past the default cap or
    the compression-ratio guard (see ``decode.ExpansionLimit``), the file is
    refused with 131, up front when the archive declares it, else while read.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    path = Path(path)
    source, head = open_source(path, max_bytes)
    reject_binary_office(head, original_name)
    if is_workbook(head):
        # openpyxl needs to seek; a compressed member is seekable, if slowly.
        notes: list[str] = []
        chunks = read_xlsx(source.open, original_name, chunk_rows, source.expansion_limit(), notes)
        return ParsedFile("xlsx", "utf-8", None, chunks, notes)
    encoding = detect_encoding(source, head)
    head_text = decode_head(head, encoding)
    if is_key_value(head_text):
        with open_text(source, encoding) as lines:
            settings = scan_settings(lines, credentials.product, credentials.check_password)
        return ParsedFile("kv", encoding.name, settings.callback_level, _kv_chunks(source, encoding, settings, chunk_rows))
    layout = CsvLayout.from_head(head_text, head_is_whole_file=len(head) < HEAD_BYTES)
    return ParsedFile("csv", encoding.name, None, read_csv_chunks(source, encoding, layout, chunk_rows))


def _kv_chunks(source: Source, encoding: Encoding, settings: KvSettings, chunk_rows: int) -> Iterator[pd.DataFrame]:
    with open_text(source, encoding) as lines:
        yield from recipient_chunks(lines, settings, chunk_rows)
