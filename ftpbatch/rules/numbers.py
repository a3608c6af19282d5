"""Destination numbers: normalisation to E.164 digits, validation (error 105).

What a destination may look like, and what becomes of it:

1. a ``(0)`` trunk marker after a country code is dropped
   (``+44 (0)7700 900123``);
2. spaces (also no-break and thin spaces), dashes (also Unicode dashes),
   dots and brackets are dropped;
3. one international prefix, ``+`` or ``00``, is dropped;
4. with a product dial prefix, a single leading ``0`` becomes the prefix
   (``07700900123`` -> ``447700900123``), and so does a missing one where
   the number is a national number whose 0 a spreadsheet dropped
   (``7700900123`` -> ``447700900123``; see ``national.py``: libphonenumber
   decides, on those candidate rows only); such rows are flagged
   ``assumed`` so the report can say so;
5. the result must be 8 to 15 ASCII digits not starting with 0 (E.164:
   country codes never start with 0).

Without a dial prefix a national number such as ``07700900123`` fails step
5, with a sentence asking for the country code, rather than being sent to
whichever country its digits happen to spell.

How: regex replacement costs ~70 ns a row, too much for the usual case of
plain ASCII numbers. So the column's bytes are classified with one numpy
table lookup (digit, '+', separator, other), the digits are packed into a
new Arrow string array and cast to uint64 in one kernel, and the prefixes
become arithmetic: leading zeros vanish from an integer, so only the digit
counts need checking. Only rows with a ``(0)`` or a non-ASCII byte (NBSP,
Unicode dashes) go through the regex first. The integer is kept: duplicate
detection uses it.

The optional strict check (``phonenumbers``, i.e. libphonenumber's metadata)
runs on distinct numbers only and remembers its answers across the chunks of
a batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ProductError
from ._arrow import STRING, as_chunked, byte_view, quote, sentence, to_arrow, to_bool
from .national import NationalReading

MIN_DIGITS, MAX_DIGITS = 8, 15

_TRUNK_MARKER = r"(\d)[\s.\-]*\(0\)"
# Separators people and spreadsheets put in numbers. \s is ASCII-only in RE2,
# so the no-break / thin spaces and the Unicode dashes are listed.
_DECORATION = r"[\s.\-()\x{A0}\x{2007}\x{202F}\x{2010}-\x{2015}\x{2212}]"
_DIAL_PREFIX = re.compile(r"[1-9][0-9]{0,3}")

# Byte classes for the fast path.
_OTHER, _DIGIT, _PLUS, _SEPARATOR = 0, 1, 2, 3
_BYTE_CLASS = np.zeros(256, dtype=np.int8)
_BYTE_CLASS[np.frombuffer(b"0123456789", dtype=np.uint8)] = _DIGIT
_BYTE_CLASS[ord("+")] = _PLUS
_BYTE_CLASS[np.frombuffer(b" \t\n\r\f\v.-()", dtype=np.uint8)] = _SEPARATOR
_POW10 = 10 ** np.arange(20, dtype=np.uint64)
# More digits than this cannot be a valid number even after dropping "00"
# or a trunk 0, and would overflow uint64.
_MAX_RAW_DIGITS = MAX_DIGITS + 2

# Reasons a destination is invalid.
OK, EMPTY, NATIONAL, MALFORMED, UNKNOWN = 0, 1, 2, 3, 4


def clean_dial_prefix(prefix: str | None) -> str | None:
    """A product's dial prefix as bare digits (``"+44"`` -> ``"44"``)."""
    if prefix is None or not prefix.strip():
        return None
    digits = prefix.strip().lstrip("+")
    if digits.startswith("00"):
        digits = digits[2:]
    if not _DIAL_PREFIX.fullmatch(digits):
        raise ProductError(f"dial prefix {prefix!r} is not a country code: use 1 to 4 digits, e.g. 44")
    return digits


@dataclass(frozen=True)
class Destinations:
    """The normalised column and why each invalid row is invalid."""

    digits: pa.ChunkedArray  # E.164 digits where valid, null elsewhere
    number: np.ndarray  # uint64: the same digits as an integer (0 where invalid)
    reason: np.ndarray  # int8 per row: OK, EMPTY, NATIONAL, MALFORMED, UNKNOWN
    #: rows read as national numbers of the dial prefix's country (no trunk 0 written)
    assumed: np.ndarray | None = None

    @property
    def valid(self) -> np.ndarray:
        return np.asarray(self.reason == OK)

    def refuse(self, mask: np.ndarray, reason: int) -> Destinations:
        """A copy with the rows of ``mask`` made invalid for ``reason``."""
        if not mask.any():
            return self
        reasons = self.reason.copy()
        reasons[mask] = reason
        digits = pc.if_else(pa.array(mask), pa.scalar(None, STRING), self.digits)
        number = np.where(mask, np.uint64(0), self.number)
        return Destinations(digits=as_chunked(digits), number=number, reason=reasons, assumed=self.assumed)


