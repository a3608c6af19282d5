"""Encoding choice and message parts (concatenated SMS), for columns and texts.

A text goes as GSM 7-bit when every character is in the GSM 03.38 default
alphabet or its extension table, else as UCS-2 (really UTF-16: a character
outside the BMP takes a surrogate pair, 2 code units).

=========  ===========  =================  ===========================
encoding   single part  each part of many  a unit that is never split
=========  ===========  =================  ===========================
gsm7       160 septets  153 septets        escape + extension char (2)
ucs2       70 units     67 units           surrogate pair (2)
=========  ===========  =================  ===========================

Parts of a long message are filled greedily: a 2-unit character that does
not fit in what is left of a part starts the next one, leaving one unit
unused. So ``ceil(n / 153)`` is a lower bound, not always the answer.

The column path (:func:`text_metrics`) works on the column's UTF-8 bytes with
numpy (and Arrow's regex kernel for the rows that are not plain ASCII). It
packs characters only for the rows where the wasted units can change the
count (multipart texts with 2-unit characters whose lower and upper bounds
differ), and even then with one vectorised step per part, not per character.
The per-text path (:func:`split_parts`) is the same greedy rule written
plainly; the SMPP connector uses it to cut UDH segments, and
``len(split_parts(t, enc))`` always equals the counted parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .. import codes
from ..errors import EncodingError
from . import gsm
from ._arrow import byte_view, from_choices, take_mask, to_arrow, to_bool, to_int

GSM7 = "gsm7"
UCS2 = "ucs2"

#: (single-part limit, per-part limit of a multipart message), in units.
LIMITS: dict[str, tuple[int, int]] = {GSM7: (160, 153), UCS2: (70, 67)}


# --- one text at a time ----------------------------------------------------
def char_units(ch: str, encoding: str) -> int:
    """Units (septets or UTF-16 code units) one character takes."""
    if encoding == GSM7:
        cost = gsm.septets(ch)
        if cost == 0:
            raise EncodingError(f"character {ch!r} (U+{ord(ch):04X}) is not in the GSM 03.38 alphabet")
        return cost
    if encoding == UCS2:
        return 2 if ord(ch) > 0xFFFF else 1
    raise EncodingError(f"unknown encoding {encoding!r}: use {GSM7!r} or {UCS2!r}", codes.E_PARAMETERS)


def encoding_of(text: str) -> str:
    """``"gsm7"`` when the whole text fits GSM 03.38, else ``"ucs2"``."""
    return GSM7 if gsm.is_gsm(text) else UCS2


def split_parts(text: str, encoding: str) -> list[str]:
    """Cut ``text`` into the parts it is sent as.

    A text within the single-part limit is one part (no UDH needed); a longer
    one is packed greedily into parts of 153 septets / 67 UTF-16 units, never
    splitting an escape pair or a surrogate pair. An empty text is one empty
    part. Raises EncodingError (a ValueError) if ``text`` does not fit ``encoding``.
    """
    costs = [char_units(ch, encoding) for ch in text]
    single, multi = LIMITS[encoding]
    if sum(costs) <= single:
        return [text]
    parts: list[str] = []
    start = used = 0
    for i, cost in enumerate(costs):
        if used + cost > multi:
            parts.append(text[start:i])
            start, used = i, 0
        used += cost
    parts.append(text[start:])
    return parts


# --- whole columns ---------------------------------------------------------
@dataclass(frozen=True)
class TextMetrics:
    """Per-row results of :func:`text_metrics` (numpy arrays, one per row)."""

    gsm: np.ndarray  # bool: encodable in GSM 7-bit
    parts: np.ndarray  # int64: number of SMS parts
    forbidden: np.ndarray  # bool: contains a character we refuse (error 116)
    exact_rows: int  # how many rows needed the character-level packing


# UTF-8 facts the byte-level code relies on:
# * a character starts at every byte that is not a continuation (10xxxxxx);
# * characters outside the BMP, and only they, start with 0xF0..0xF4;
# * among GSM characters only € (E2 82 AC) starts with 0xE2, and the other
#   extension characters are ASCII: [ \ ] ^ (0x5B-0x5E), { | } ~ (0x7B-0x7E)
#   and form feed (0x0C).
# Byte tests are written as comparisons: indexing a 256-entry table with a
# uint8 array makes numpy build an 8-byte index per byte first.
_FORBIDDEN_BYTE = np.zeros(256, dtype=bool)
_FORBIDDEN_BYTE[[b for b in range(0x20) if b not in (0x09, 0x0A, 0x0C, 0x0D)] + [0x7F]] = True


def _gsm_double(data: np.ndarray) -> np.ndarray:
    """Bytes that start a 2-septet character (in a text known to be GSM)."""
    return np.asarray(
        ((data - np.uint8(0x5B)) < 4) | ((data - np.uint8(0x7B)) < 4) | (data == 0x0C) | (data == 0xE2)
    )


def _astral_lead(data: np.ndarray) -> np.ndarray:
    """Bytes that start a character outside the BMP (2 UTF-16 units)."""
    return data >= 0xF0


def _ceil_div(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    return -(-a // b)


def _rows_of(positions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The row of each byte position (``offsets`` as from ``byte_view``)."""
    return np.searchsorted(offsets, positions, side="right") - 1


