"""Duplicate messages in a batch: same destination, same text (error 132).

A batch of ten million rows must not keep ten million ``(str, str)`` tuples
in a Python set (gigabytes). Each accepted message is reduced to one 64-bit
key instead: the destination's digits are an exact integer (at most 15
digits, < 2**50) and the text contributes a 64-bit hash of its UTF-8 bytes;
the two are mixed with splitmix64's finaliser. The index keeps the keys
sorted in a numpy ``uint64`` array (8 bytes per message, 80 MB for ten
million) next to the row of each key's first occurrence (8 more bytes, so the
error sentence can name the earlier row).

A false duplicate needs two different messages with the same 64-bit key.
For ``n`` messages the chance that this happens anywhere in the batch is
about ``n**2 / 2**65``: 3e-8 for a million rows, 3e-6 for ten million. The
hash is not keyed, so a sender could craft a collision on purpose, but the
only effect would be to have one of its own messages refused.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ._arrow import byte_view

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_LENGTH_SALT = np.uint64(0x632BE59BD9B4E019)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, a bijection on uint64 in which every input
    bit affects every output bit (arrays only: numpy scalars would warn on
    the intended wrap-around)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return np.asarray(x ^ (x >> np.uint64(31)))


def text_hashes(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each string's UTF-8 bytes, computed on Arrow's buffers.

    The bytes of a row are read as 8-byte little-endian words (the last one
    zero-padded); each word, combined with its position in the row, goes
    through splitmix64 and the results are summed per row; the sum is then
    mixed with the byte length. This needs no Python object per row and is
    about twice as fast as ``pandas.util.hash_array`` on the same column.
    Nulls hash like the empty string.
    """
    data, offsets = byte_view(texts)
    n = len(offsets) - 1
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    lengths = np.diff(offsets)

    # Pad so that an 8-byte read at any byte of the text stays in bounds,
    # then view the bytes as overlapping uint64 words (stride 1).
    padded = np.zeros(len(data) + 8, dtype=np.uint8)
    padded[: len(data)] = data
    words_at = np.ndarray(shape=(len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))

    n_words = (lengths + 7) >> 3
    first_word = np.cumsum(n_words) - n_words
    total = int(n_words.sum())
    position = np.arange(total, dtype=np.int64) - np.repeat(first_word, n_words)
    words = words_at[np.repeat(offsets[:-1], n_words) + (position << 3)]
    # The last word of a row reads into the next row: keep only its own bytes.
    has_words = n_words > 0
    last = (first_word + n_words - 1)[has_words]
    spare = (8 - (lengths - ((n_words - 1) << 3)))[has_words].astype(np.uint64) * np.uint64(8)
    words[last] = (words[last] << spare) >> spare

    mixed = _mix(words ^ (position.astype(np.uint64) * _GOLDEN))
    sums = np.zeros(n, dtype=np.uint64)
    if total:
        sums[has_words] = np.add.reduceat(mixed, first_word[has_words])
    return _mix(sums ^ _mix(lengths.astype(np.uint64) + _LENGTH_SALT))


def message_keys(numbers: np.ndarray, text_hash: np.ndarray) -> np.ndarray:
    """One uint64 key per message from its destination (as an integer) and
    the :func:`text_hashes` value of its text."""
    return _mix(text_hash ^ _mix(numbers.astype(np.uint64) * _GOLDEN + np.uint64(1)))


class DuplicateIndex:
    """The keys seen so far in one batch, across its chunks."""

    def __init__(self) -> None:
        self._keys = np.empty(0, dtype=np.uint64)  # sorted
        self._rows = np.empty(0, dtype=np.int64)  # row of each key's first occurrence

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def nbytes(self) -> int:
        return self._keys.nbytes + self._rows.nbytes

    def check_and_add(self, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """For each key, the row of an earlier identical message, or -1.

        Earlier means in a previous call, or at a lower position in this one.
        Keys seen for the first time are added to the index.
        """
        m = len(keys)
        earlier = np.full(m, -1, dtype=np.int64)
        if m == 0:
            return earlier
        order = np.argsort(keys)  # not stable: the run's first is found below
        sorted_keys = keys[order]
        run_start = np.ones(m, dtype=bool)
        run_start[1:] = sorted_keys[1:] != sorted_keys[:-1]
        starts = np.flatnonzero(run_start)
        run_of = np.cumsum(run_start) - 1  # run number of each sorted position
        first_pos = np.minimum.reduceat(order, starts)  # earliest position per run
        uniq_keys = sorted_keys[starts]
        uniq_rows = rows[first_pos]

        # A run whose key an earlier call saw repeats that call's row, first
        # member included; otherwise every member but the first repeats it.
        run_earlier = np.full(len(starts), -1, dtype=np.int64)
        at = np.searchsorted(self._keys, uniq_keys)
        if len(self._keys):
            found = self._keys[np.minimum(at, len(self._keys) - 1)] == uniq_keys
            run_earlier[found] = self._rows[at[found]]
        else:
            found = np.zeros(len(starts), dtype=bool)
        pos_earlier = np.where(found[run_of], run_earlier[run_of], uniq_rows[run_of])
        is_first = order == first_pos[run_of]
        pos_earlier[~found[run_of] & is_first] = -1
        earlier[order] = pos_earlier

        new = ~found
        self._keys = np.insert(self._keys, at[new], uniq_keys[new])
        self._rows = np.insert(self._rows, at[new], uniq_rows[new])
        return earlier