def _preclean(s: pa.Array) -> pa.Array:
    """Regex clean-up of the rare rows the byte classes cannot handle."""
    rare = to_bool(pc.match_substring(s, "(0)")) | ~to_bool(pc.string_is_ascii(s))
    if not rare.any():
        return s
    sub = s.filter(pa.array(rare))
    # The trunk marker needs a digit before it: "(0)20 ..." is a plain
    # national number whose brackets are separators.
    sub = pc.replace_substring_regex(sub, _TRUNK_MARKER, r"\1")
    sub = pc.replace_substring_regex(sub, _DECORATION, "")
    return pc.replace_with_mask(s, pa.array(rare), sub)


def normalise(
    raw: pa.ChunkedArray, dial_prefix: str | None, national: NationalReading | None = None
) -> Destinations:
    """Normalise a column of raw destinations (see the module docstring).

    ``national``: the dial prefix's :class:`NationalReading`, kept across the
    chunks of a batch for its cache (one is made when not given).
    """
    s = _preclean(pc.fill_null(raw, "").combine_chunks())
    n = len(s)
    data, offsets = byte_view(s)
    # Non-digit bytes are few (a space or two, a '+'): classify only them,
    # and find their rows by binary search instead of labelling every byte.
    is_digit = (data - np.uint8(ord("0"))) < 10
    odd_at = np.flatnonzero(~is_digit)
    odd_cls = _BYTE_CLASS[data[odd_at]]
    odd_row = np.searchsorted(offsets, odd_at, side="right") - 1
    n_other = np.bincount(odd_row[odd_cls == _OTHER], minlength=n)
    n_plus = np.bincount(odd_row[odd_cls == _PLUS], minlength=n)
    n_digits = np.diff(offsets) - np.bincount(odd_row, minlength=n)
    # A '+' may only follow separators (" +44", "(+44)").
    plus_at, plus_row = odd_at[odd_cls == _PLUS], odd_row[odd_cls == _PLUS]
    sep_at = odd_at[odd_cls == _SEPARATOR]
    seps_before = np.searchsorted(sep_at, plus_at) - np.searchsorted(sep_at, offsets[plus_row])
    plus_late = np.zeros(n, dtype=bool)
    plus_late[plus_row[seps_before != plus_at - offsets[plus_row]]] = True
    well_formed = (n_other == 0) & (n_plus <= 1) & ~plus_late & (n_digits > 0) & (n_digits <= _MAX_RAW_DIGITS)

    # The digits alone, as an Arrow string column, then as integers.
    digit_offsets = np.concatenate(([0], np.cumsum(n_digits))).astype(np.int64)
    digit_bytes = np.ascontiguousarray(data[is_digit])
    digits_only = pa.LargeStringArray.from_buffers(n, pa.py_buffer(digit_offsets), pa.py_buffer(digit_bytes))
    number = np.zeros(n, dtype=np.uint64)
    if well_formed.any():
        number[well_formed] = pc.cast(digits_only.filter(pa.array(well_formed)), pa.uint64()).to_numpy()

    # Leading zeros: the first two digits of each row.
    first = np.full(n, 255, dtype=np.uint8)
    second = np.full(n, 255, dtype=np.uint8)
    has1, has2 = n_digits >= 1, n_digits >= 2
    first[has1] = digit_bytes[digit_offsets[:-1][has1]]
    second[has2] = digit_bytes[digit_offsets[:-1][has2] + 1]
    zero = np.uint8(ord("0"))
    international = (n_plus == 1) | ((first == zero) & (second == zero))
    trunk = ~international & (first == zero)

    # The number of digits the result must have; the integer's own digit
    # count must agree, which rules out further leading zeros ("+0044...").
    expected = n_digits - np.where((n_plus == 0) & international, 2, 0)
    if dial_prefix:
        expected = np.where(trunk, n_digits - 1 + len(dial_prefix), expected)
        shift = _POW10[np.clip(n_digits - 1, 0, len(_POW10) - 1)]
        # Wraps around for absurd lengths, which fail the length test anyway.
        number = np.where(trunk, number + np.uint64(int(dial_prefix)) * shift, number)
    assumed = None
    if dial_prefix:
        # a national number whose trunk 0 is missing: candidates by masks, libphonenumber on those only
        national = national if national is not None else NationalReading(dial_prefix)
        plain = well_formed & (n_plus == 0) & has1 & (first != zero)
        cand = national.candidates(number, n_digits, plain)
        if cand.any():
            assumed = np.zeros(n, dtype=bool)
            assumed[cand] = national.national(number[cand])
            if assumed.any():
                width = len(dial_prefix)
                prefixed = number + np.uint64(int(dial_prefix)) * _POW10[n_digits.clip(0, 19)]
                number = np.where(assumed, prefixed, number)
                expected = np.where(assumed, n_digits + width, expected)
            else:
                assumed = None
    own_digits = np.searchsorted(_POW10, number, side="right")  # 0 for 0
    valid = (
        well_formed
        & (own_digits == expected)
        & (expected >= MIN_DIGITS)
        & (expected <= MAX_DIGITS)
        & (~trunk if not dial_prefix else True)
    )
    number = np.where(valid, number, np.uint64(0))

    reason = np.full(n, MALFORMED, dtype=np.int8)
    reason[valid] = OK
    reason[(n_digits + n_other + n_plus) == 0] = EMPTY
    if not dial_prefix:
        # "Add the country code" only helps where no dial prefix could have.
        reason[well_formed & trunk & (n_digits - 1 >= MIN_DIGITS - 1)] = NATIONAL
    digits = pc.if_else(pa.array(valid), pc.cast(pa.array(number), STRING), pa.scalar(None, STRING))
    return Destinations(digits=as_chunked(digits), number=number, reason=reason, assumed=assumed)