# Flagged bytes are usually rare (a few per row at most): then finding them
# and binary-searching their rows is cheapest. For dense flags (a batch in
# Cyrillic, say) whole-array passes win; the switch is at 1 byte in 16.
_SPARSE = 16


def _rows_with(flags: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Mask of the rows having at least one flagged byte."""
    rows = np.zeros(len(offsets) - 1, dtype=bool)
    count = np.count_nonzero(flags)
    if count == 0:
        return rows
    if count < len(flags) // _SPARSE:
        rows[_rows_of(np.flatnonzero(flags), offsets)] = True
    else:
        nonempty = np.diff(offsets) > 0
        rows[nonempty] = np.maximum.reduceat(flags.view(np.uint8), offsets[:-1][nonempty]) > 0
    return rows


def _count_per_row(flags: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """How many bytes of each row are flagged."""
    n = len(offsets) - 1
    count = np.count_nonzero(flags)
    if count == 0:
        return np.zeros(n, dtype=np.int64)
    if count < len(flags) // _SPARSE:
        return np.asarray(np.bincount(_rows_of(np.flatnonzero(flags), offsets), minlength=n))
    # (np.add.reduceat is ~40x slower than this on uint8 input.)
    total = np.concatenate(([0], np.cumsum(flags, dtype=np.int32 if len(flags) < 2**31 else np.int64)))
    return np.asarray(total[offsets[1:]] - total[offsets[:-1]], dtype=np.int64)


def _non_gsm(texts: pa.ChunkedArray, data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Mask of the texts with a character outside GSM 7-bit.

    The exact test is a regex, but it costs ~90 ns per 60-character row, and
    most rows are plain printable ASCII, which is GSM except for the
    backtick. So numpy first marks the rows with any byte that is not
    printable ASCII or is a backtick (line breaks included, to keep it to
    three array operations), and only those rows go through the regex.
    """
    odd = ((data - np.uint8(0x20)) > 0x5E) | (data == 0x60)  # controls, DEL, non-ASCII wrap above 0x5E
    suspect = _rows_with(odd, offsets)
    result = np.zeros(len(texts), dtype=bool)
    if suspect.any():
        result[suspect] = to_bool(pc.match_substring_regex(take_mask(texts, suspect), gsm.NON_GSM_RE))
    return result


def _forbidden(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Mask of the texts with a C0 control (but tab, LF, FF, CR), DEL, or a
    C1 control (UTF-8 C2 80..C2 9F)."""
    # Control bytes are few (line breaks at most), so find them first and
    # look up the exact rule only for them.
    controls = np.flatnonzero((data < 0x20) | (data == 0x7F))
    bad = controls[_FORBIDDEN_BYTE[data[controls]]]
    c2 = np.flatnonzero(data[:-1] == 0xC2)  # rare: £ § ¡ ¿ ¤ ¥ and C1 controls
    follower = data[c2 + 1]
    bad = np.concatenate((bad, c2[(follower >= 0x80) & (follower <= 0x9F)]))
    rows = np.zeros(len(offsets) - 1, dtype=bool)
    rows[_rows_of(bad, offsets)] = True
    return rows


def _subset_bytes(texts: pa.ChunkedArray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return byte_view(take_mask(texts, rows))


def _char_costs(data: np.ndarray, offsets: np.ndarray, gsm_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Units of every character of the given rows, and the rows' char offsets."""
    lead = (data & 0xC0) != 0x80
    lead_at = np.flatnonzero(lead)
    char_offsets = np.searchsorted(lead_at, offsets)
    lead_bytes = data[lead_at]
    row_gsm = np.repeat(gsm_rows, np.diff(char_offsets))
    double = np.where(row_gsm, _gsm_double(lead_bytes), _astral_lead(lead_bytes))
    return 1 + double.astype(np.int64), char_offsets


def _pack(costs: np.ndarray, char_offsets: np.ndarray, multi: np.ndarray) -> np.ndarray:
    """Greedy part count of many texts at once.

    One iteration per part, not per character: ``after[i]`` is the units up
    to and including character ``i`` over the whole (concatenated) column,
    so the first character that no longer fits the part starting at ``pos``
    is one binary search away.
    """
    after = np.cumsum(costs)
    before = after - costs
    pos, end = char_offsets[:-1].copy(), char_offsets[1:]
    parts = np.zeros(len(pos), dtype=np.int64)
    active = pos < end
    while active.any():
        rows = np.flatnonzero(active)
        nxt = np.searchsorted(after, before[pos[rows]] + multi[rows], side="right")
        pos[rows] = np.minimum(nxt, end[rows])
        parts[rows] += 1
        active[rows] = pos[rows] < end[rows]
    return parts


def text_metrics(texts: pa.ChunkedArray) -> TextMetrics:
    """Encoding, parts and unsendable characters of a whole text column.

    Missing texts count as empty (one GSM part); the caller rejects them.
    """
    length = to_int(pc.utf8_length(texts))
    data, offsets = byte_view(texts)
    gsm_ok = ~_non_gsm(texts, data, offsets)
    # GSM texts cannot hold a forbidden character: only the others are searched.
    forbidden = np.zeros(len(texts), dtype=bool)
    if not gsm_ok.all():
        forbidden[~gsm_ok] = _forbidden(*_subset_bytes(texts, ~gsm_ok))

    # A GSM text of at most 80 characters fits 160 septets even if every
    # character is an extension one; likewise 35 characters for UCS-2. Only
    # longer rows need their 2-unit characters counted.
    units = length.copy()
    gsm_long = gsm_ok & (length > LIMITS[GSM7][0] // 2)
    if gsm_long.any():
        sub_data, sub_offsets = _subset_bytes(texts, gsm_long)
        units[gsm_long] += _count_per_row(_gsm_double(sub_data), sub_offsets)
    ucs2_long = ~gsm_ok & (length > LIMITS[UCS2][0] // 2)
    if ucs2_long.any():
        sub_data, sub_offsets = _subset_bytes(texts, ucs2_long)
        units[ucs2_long] += _count_per_row(_astral_lead(sub_data), sub_offsets)

    single = np.where(gsm_ok, LIMITS[GSM7][0], LIMITS[UCS2][0])
    multi = np.where(gsm_ok, LIMITS[GSM7][1], LIMITS[UCS2][1])
    lower = np.where(units <= single, 1, _ceil_div(units, multi))

    # Each full part wastes at most one unit, and only if a 2-unit character
    # follows; so with k such characters the greedy count is at most
    # min(ceil((n + k) / multi), ceil(n / (multi - 1))). Where that equals the
    # lower bound the count is exact without looking at the characters.
    doubles = units - length
    upper = np.minimum(_ceil_div(units + doubles, multi), _ceil_div(units, multi - 1))
    unsure = (units > single) & (doubles > 0) & (upper > lower)
    parts = lower
    if unsure.any():
        sub_data, sub_offsets = _subset_bytes(texts, unsure)
        costs, char_offsets = _char_costs(sub_data, sub_offsets, gsm_ok[unsure])
        parts[unsure] = _pack(costs, char_offsets, multi[unsure])
    return TextMetrics(gsm=gsm_ok, parts=parts, forbidden=forbidden, exact_rows=int(unsure.sum()))


def count_parts(texts: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Encoding (``"gsm7"``/``"ucs2"``) and number of parts of each text.

    Vectorised over the column; missing texts count as empty (gsm7, 1 part).
    Both results carry the index of ``texts``.
    """
    arr, _ = to_arrow(texts, len(texts))
    metrics = text_metrics(arr)
    encoding = from_choices([UCS2, GSM7], metrics.gsm.astype(np.int8), texts.index)
    parts = pd.Series(metrics.parts, index=texts.index, dtype="int64")
    return encoding, parts
