"""The duplicate index and the text hash behind error 132."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from ftpbatch.rules.duplicates import DuplicateIndex, message_keys, text_hashes


def hashes(texts: Sequence[str | None]) -> list[int]:
    return text_hashes(pa.chunked_array([pa.array(texts, type=pa.large_string())])).tolist()


def test_hash_depends_on_every_byte_and_the_length() -> None:
    texts = ["", "a", "a\x00", "\x00a", "ab", "ba", "a" * 8, "a" * 9, "a" * 7 + "b", "b" + "a" * 7, "é", "e\u0301"]
    assert len(set(hashes(texts))) == len(texts)


def test_hash_ignores_where_the_row_sits() -> None:
    texts = ["hello world, a long enough text", "x", "", "hello world, a long enough text", "ab" * 40]
    whole = hashes(texts)
    assert whole[0] == whole[3]
    # Sliced arrays (non-zero offset), string vs large_string, several chunks.
    arr = pa.array(texts, type=pa.string())
    assert text_hashes(arr.slice(1)).tolist() == whole[1:]
    assert text_hashes(pa.chunked_array([arr.slice(0, 2), arr.slice(2)])).tolist() == whole
    assert hashes(["x", None]) == [hashes(["x"])[0], hashes([""])[0]]


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(max_size=40), max_size=30))
def test_equal_hash_iff_equal_text(texts: list[str]) -> None:
    got = hashes(texts)
    for i in range(len(texts)):
        for j in range(i):
            assert (got[i] == got[j]) == (texts[i] == texts[j])


def test_message_key_mixes_destination_and_text() -> None:
    numbers = np.array([447700900123, 447700900124, 447700900123], dtype=np.uint64)
    text = text_hashes(pa.array(["hi", "hi", "ho"]))
    keys = message_keys(numbers, text)
    assert len(set(keys.tolist())) == 3


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.integers(0, 6), max_size=60), cuts=st.lists(st.integers(0, 60), max_size=4))
def test_index_matches_a_plain_dict(keys: list[int], cuts: list[int]) -> None:
    """Chunked check_and_add gives the same answers as one pass with a dict."""
    first_row: dict[int, int] = {}
    expected = []
    for row, key in enumerate(keys, start=1):
        expected.append(first_row.get(key, -1))
        first_row.setdefault(key, row)

    index = DuplicateIndex()
    bounds = sorted({0, len(keys), *(c for c in cuts if c <= len(keys))})
    got: list[int] = []
    for a, b in zip(bounds, bounds[1:]):
        chunk = np.array(keys[a:b], dtype=np.uint64)
        got += index.check_and_add(chunk, np.arange(a + 1, b + 1, dtype=np.int64)).tolist()
    assert got == expected
    assert len(index) == len(set(keys))
