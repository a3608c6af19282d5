"""Unwrap compression and find the text encoding of a batch file.

Everything here works on streams of bounded size blocks, so a 1 GB upload
never has to fit in memory. The encoding is decided by scanning the whole
(decompressed) stream once before any row is parsed: a Windows-1252 export
whose first non-ASCII character ("José") sits on row 200,000 must still be
read as Windows-1252, not rejected half way through. The scan costs a few
tens of milliseconds per 100 MB because pure-ASCII blocks are skipped with
``bytes.isascii`` and the rest is decoded by the C codec.

Decompressed streams are bounded (``ExpansionLimit``): a few kilobytes of
gzip can inflate to gigabytes, so every byte a decompressor yields is
counted and the batch is refused with 131 once past the limit.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, NoReturn

from .. import codes
from ..errors import BatchRejected

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
ZIP_EMPTY_MAGIC = b"PK\x05\x06"
# Old binary Office files (.xls, and encrypted .xlsx) are OLE compound files.
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

BLOCK_BYTES = 4 << 20
HEAD_BYTES = 64 << 10

#: The most a batch may expand to when the product sets no ``max_file_bytes``.
#: 2 GB is over ten million messages, far more than a sender puts in one file,
#: while a decompression bomb past it would fill the spool disk and keep the
#: parser busy for minutes.
DEFAULT_MAX_EXPANDED_BYTES = 2_000_000_000
#: Batch files compress some 5-30 times (one text to 100,000 sequential
#: numbers: 28; an .xlsx's parts: 15); deflate tops out at 1032, which is what
#: bombs use. Past ``RATIO_FLOOR_BYTES``, a file that expands more than
#: ``MAX_EXPANSION_RATIO`` times is refused, so a 50 KB bomb is stopped after
#: 100 MB of inflating rather than after 2 GB, while small files that merely
#: compress well (a 5 MB list of one repeated text) are not.
MAX_EXPANSION_RATIO = 200
RATIO_FLOOR_BYTES = 100_000_000

# Bytes Windows-1252 leaves undefined; NUL is never text outside UTF-16.
_CP1252_UNDEFINED = (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# Members an archiver adds on its own; they are not what the sender meant to upload.
_ZIP_JUNK_PREFIXES = ("__MACOSX/",)
_ZIP_JUNK_NAMES = (".DS_Store", "Thumbs.db", "desktop.ini")


@dataclass(frozen=True)
class ExpansionLimit:
    """How many decompressed bytes one batch file may yield, and why that many."""

    max_bytes: int
    reason: str  # completes "the file is larger than N bytes when decompressed, ..."

    @classmethod
    def for_file(cls, compressed_bytes: int, product_max: int | None) -> ExpansionLimit:
        """The product's ``max_file_bytes`` (else the default cap), tightened by the ratio guard."""
        if product_max:
            limit = cls(product_max, "the limit set for this product")
        else:
            limit = cls(DEFAULT_MAX_EXPANDED_BYTES, "the most one batch file may hold")
        by_ratio = max(RATIO_FLOOR_BYTES, MAX_EXPANSION_RATIO * compressed_bytes)
        if by_ratio < limit.max_bytes:
            return cls(by_ratio, f"over {MAX_EXPANSION_RATIO} times its compressed size (the mark of a decompression bomb)")
        return limit

    def rejection(self) -> BatchRejected:
        return BatchRejected(
            f"the file is larger than {self.max_bytes:,} bytes when decompressed, {self.reason}: "
            "split the batch into smaller files and upload them one by one",
            code=codes.E_FILE_TOO_LARGE,
        )

    def check_declared(self, declared_bytes: int) -> None:
        """Refuse up front what an archive's headers say it expands to.

        Headers are the sender's to write, so for a .zip member this only
        saves inflating an honest bomb: the count while reading
        (``BoundedStream``) still applies. For workbook parts it is the bound
        itself (see ``xlsx_reader._check_declared_sizes``).
        """
        if declared_bytes > self.max_bytes:
            raise self.rejection()