def assumed_notes(raw: pa.ChunkedArray, dial_prefix: str) -> pa.ChunkedArray:
    """The report's note for rows read as national numbers (``raw``: those rows only)."""
    return sentence(
        f"read as a national number of +{dial_prefix}: '",
        quote(raw),
        "' is not a valid international number, and spreadsheets drop a national number's leading 0",
    )


def error_sentences(raw: pa.ChunkedArray, reason: np.ndarray) -> pa.ChunkedArray:
    """One sentence per row of ``raw`` (already the rejected rows only)."""
    shown = quote(raw)
    generic = sentence(
        "destination '",
        shown,
        f"' is not a valid number: it must have {MIN_DIGITS} to {MAX_DIGITS} digits after the country code",
    )
    texts = pc.if_else(
        pa.array(reason == EMPTY),
        pa.scalar("destination is empty: give the recipient's number with its country code, e.g. 447700900123", STRING),
        generic,
    )
    if (reason == NATIONAL).any():
        national = sentence(
            "destination '",
            shown,
            "' is a national number: write it with its country code (e.g. +44 7700 900123) "
            "or set a dial prefix on the product",
        )
        texts = pc.if_else(pa.array(reason == NATIONAL), national, texts)
    if (reason == UNKNOWN).any():
        unknown = sentence(
            "destination '", shown, "' is not a number in use in its country: check the country code and the digits"
        )
        texts = pc.if_else(pa.array(reason == UNKNOWN), unknown, texts)
    return as_chunked(texts)


class StrictChecker:
    """libphonenumber validity of E.164 digit strings, one parse per distinct number.

    The cache is bounded so that a batch of ten million distinct numbers
    does not keep ten million answers; when full it is simply cleared (the
    cost is re-parsing, never a wrong answer).
    """

    def __init__(self, max_cache: int = 500_000) -> None:
        try:
            import phonenumbers
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ProductError(
                "strict number checks need the 'phonenumbers' package: pip install phonenumbers"
            ) from exc
        self._pn = phonenumbers
        self._cache: dict[str, bool] = {}
        self._max_cache = max_cache

    def _check(self, digits: str) -> bool:
        try:
            number = self._pn.parse("+" + digits, None)
        except self._pn.NumberParseException:
            return False
        return bool(self._pn.is_valid_number(number))

    def invalid(self, digits: pa.ChunkedArray) -> np.ndarray:
        """Mask of the rows whose number libphonenumber does not know as valid."""
        unique = pc.unique(digits).to_pylist()
        new = [d for d in unique if d not in self._cache]
        if len(self._cache) + len(new) > self._max_cache:
            self._cache.clear()
        for d in new:
            self._cache[d] = self._check(d)
        bad = [d for d in unique if not self._cache[d]]
        if not bad:
            return np.zeros(len(digits), dtype=bool)
        return to_bool(pc.is_in(digits, value_set=pa.array(bad, type=STRING)))


def normalise_destinations(values: pd.Series, dial_prefix: str | None = None) -> pd.Series:
    """Normalised E.164 digits for each value, NA where it is not a valid number.

    Convenience over :func:`normalise` for callers and tests that hold a
    Series (the rules stage itself stays in Arrow).
    """
    arr, _ = to_arrow(values, len(values))
    dest = normalise(arr, clean_dial_prefix(dial_prefix))
    series = dest.digits.to_pandas()
    series.index = values.index
    return series.astype("str")


def normalise_destination(value: str, dial_prefix: str | None = None) -> str | None:
    """One destination, normalised; None if it is not a valid number."""
    result = normalise_destinations(pd.Series([value], dtype="str"), dial_prefix).iloc[0]
    return None if pd.isna(result) else str(result)


def normalise_list(raw: list[str], dial_prefix: str | None) -> list[str | None]:
    """Numbers typed by people (an opt-out list, the command line) -> E.164 digits, None where invalid.

    The same normalisation as a batch's ``to`` column, with the product's dial prefix.
    """
    if not raw:
        return []
    dest = normalise(pa.chunked_array([pa.array(raw, type=STRING)]), clean_dial_prefix(dial_prefix))
    return [d if ok else None for d, ok in zip(dest.digits.to_pylist(), dest.valid.tolist())]
