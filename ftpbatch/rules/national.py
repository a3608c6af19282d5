"""National numbers that lost their trunk 0 (the commonest spreadsheet mistake).

Excel stores ``07700 900023`` typed into a cell as the number 7700900023;
so does a CSV saved from it. Read as written, that is the international
number +7 700 900 023. With a product dial prefix, a destination is read as
a national number of the prefix's country instead when:

1. it has no ``+``, no ``00`` and no leading ``0`` (the number as written
   would be taken as international);
2. it does not start with the dial prefix itself;
3. its digit count is one the country's national numbers have
   (libphonenumber's metadata: 7, 9 or 10 for the UK) and the prefixed
   number has at most 15 digits;
4. libphonenumber does not know it as a valid international number
   (``4915112345678`` is a German mobile and stays one);
5. prefixed, libphonenumber finds it a possible number of the country (the
   right length for a number of its kind).

Steps 1-3 are numpy masks over the whole column, so libphonenumber only
ever sees these candidates, and each distinct one once per batch (answers
are cached). Step 5 asks for a *possible* number, not a *valid* one: a
national reading can only be wrong for a number that was invalid anyway,
and the UK's fictional range 07700 900xxx, which libphonenumber does not
list as valid, is exactly what people test with.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..errors import ProductError

MAX_DIGITS = 15


@functools.lru_cache(maxsize=64)
def national_lengths(dial_prefix: str) -> frozenset[int]:
    """The digit counts of the national (significant) numbers of a calling code; empty if unknown."""
    pn = _phonenumbers()
    code = int(dial_prefix)
    lengths: set[int] = set()
    for region in pn.COUNTRY_CODE_TO_REGION_CODE.get(code, ()):
        if region == pn.REGION_CODE_FOR_NON_GEO_ENTITY:
            meta = pn.PhoneMetadata.metadata_for_nongeo_region(code)
        else:
            meta = pn.PhoneMetadata.metadata_for_region(region)
        if meta is not None and meta.general_desc is not None:
            lengths.update(meta.general_desc.possible_length or ())
    return frozenset(n for n in lengths if n > 0)


def _phonenumbers() -> Any:
    try:
        import phonenumbers
    except ImportError as exc:  # pragma: no cover - a runtime dependency; depends on the install
        raise ProductError(
            "reading national numbers needs the 'phonenumbers' package: pip install phonenumbers"
        ) from exc
    return phonenumbers


class NationalReading:
    """Which candidate numbers are national numbers of one dial prefix's country (cached per number)."""

    def __init__(self, dial_prefix: str, max_cache: int = 500_000) -> None:
        self.dial_prefix = dial_prefix
        self.code = int(dial_prefix)
        self.lengths = np.array(sorted(national_lengths(dial_prefix)), dtype=np.int64)
        self._cache: dict[int, bool] = {}
        self._max_cache = max_cache

    def candidates(self, number: np.ndarray, n_digits: np.ndarray, plain: np.ndarray) -> np.ndarray:
        """Rows that may be national numbers (steps 1-3).

        ``number``: the digits as an integer; ``n_digits``: how many digits
        were written; ``plain``: rows well formed with no ``+``, ``00`` or
        leading ``0`` (so ``number`` has exactly ``n_digits`` digits).
        """
        if not plain.any():  # the usual batch: every number with +, 00 or a trunk 0
            return plain
        width = len(self.dial_prefix)
        fits = np.isin(n_digits, self.lengths) & (n_digits + width <= MAX_DIGITS)
        cand = plain & fits
        if not cand.any():
            return cand
        # starts with the dial prefix: the leading `width` digits spell it
        shift = np.clip(n_digits - width, 0, 19).astype(np.uint64)
        lead = number // (np.uint64(10) ** shift)
        starts = (n_digits >= width) & (lead == np.uint64(self.code))
        return cand & ~starts

    def national(self, number: np.ndarray) -> np.ndarray:
        """For candidate numbers (uint64), whether each is read as national (steps 4-5)."""
        if len(number) == 0:
            return np.zeros(0, dtype=bool)
        distinct, which = np.unique(number, return_inverse=True)
        values = distinct.tolist()
        new = [v for v in values if v not in self._cache]
        if len(self._cache) + len(new) > self._max_cache:
            self._cache.clear()
        for v in new:
            self._cache[v] = self._check(v)
        answers = np.fromiter((self._cache[v] for v in values), dtype=bool, count=len(values))
        return answers[which]

    def _check(self, value: int) -> bool:
        pn = _phonenumbers()
        try:
            if pn.is_valid_number(pn.parse("+" + str(value), None)):
                return False  # a real international number: sent as written
        except pn.NumberParseException:
            pass
        national = pn.PhoneNumber(country_code=self.code, national_number=value)
        return bool(pn.is_possible_number_with_reason(national) == pn.ValidationResult.IS_POSSIBLE)