class BoundedStream(io.BufferedIOBase):
    """A decompressed stream that refuses (131) to yield more than ``limit.max_bytes``.

    The decompressor is never asked for more than one byte past the limit,
    so a bomb is refused after inflating at most the limit. Seeking works
    (openpyxl needs it for a workbook inside a .zip or .gz); a seek forward
    or from the end reads through the count instead of letting the
    decompressor inflate unchecked.
    """

    def __init__(self, raw: BinaryIO, limit: ExpansionLimit) -> None:
        super().__init__()
        self._raw = raw
        self._limit = limit
        self._pos = 0
        self._size: int | None = None  # known once the end has been read

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._raw.seekable()

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(BLOCK_BYTES), b""))
        if size == 0:
            return b""
        data = self._raw.read(min(size, self._limit.max_bytes - self._pos + 1))
        if not data:
            self._size = self._pos
        self._pos += len(data)
        if self._pos > self._limit.max_bytes:
            raise self._limit.rejection()
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(BLOCK_BYTES if size < 0 else size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            while self._size is None and self.read(BLOCK_BYTES):
                pass
            assert self._size is not None
            target = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if target < 0:
            raise OSError(f"negative seek position {target}")
        if target <= self._pos:
            # Backwards, so within what has been counted already.
            self._pos = self._raw.seek(target)
            return self._pos
        while self._pos < target and self.read(min(target - self._pos, BLOCK_BYTES)):
            pass
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


@dataclass(frozen=True)
class Source:
    """Where the batch bytes come from, after unwrapping ``.gz`` or ``.zip``.

    ``open()`` returns a fresh binary stream of the uncompressed bytes each
    time it is called (readers may need two passes); the caller closes it.
    A decompressed stream is a ``BoundedStream``: it refuses (131) to yield
    more than ``limit`` (by default the cap for a product without
    ``max_file_bytes``). A plain file needs no bound: its size on disk was
    checked at intake.
    """

    path: Path
    container: str  # "plain" | "gzip" | "zip"
    member: str | None = None
    limit: ExpansionLimit | None = None

    def open(self) -> BinaryIO:
        if self.container == "plain":
            return open(self.path, "rb")
        if self.container == "gzip":
            raw: BinaryIO = gzip.open(self.path, "rb")  # type: ignore[assignment]  # GzipFile is a binary stream; typeshed types it apart  # noqa: SIM115
        else:
            assert self.container == "zip" and self.member is not None
            # The member stream keeps the archive file open after the
            # ZipFile itself is closed (zipfile reference-counts the handle).
            with zipfile.ZipFile(self.path) as archive:
                raw = archive.open(self.member)  # type: ignore[assignment]  # ZipExtFile is a binary stream; typeshed types it apart
        return BoundedStream(raw, self.expansion_limit())  # type: ignore[return-value]  # BoundedStream implements the reads our readers use

    def expansion_limit(self) -> ExpansionLimit:
        """How far this source may expand (the default cap if none was given)."""
        return self.limit or ExpansionLimit.for_file(self.path.stat().st_size, None)

    @property
    def where(self) -> str:
        """How to name a byte offset to the sender."""
        return "of the uncompressed data" if self.container != "plain" else "of the file"


def open_source(path: Path, max_bytes: int | None = None) -> tuple[Source, bytes]:
    """Detect ``.gz``/``.zip`` by their magic bytes; return the source and its first bytes.

    The head returned is that of the *uncompressed* stream (at most
    ``HEAD_BYTES``). A ``.zip`` that is in fact an Excel workbook is returned
    as a plain source: the xlsx reader opens it itself. ``max_bytes`` (the
    product's ``max_file_bytes``) bounds the decompressed size, see
    ``ExpansionLimit``; a zip member declaring more is refused before any of
    it is inflated.
    """
    with open(path, "rb") as raw:
        magic = raw.read(8)
        limit = ExpansionLimit.for_file(os.fstat(raw.fileno()).st_size, max_bytes)
    if magic.startswith(GZIP_MAGIC):
        source = Source(path, "gzip", limit=limit)
    elif magic.startswith(ZIP_EMPTY_MAGIC):
        raise BatchRejected("the zip archive is empty: put the batch file inside it", code=codes.E_MALFORMED)
    elif magic.startswith(ZIP_MAGIC) and not is_workbook_zip(path):
        if not zipfile.is_zipfile(path) and _names_workbook_parts(path):
            raise BatchRejected(
                "the file is an Excel workbook, but it is damaged (cut short or corrupt) and cannot be read: "
                "save it again as .xlsx or CSV and upload it again",
                code=codes.E_MALFORMED,
            )
        source = Source(path, "zip", _only_member(path, limit), limit)
    else:
        source = Source(path, "plain", limit=limit)
    head = read_head(source)
    if source.container != "plain":
        _reject_nested(source, head)
    return source, head


def read_head(source: Source, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` uncompressed bytes (fewer if the file is shorter)."""
    with _mapped_errors(source):
        with source.open() as stream:
            return _read_exactly(stream, size)


def is_workbook_zip(file: Path | BinaryIO) -> bool:
    """True for an xlsx (or other OOXML) package rather than a zip of one batch file."""
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return "[Content_Types].xml" in names


def _names_workbook_parts(path: Path) -> bool:
    """True when the first local headers of a (broken) zip name the parts of an Excel workbook.

    A workbook cut short has lost its central directory, so ``zipfile``
    cannot list it; the local headers at the front still carry the part
    names (``[Content_Types].xml``, ``xl/workbook.xml``, ``xl/worksheets/``).
    """
    with open(path, "rb") as raw:
        head = raw.read(HEAD_BYTES)
    return any(part in head for part in (b"[Content_Types].xml", b"xl/workbook.xml", b"xl/worksheets/"))


def _reject_nested(source: Source, head: bytes) -> None:
    """An archive inside the archive: say so, rather than "not text" or "not a workbook".

    A workbook inside a .zip or .gz is fine (it is a zip package itself).
    """
    if head.startswith(GZIP_MAGIC):
        inner = "gz"
    elif head.startswith((ZIP_MAGIC, ZIP_EMPTY_MAGIC)):
        with _mapped_errors(source), source.open() as stream:
            if is_workbook_zip(stream):
                return
        inner = "zip"
    else:
        return
    if source.container == "zip":
        holds, outer = f"the zip archive holds {source.member!r}, which is itself a .{inner} file", "zip"
    else:
        holds, outer = f"the gzip data holds a .{inner} file", "gz"
    raise BatchRejected(
        f"{holds}, not a batch file or an Excel workbook; a .{inner} inside a .{outer} is not supported: "
        "send the inner file",
        code=codes.E_MALFORMED,
    )


def _only_member(path: Path, limit: ExpansionLimit) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise BatchRejected(
            f"the file looks like a zip archive but cannot be opened ({exc}): upload it again",
            code=codes.E_MALFORMED,
        ) from None
    if "mimetype" in [i.filename for i in infos]:
        raise BatchRejected(
            "OpenDocument files (.ods) are not supported: save the sheet as .xlsx or CSV",
            code=codes.E_MALFORMED,
        )
    members = [
        info
        for info in infos
        if not info.is_dir()
        and not info.filename.startswith(_ZIP_JUNK_PREFIXES)
        and info.filename.rsplit("/", 1)[-1] not in _ZIP_JUNK_NAMES
    ]
    if len(members) != 1:
        listed = ", ".join(repr(m.filename) for m in members[:5])
        found = f"{len(members)} files ({listed}{', ...' if len(members) > 5 else ''})" if members else "no file"
        raise BatchRejected(
            f"a zip archive must contain exactly one batch file, this one contains {found}: "
            "upload one file per archive",
            code=codes.E_MALFORMED,
        )
    if members[0].flag_bits & 0x1:
        raise BatchRejected(
            "the zip archive is password-protected: upload it without a password", code=codes.E_MALFORMED
        )
    limit.check_declared(members[0].file_size)
    return members[0].filename


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    # Decompressing streams may return short reads; loop until size or EOF.
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        block = stream.read(remaining)
        if not block:
            break
        parts.append(block)
        remaining -= len(block)
    return b"".join(parts)


@contextmanager
def _mapped_errors(source: Source) -> Iterator[None]:
    """Turn decompression failures into a sentence for the sender."""
    try:
        yield
    except (EOFError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile, NotImplementedError) as exc:
        if source.container == "plain":
            raise
        kind = "gzip" if source.container == "gzip" else "zip"
        raise BatchRejected(
            f"the {kind} data is damaged or truncated ({exc}): compress the file again and upload it",
            code=codes.E_MALFORMED,
        ) from None


@dataclass(frozen=True)
class Encoding:
    """The result of the encoding scan.

    ``name`` is what the contract reports ("utf-8", "utf-8-sig", "utf-16",
    "cp1252"); ``codec`` is what pandas/``io`` should decode with. The C CSV
    parser strips a UTF-8 byte-order mark by itself, so both UTF-8 variants
    read through the fast bytes path with codec "utf-8".
    """

    name: str
    codec: str


def detect_encoding(source: Source, head: bytes) -> Encoding:
    """Scan the whole uncompressed stream and pick its encoding, or reject it.

    UTF-8 (BOM optional) and UTF-16 with a BOM are taken as declared. Without
    a BOM the bytes are UTF-8 if every one of them decodes as UTF-8, else
    Windows-1252. NUL bytes, or bytes that neither encoding accepts, reject
    the file with code 100 and the offset of the first bad byte.
    """
    for bom, name in _BOMS:
        if head.startswith(bom):
            if name == "utf-32":
                raise BatchRejected(
                    "the file is UTF-32 encoded, which is not supported: save it as UTF-8",
                    code=codes.E_MALFORMED,
                )
            if name == "utf-16":
                _check_strict(source, "utf-16", "UTF-16")
                return Encoding("utf-16", "utf-16")
            _check_strict(source, "utf-8", "UTF-8", check_nul=True)
            return Encoding("utf-8-sig", "utf-8")
    return _scan_utf8_or_cp1252(source)


def _check_strict(source: Source, codec: str, label: str, check_nul: bool = False) -> None:
    """Decode the whole stream with ``codec``; reject at the first invalid byte."""
    decoder = codecs.getincrementaldecoder(codec)("strict")
    offset = 0
    with _mapped_errors(source), source.open() as stream:
        while block := stream.read(BLOCK_BYTES):
            if check_nul and (nul := block.find(b"\x00")) >= 0:
                _reject_nul(source, offset + nul)
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                bad = offset - pending + exc.start
                _reject_undecodable(source, bad, _byte_at(block, bad - offset, exc), label)
            offset += len(block)
        pending = len(decoder.getstate()[0])
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            _reject_truncated(source, offset - pending + exc.start, label)


def _scan_utf8_or_cp1252(source: Source) -> Encoding:
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    utf8_bad: tuple[int, int] | None = None  # (offset, byte) where UTF-8 fails
    cp1252_bad: tuple[int, int] | None = None  # first byte Windows-1252 leaves undefined
    offset = 0
    with _mapped_errors(source), source.open() as stream:
        while block := stream.read(BLOCK_BYTES):
            if (nul := block.find(b"\x00")) >= 0:
                _reject_nul(source, offset + nul)
            ascii_only = block.isascii()
            if cp1252_bad is None and not ascii_only:
                hits = [i for i in (block.find(b) for b in _CP1252_UNDEFINED) if i >= 0]
                if hits:
                    cp1252_bad = (offset + min(hits), block[min(hits)])
            if utf8_bad is None and not (ascii_only and not decoder.getstate()[0]):
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    at = offset - pending + exc.start
                    utf8_bad = (at, _byte_at(block, at - offset, exc))
            if utf8_bad is not None and cp1252_bad is not None:
                break  # neither encoding can work; no need to read further
            offset += len(block)
        if utf8_bad is None:
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                if cp1252_bad is None:
                    return Encoding("cp1252", "cp1252")  # a trailing é in a Windows file
                utf8_bad = (offset - pending + exc.start, -1)
    if utf8_bad is None:
        return Encoding("utf-8", "utf-8")
    if cp1252_bad is None:
        return Encoding("cp1252", "cp1252")
    # The bytes before the later of the two failures read fine one way, so the
    # later failure is the byte that breaks the most plausible reading.
    at, byte = max(utf8_bad, cp1252_bad)
    if byte < 0:
        _reject_truncated(source, at, "UTF-8")
    _reject_undecodable(source, at, byte, "UTF-8 or Windows-1252")


def _byte_at(block: bytes, index: int, exc: UnicodeDecodeError) -> int:
    if 0 <= index < len(block):
        return block[index]
    return exc.object[exc.start] if isinstance(exc.object, (bytes, bytearray)) else -1


def _reject_nul(source: Source, offset: int) -> NoReturn:
    raise BatchRejected(
        f"the file contains a NUL byte at byte offset {offset} {source.where}, so it is not text: "
        "upload a CSV or text file saved as UTF-8 (UTF-16 needs a byte-order mark)",
        code=codes.E_MALFORMED,
    )


def _reject_undecodable(source: Source, offset: int, byte: int, label: str) -> NoReturn:
    raise BatchRejected(
        f"byte 0x{byte:02X} at byte offset {offset} {source.where} is not valid {label}: "
        "save the file as UTF-8 and upload it again",
        code=codes.E_MALFORMED,
    )


def _reject_truncated(source: Source, offset: int, label: str) -> NoReturn:
    raise BatchRejected(
        f"the file ends in the middle of a {label} character (byte offset {offset} {source.where}): "
        "save the file as UTF-8 and upload it again",
        code=codes.E_MALFORMED,
    )


def decode_head(head: bytes, encoding: Encoding) -> str:
    """Decode the head for sniffing; a character cut at the end is dropped, a BOM removed."""
    codec = "utf-8-sig" if encoding.codec == "utf-8" else encoding.codec
    return codecs.getincrementaldecoder(codec)("replace").decode(head, final=False)


def open_text(source: Source, encoding: Encoding) -> io.TextIOWrapper:
    """A text stream with universal newlines (``\\n``, ``\\r\\n`` and ``\\r`` all end a line)."""
    codec = "utf-8-sig" if encoding.name == "utf-8-sig" else encoding.codec
    return io.TextIOWrapper(source.open(), encoding=codec, errors="strict", newline=None)
