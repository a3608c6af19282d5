"""The rules stage: one chunk of parsed rows in, one chunk of messages out.

Checks run over whole columns; each gives a mask of failing rows. The first
failing check of a row decides its error, in this order (DESIGN.md §5, §6):

    parser's code, 105 destination, 122 opted out, 107 empty text,
    116 unsendable text, 123 sender, 120 time, 101 validity, 113 parts,
    132 duplicate

(101 for a bad ``validity`` is not in the brief's list; it sits with the
other per-row parameters, after 120.) The duplicate check comes last and
only sees rows that passed everything else: a row rejected for another
reason is never sent, so it cannot make a later identical row a duplicate.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .. import codes
from . import numbers, schedule, sender
from ._arrow import STRING, as_chunked, from_choices, sentence, take_mask, to_arrow, to_bool, to_int, to_pandas_str
from .national import NationalReading
from .duplicates import DuplicateIndex, message_keys, text_hashes
from .segments import GSM7, UCS2, TextMetrics, text_metrics

OUTPUT_COLUMNS = (
    "row",
    "destination",
    "text",
    "sender",
    "climsgid",
    "encoding",
    "parts",
    "status",
    "error_code",
    "error_text",
    "not_before",
    "validity_minutes",
    "note",
)


@dataclass(frozen=True)
class ProductRules:
    """The product settings that shape the rules (see DESIGN.md §1)."""

    dial_prefix: str | None = None  # e.g. "44"
    sender: str | None = None  # default sender ID
    max_parts: int = 6
    allow_duplicates: bool = False
    strict_numbers: bool = False  # libphonenumber check, unique numbers only


class _Verdicts:
    """The error code and sentence of each row; the first one set wins.

    Rejections are recorded as (rows, code, sentences) and the two output
    columns are assembled once, with one ``take`` each, in :meth:`columns`:
    patching a 250k-row string column per check would copy it every time.
    """

    def __init__(self, parser_code: pa.ChunkedArray, parser_text: pa.ChunkedArray) -> None:
        n = len(parser_code)
        parser_code = pc.utf8_trim_whitespace(parser_code)
        self._parser_code = pc.if_else(pc.equal(parser_code, ""), pa.scalar(None, STRING), parser_code)
        self.open = ~to_bool(pc.is_valid(self._parser_code))
        # A sentence without a code means nothing: drop it.
        self._parser_text = pc.if_else(
            pa.array(~self.open), pc.cast(parser_text, STRING), pa.scalar(None, STRING)
        )
        if not self.open.all():
            # A parser code without a sentence gets the code's generic text.
            known = pa.array(list(codes.ERROR_TEXT), type=STRING)
            generic = pa.array(list(codes.ERROR_TEXT.values()), type=STRING).take(
                pc.index_in(self._parser_code, value_set=known)
            )
            self._parser_text = pc.coalesce(self._parser_text, generic)
        # Per row: which recorded code (0 = the parser's, or none) and which
        # sentence (an index into parser texts + recorded sentences).
        self._code_of = np.zeros(n, dtype=np.int8)
        self._text_of = np.arange(n, dtype=np.int64)
        self._codes: list[str] = []
        self._texts: list[pa.Array] = []
        self._next_text = n

    def reject(self, mask: np.ndarray, code: str, sentences: Callable[[np.ndarray], pa.ChunkedArray]) -> None:
        """Give ``code`` to the still-open rows of ``mask``.

        ``sentences(hit)`` builds the sentences for the rows of mask ``hit``
        only, so rows already rejected by an earlier check cost nothing.
        """
        hit = self.open & mask
        if not hit.any():
            return
        texts = sentences(hit).combine_chunks()
        count = int(hit.sum())
        if len(texts) != count:
            raise AssertionError(f"{code}: {len(texts)} sentences for {count} rows")
        self._codes.append(code)
        self._code_of[hit] = len(self._codes)
        self._text_of[hit] = np.arange(self._next_text, self._next_text + count)
        self._texts.append(texts)
        self._next_text += count
        self.open &= ~hit

    def columns(self) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
        """The ``error_code`` and ``error_text`` columns."""
        if not self._codes:
            return as_chunked(self._parser_code), as_chunked(self._parser_text)
        ours = pa.array([None, *self._codes], type=STRING).take(pa.array(self._code_of))
        code = pc.if_else(pa.array(self._code_of == 0), self._parser_code, ours)
        every_text = pa.chunked_array([*as_chunked(self._parser_text).chunks, *self._texts], type=STRING)
        return as_chunked(code), as_chunked(every_text.take(pa.array(self._text_of)))


class BatchRules:
    """Stateful across the chunks of one batch (duplicate detection spans chunks)."""

    def __init__(self, rules: ProductRules, now: dt.datetime, opted_out: Iterable[str] = ()) -> None:
        """``opted_out``: the product's opt-out list (E.164 digits), read once per batch."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be timezone-aware (e.g. datetime.now(timezone.utc))")
        self.rules = rules
        self.now = now
        #: the opt-out list as sorted integers, as destinations are compared (np.isin per chunk)
        self._opted_out = optout_keys(opted_out)
        self._dial_prefix = numbers.clean_dial_prefix(rules.dial_prefix)
        self._strict = numbers.StrictChecker() if rules.strict_numbers else None
        self._national = NationalReading(self._dial_prefix) if self._dial_prefix else None
        self._seen = DuplicateIndex()
        #: Rows that needed the per-character part count (for measurements).
        self.exact_rows = 0

    def apply(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """Validate, normalise and segment one chunk; see the module docstring."""
        n = len(chunk)

        def col(name: str) -> tuple[pa.ChunkedArray, np.ndarray | None]:
            return to_arrow(chunk[name] if name in chunk.columns else None, n)

        raw_to, _ = col("to")
        text, broken_text = col("text")
        verdicts = _Verdicts(col("error_code")[0], col("error_text")[0])

        # 105 destination
        dest = numbers.normalise(raw_to, self._dial_prefix, self._national)
        if self._strict is not None and dest.valid.any():
            unknown = np.zeros(n, dtype=bool)
            unknown[dest.valid] = self._strict.invalid(take_mask(dest.digits, dest.valid))
            dest = dest.refuse(unknown, numbers.UNKNOWN)
        verdicts.reject(
            ~dest.valid,
            codes.E_DESTINATION,
            lambda hit: numbers.error_sentences(take_mask(raw_to, hit), dest.reason[hit]),
        )

        # 122 opted out: one vectorised look-up of the chunk's numbers in the product's list
        if len(self._opted_out):
            opted = in_sorted(dest.number, self._opted_out) & dest.valid
            verdicts.reject(
                opted,
                codes.E_OPTED_OUT,
                lambda hit: _constant(hit, "the destination opted out of messages from this sender: remove the row"),
            )

        # 107 empty text
        # utf8_is_space is false for "", hence the length test.
        empty = to_bool(pc.utf8_is_space(text)) | (to_int(pc.binary_length(text)) == 0)
        verdicts.reject(
            empty, codes.E_EMPTY_MESSAGE, lambda hit: _constant(hit, "text is empty: write the message text")
        )

        # 116 unsendable characters; encoding and parts come from the same pass
        metrics = text_metrics(text)
        self.exact_rows += metrics.exact_rows
        unsendable = metrics.forbidden if broken_text is None else metrics.forbidden | broken_text
        verdicts.reject(
            unsendable,
            codes.E_UNICODE,
            lambda hit: _constant(
                hit,
                "text contains a control character or broken Unicode that cannot be sent: "
                "remove it (line breaks and tabs are fine)",
            ),
        )

        # 123 sender
        senders, bad_sender = sender.resolve(col("from")[0], self.rules.sender)
        verdicts.reject(bad_sender, codes.E_SENDER, lambda hit: sender.error_sentences(take_mask(senders, hit)))

        # 120 time, 101 validity
        sched = schedule.resolve(col("scheduled_time")[0], col("deliv_time")[0], col("validity")[0], self.now)
        verdicts.reject(sched.time_bad, codes.E_DELIVERY_TIME, sched.time_sentences)
        verdicts.reject(sched.validity_bad, codes.E_PARAMETERS, sched.validity_sentences)

        # 113 parts
        parts = metrics.parts
        too_many = parts > self.rules.max_parts
        verdicts.reject(
            too_many,
            codes.E_TOO_MANY_PARTS,
            lambda hit: _parts_sentences(parts[hit], metrics.gsm[hit], self.rules.max_parts),
        )

        # 132 duplicate, among the rows that passed everything else
        rows = chunk["row"].to_numpy(dtype=np.int64)
        if not self.rules.allow_duplicates and verdicts.open.any():
            candidates = verdicts.open.copy()
            # Hash the whole column (cheaper than first copying out the
            # candidates' texts) and keep the candidates' hashes.
            keys = message_keys(dest.number[candidates], text_hashes(text)[candidates])
            earlier = np.full(n, -1, dtype=np.int64)
            earlier[candidates] = self._seen.check_and_add(keys, rows[candidates])
            verdicts.reject(
                earlier >= 0,
                codes.E_DUPLICATE_DESTINATION,
                lambda hit: sentence(
                    "same destination and text as row ",
                    pa.array(earlier[hit]).cast(STRING),
                    ": remove the repeated row, or allow duplicates on the product",
                ),
            )

        return self._frame(chunk, rows, raw_to, dest, text, senders, metrics, verdicts, sched)

    def _frame(
        self,
        chunk: pd.DataFrame,
        rows: np.ndarray,
        raw_to: pa.ChunkedArray,
        dest: numbers.Destinations,
        text: pa.ChunkedArray,
        senders: pa.ChunkedArray,
        metrics: TextMetrics,
        verdicts: _Verdicts,
        sched: schedule.Schedule,
    ) -> pd.DataFrame:
        """Assemble the output columns in the contract's order."""
        index = chunk.index
        error_code, error_text = verdicts.columns()
        rejected = ~verdicts.open
        not_before = sched.not_before.copy()
        not_before[rejected] = np.datetime64("NaT")
        status = np.where(rejected, 2, np.where(np.isnat(not_before), 0, 1))
        destination = pc.if_else(pa.array(dest.valid), dest.digits, raw_to)
        climsgid = chunk["climsgid"] if "climsgid" in chunk.columns else None
        note = pa.chunked_array([pa.nulls(len(chunk), STRING)])
        if dest.assumed is not None and self._dial_prefix:
            assumed = dest.assumed
            notes = numbers.assumed_notes(take_mask(raw_to, assumed), self._dial_prefix).combine_chunks()
            note = as_chunked(pc.replace_with_mask(note.combine_chunks(), pa.array(assumed), notes))
        frame = pd.DataFrame(
            {
                "row": pd.Series(rows, index=index, dtype="int64"),
                "destination": to_pandas_str(as_chunked(destination), index),
                "text": to_pandas_str(text, index),
                "sender": to_pandas_str(senders, index),
                "climsgid": to_pandas_str(to_arrow(climsgid, len(chunk))[0], index),
                "encoding": from_choices([UCS2, GSM7], metrics.gsm.astype(np.int8), index),
                "parts": pd.Series(metrics.parts, index=index, dtype="int64"),
                "status": from_choices([codes.QUEUED, codes.SCHEDULED, codes.ERROR], status, index),
                "error_code": to_pandas_str(error_code, index),
                "error_text": to_pandas_str(error_text, index),
                "not_before": pd.Series(not_before, index=index).dt.tz_localize("UTC"),
                "validity_minutes": pd.Series(
                    pd.arrays.IntegerArray(sched.validity, ~sched.validity_given), index=index
                ),
                "note": to_pandas_str(note, index),
            },
            index=index,
        )
        return frame


def optout_keys(digits: Iterable[str]) -> np.ndarray:
    """E.164 digit strings -> the sorted, unique uint64 keys ``dest.number`` is compared with.

    One Arrow cast for the whole list (100,000 numbers in a few milliseconds);
    an entry that is no number (never stored so, but not trusted) is dropped.
    """
    texts = pa.array(list(digits), type=pa.string())
    if len(texts) == 0:
        return np.zeros(0, dtype=np.uint64)
    plausible = pc.and_(pc.utf8_is_digit(texts), pc.less_equal(pc.utf8_length(texts), numbers.MAX_DIGITS))
    keys = pc.cast(texts.filter(pc.fill_null(plausible, False)), pa.uint64())
    return np.unique(keys.to_numpy(zero_copy_only=False))


def in_sorted(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``np.isin(values, keys)`` for sorted unique ``keys``: a binary search per value, no sort of ``values``."""
    if len(keys) == 0:
        return np.zeros(len(values), dtype=bool)
    at = np.searchsorted(keys, values)
    at[at == len(keys)] = 0
    return np.asarray(keys[at] == values)


def _parts_sentences(parts: np.ndarray, gsm: np.ndarray, max_parts: int) -> pa.ChunkedArray:
    """113 sentences; UCS-2 texts also learn why they ran out of room."""
    base = sentence(
        "text needs ", pa.array(parts).cast(STRING), f" SMS parts but at most {max_parts} are allowed: shorten it"
    )
    hint = sentence(
        base,
        ", or replace the characters outside the GSM alphabet (emoji, curly quotes, ...) "
        "that halve the room in each part",
    )
    return as_chunked(pc.if_else(pa.array(gsm), base, hint))


def _constant(hit: np.ndarray, text: str) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array([text] * int(hit.sum()), type=STRING)])
