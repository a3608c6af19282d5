"""When to send and for how long to try: ``scheduled_time``, ``deliv_time``,
``validity`` (errors 120 and 101).

* ``scheduled_time`` is ISO 8601 *with* ``Z`` or an offset
  (``2025-06-01T09:00:00+01:00``), or Unix seconds. A time without a zone is
  refused: guessing the sender's zone would send at the wrong hour.
* ``deliv_time`` is a delay in whole minutes from the batch's ``now``.
* A row with both is refused: we cannot know which one was meant.
* More than 5 minutes in the past, or more than 7 days ahead -> 120. Within
  the 5 minutes of grace, or now: sent at once (no ``not_before``).
* ``validity`` is a whole number of minutes, 1 to 10080 (7 days, the longest
  most SMSCs keep a message); anything else -> 101.

Most batches have none of these columns filled, so every step works on the
rows that have a value only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._arrow import STRING, as_chunked, quote, sentence, take_mask, to_bool, to_int

GRACE = dt.timedelta(minutes=5)
HORIZON = dt.timedelta(days=7)
MAX_VALIDITY_MINUTES = 10080

_UNIX = r"^[0-9]+(\.[0-9]+)?$"
# A zone must follow a time of day ("2025-06-01" alone ends in "-01", which
# is not an offset); basic format without colons is accepted too.
_ZONED = r"[0-9]{2}:?[0-9]{2}(:?[0-9]{2}([.,][0-9]+)?)?\s*([zZ]|[+-][0-9]{2}(:?[0-9]{2})?)$"
_MINUTES = r"^[0-9]{1,9}$"

# Why a time is refused.
OK, BOTH, UNPARSEABLE, NO_ZONE, PAST, TOO_FAR, BAD_DELAY, DELAY_TOO_FAR = range(8)

_SCHEDULED_HELP = "use ISO 8601 with an offset (e.g. 2025-06-01T09:00:00+01:00 or ...T08:00:00Z) or Unix seconds"
_SENTENCES: dict[int, tuple[str, str, str]] = {
    # reason: (column, before the value, after the value)
    UNPARSEABLE: ("scheduled_time", "scheduled_time '", f"' is not a time: {_SCHEDULED_HELP}"),
    NO_ZONE: ("scheduled_time", "scheduled_time '", "' has no time zone: add 'Z' for UTC or an offset such as +01:00"),
    PAST: (
        "scheduled_time",
        "scheduled_time '",
        "' is more than 5 minutes in the past: give a later time, or leave it empty to send now",
    ),
    TOO_FAR: ("scheduled_time", "scheduled_time '", "' is more than 7 days ahead: schedule at most 7 days in advance"),
    BAD_DELAY: ("deliv_time", "deliv_time '", "' is not a delay: give a whole number of minutes, e.g. 30"),
    DELAY_TOO_FAR: ("deliv_time", "deliv_time '", "' is more than 7 days (10080 minutes): give a shorter delay"),
}


def _present(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Trimmed values, with blanks as nulls (an empty cell means 'not given')."""
    trimmed = pc.utf8_trim_whitespace(values)
    return as_chunked(pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, STRING), trimmed))


@dataclass(frozen=True)
class Schedule:
    """Per-row outcome of :func:`resolve`."""

    not_before: np.ndarray  # datetime64[us] (UTC), NaT = send now
    time_reason: np.ndarray  # int8, OK or why the time is refused (120)
    validity: np.ndarray  # int64 minutes, meaningful where validity_given
    validity_given: np.ndarray  # bool: a valid validity was given
    validity_bad: np.ndarray  # bool: a validity was given but is invalid (101)
    scheduled: pa.ChunkedArray  # trimmed inputs, kept for the error sentences
    deliv: pa.ChunkedArray
    validity_raw: pa.ChunkedArray

    @property
    def time_bad(self) -> np.ndarray:
        return np.asarray(self.time_reason != OK)

    def time_sentences(self, rows: np.ndarray) -> pa.ChunkedArray:
        """Sentences for the rows in mask ``rows`` (all with a bad time)."""
        reason = self.time_reason[rows]
        out = pa.nulls(int(rows.sum()), STRING)
        for code, (column, before, after) in _SENTENCES.items():
            sel = reason == code
            if sel.any():
                values = self.scheduled if column == "scheduled_time" else self.deliv
                sub = np.zeros(len(rows), dtype=bool)
                sub[np.flatnonzero(rows)[sel]] = True
                texts = sentence(before, quote(take_mask(values, sub)), after).combine_chunks()
                out = pc.replace_with_mask(out, pa.array(sel), texts)
        if (reason == BOTH).any():
            both = pa.scalar("give either scheduled_time or deliv_time, not both", STRING)
            out = pc.if_else(pa.array(reason == BOTH), both, out)
        return as_chunked(out)

    def validity_sentences(self, rows: np.ndarray) -> pa.ChunkedArray:
        return sentence(
            "validity '",
            quote(take_mask(self.validity_raw, rows)),
            f"' is not valid: give a whole number of minutes from 1 to {MAX_VALIDITY_MINUTES}",
        )


def _to_utc_us(now: dt.datetime) -> np.datetime64:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return np.datetime64(pd.Timestamp(now).tz_convert("UTC").tz_localize(None).as_unit("us").asm8, "us")


def _parse_scheduled(values: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Times (datetime64[us] UTC) and reasons for the given scheduled_time values."""
    n = len(values)
    when = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
    reason = np.full(n, UNPARSEABLE, dtype=np.int8)

    unix = to_bool(pc.match_substring_regex(values, _UNIX))
    if unix.any():
        seconds = pc.cast(take_mask(values, unix), pa.float64()).to_numpy()
        # Beyond year 9999 would overflow; such values are "too far" anyway.
        seconds = np.clip(seconds, 0, 253402300799)
        when[unix] = (seconds * 1_000_000).astype(np.int64).astype("datetime64[us]")
        reason[unix] = OK

    iso = ~unix
    if iso.any():
        rows = np.flatnonzero(iso)
        subset = take_mask(values, iso)
        zoned = to_bool(pc.match_substring_regex(subset, _ZONED))
        # Zone-less values are parsed too (as UTC, then refused), so that the
        # sentence can tell "add a zone" from "this is not a time at all".
        parsed = pd.to_datetime(subset.to_pandas().astype(object), format="ISO8601", utc=True, errors="coerce")
        parsed_us = parsed.dt.tz_localize(None).dt.as_unit("us").to_numpy()
        ok = ~np.isnat(parsed_us)
        when[rows[ok & zoned]] = parsed_us[ok & zoned]
        reason[rows[ok & zoned]] = OK
        reason[rows[ok & ~zoned]] = NO_ZONE
    return when, reason


def resolve(
    scheduled: pa.ChunkedArray, deliv: pa.ChunkedArray, validity: pa.ChunkedArray, now: dt.datetime
) -> Schedule:
    """Send times and validity of a chunk; see the module docstring."""
    n = len(scheduled)
    now64 = _to_utc_us(now)
    scheduled, deliv, validity = _present(scheduled), _present(deliv), _present(validity)
    has_s = to_bool(pc.is_valid(scheduled))
    has_d = to_bool(pc.is_valid(deliv))

    when = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
    reason = np.zeros(n, dtype=np.int8)
    reason[has_s & has_d] = BOTH

    only_s = has_s & ~has_d
    if only_s.any():
        w, r = _parse_scheduled(take_mask(scheduled, only_s))
        when[only_s], reason[only_s] = w, r
        late = (r == OK) & (w < now64 - np.timedelta64(GRACE))
        early = (r == OK) & (w > now64 + np.timedelta64(HORIZON))
        r[late], r[early] = PAST, TOO_FAR
        reason[only_s] = r

    only_d = has_d & ~has_s
    if only_d.any():
        ok, minutes = _whole_minutes(take_mask(deliv, only_d))
        too_far = ok & (minutes > HORIZON // dt.timedelta(minutes=1))
        r = np.where(ok, np.where(too_far, DELAY_TOO_FAR, OK), BAD_DELAY).astype(np.int8)
        w = np.where(r == OK, now64 + minutes.astype("timedelta64[m]"), np.datetime64("NaT"))
        when[only_d], reason[only_d] = w, r

    # Past within the grace period (or exactly now) means "send now".
    when[(reason != OK) | (when <= now64)] = np.datetime64("NaT")

    has_v = to_bool(pc.is_valid(validity))
    minutes_v = np.zeros(n, dtype=np.int64)
    v_ok = np.zeros(n, dtype=bool)
    if has_v.any():
        digits, vals = _whole_minutes(take_mask(validity, has_v))
        good = digits & (vals >= 1) & (vals <= MAX_VALIDITY_MINUTES)
        minutes_v[has_v], v_ok[has_v] = vals, good
    return Schedule(
        not_before=when,
        time_reason=reason,
        validity=minutes_v,
        validity_given=v_ok,
        validity_bad=has_v & ~v_ok,
        scheduled=scheduled,
        deliv=deliv,
        validity_raw=validity,
    )


def _whole_minutes(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(is a whole number of minutes, that number or 0) for each value of a text column."""
    ok = to_bool(pc.match_substring_regex(values, _MINUTES))
    minutes = np.zeros(len(values), dtype=np.int64)
    if ok.any():
        minutes[ok] = to_int(pc.cast(take_mask(values, ok), pa.int64()))
    return ok, minutes
