"""Encoding and message parts: boundaries, and properties against a reference.

The reference below is deliberately naive and shares no code or table with
``ftpbatch.rules``: its own copy of the GSM 03.38 alphabet, one character at
a time, greedy packing.
"""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftpbatch.rules import count_parts, split_parts
from ftpbatch.rules import gsm as gsm_tables
from ftpbatch.rules.segments import encoding_of

# --- the independent reference ----------------------------------------------
REF_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
REF_EXTENSION = set("^{}\\[~]|€\f")


def ref_cost(ch: str, gsm: bool) -> int:
    if gsm:
        return 2 if ch in REF_EXTENSION else 1
    return 2 if ord(ch) >= 0x10000 else 1


def ref_parts(text: str) -> tuple[str, list[str]]:
    """Encoding and parts, one character at a time."""
    gsm = all(ch in REF_BASIC or ch in REF_EXTENSION for ch in text)
    single, multi = (160, 153) if gsm else (70, 67)
    if sum(ref_cost(ch, gsm) for ch in text) <= single:
        return ("gsm7" if gsm else "ucs2"), [text]
    parts = [""]
    room = multi
    for ch in text:
        cost = ref_cost(ch, gsm)
        if cost > room:
            parts.append("")
            room = multi
        parts[-1] += ch
        room -= cost
    return ("gsm7" if gsm else "ucs2"), parts


def one(text: str) -> tuple[str, int]:
    enc, parts = count_parts(pd.Series([text], dtype="str"))
    return enc.iloc[0], int(parts.iloc[0])


# --- the alphabet itself ----------------------------------------------------
def test_alphabet_matches_reference() -> None:
    assert set(gsm_tables.BASIC_CHARS) == REF_BASIC
    assert set(gsm_tables.EXTENSION_CHARS) == REF_EXTENSION


def test_alphabet_matches_gsm0338_codec() -> None:
    codec = pytest.importorskip("gsm0338")
    del codec
    for septet, ch in enumerate(gsm_tables.GSM_BASIC):
        if ch != gsm_tables.GSM_ESCAPE:
            assert ch.encode("gsm03.38") == bytes([septet]), ch
    for ch, septet in gsm_tables.GSM_EXTENSION.items():
        assert ch.encode("gsm03.38") == bytes([0x1B, septet]), ch


# --- concrete boundaries ----------------------------------------------------
@pytest.mark.parametrize(
    ("text", "encoding", "parts"),
    [
        ("", "gsm7", 1),
        ("a" * 160, "gsm7", 1),
        ("a" * 161, "gsm7", 2),
        ("a" * 153 * 2, "gsm7", 2),
        ("a" * (153 * 2 + 1), "gsm7", 3),
        ("€" * 80, "gsm7", 1),  # 160 septets
        ("€" * 80 + "a", "gsm7", 2),  # 161 septets
        ("a" * 159 + "€", "gsm7", 2),  # 161 septets, though only 160 characters
        ("é" * 160, "gsm7", 1),  # é is in the default alphabet
        ("ç" * 10, "ucs2", 1),  # ç is not (only Ç is)
        ("`", "ucs2", 1),
        ("\t", "ucs2", 1),
        ("a\fb", "gsm7", 1),  # form feed is in the extension table
        ("ж" * 70, "ucs2", 1),
        ("ж" * 71, "ucs2", 2),
        ("ж" * 67 * 2, "ucs2", 2),
        ("ж" * (67 * 2 + 1), "ucs2", 3),
        ("😀" * 35, "ucs2", 1),  # 70 UTF-16 units
        ("😀" * 35 + "a", "ucs2", 2),
        ("a" * 66 + "😀" + "a" * 10, "ucs2", 2),
    ],
)
def test_boundaries(text: str, encoding: str, parts: int) -> None:
    assert one(text) == (encoding, parts)
    assert len(split_parts(text, encoding)) == parts


def test_extension_char_at_position_153_moves_to_next_part() -> None:
    text = "a" * 152 + "€" + "b" * 20
    parts = split_parts(text, "gsm7")
    assert parts[0] == "a" * 152  # 152 septets: the escape pair does not fit in 1
    assert parts[1] == "€" + "b" * 20
    assert "".join(parts) == text


def test_greedy_waste_costs_an_extra_part() -> None:
    # 152 'a' + '€' fill part one with 152 septets (one wasted); a closed-form
    # ceil(306 / 153) = 2 would be wrong: three parts are needed.
    text = "a" * 152 + "€" + "a" * 152
    assert sum(2 if c == "€" else 1 for c in text) == 306
    assert one(text) == ("gsm7", 3)
    assert len(split_parts(text, "gsm7")) == 3


def test_emoji_at_67_boundary_moves_to_next_part() -> None:
    text = "ж" * 66 + "😀" + "ж" * 10
    parts = split_parts(text, "ucs2")
    assert parts == ["ж" * 66, "😀" + "ж" * 10]
    text = "ж" * 65 + "😀" + "ж" * 10  # fits exactly: 65 + 2 = 67 units
    assert split_parts(text, "ucs2")[0] == "ж" * 65 + "😀"


def test_emoji_waste_costs_an_extra_part() -> None:
    text = "ж" * 66 + "😀" + "ж" * 66  # 134 units = 2 * 67, but the pair cannot straddle
    assert one(text) == ("ucs2", 3)


def test_missing_text_counts_as_empty() -> None:
    enc, parts = count_parts(pd.Series(["hi", None], index=[5, 6], dtype="str"))
    assert enc.tolist() == ["gsm7", "gsm7"] and parts.tolist() == [1, 1]
    assert list(enc.index) == [5, 6] and str(parts.dtype) == "int64"


def test_split_parts_refuses_wrong_encoding() -> None:
    with pytest.raises(ValueError):
        split_parts("日本", "gsm7")
    with pytest.raises(ValueError):
        split_parts("abc", "latin1")


# --- properties against the reference ----------------------------------------
GSM_BASIC_SAMPLE = "aZ09 @£$¥èéÇ\nØΔ_ΦΓÆß!\"#¤%&'()*+,-./:;<=>?¡Ä§¿àñ\r"
GSM_EXT_SAMPLE = "^{}\\[~]|€\f"
LATIN1_NON_GSM = "çãôÀÁÂÃÈÊËÍÎÏ`\t«»°"
BMP = "日本語Жж“”’–—…ﬁ\u200b"
ASTRAL = "😀🎉𝄞🇬🇧👍🏽𠀀"

_mixes = [
    # mostly GSM with some extension characters: the escape-pair boundaries
    st.text(st.sampled_from(GSM_BASIC_SAMPLE * 6 + GSM_EXT_SAMPLE), max_size=700),
    # GSM with extension characters dense enough to hit every boundary
    st.text(st.sampled_from("a" + GSM_EXT_SAMPLE), min_size=70, max_size=500),
    # UCS-2 with surrogate pairs
    st.text(st.sampled_from(BMP * 3 + ASTRAL), max_size=300),
    # everything mixed
    st.text(st.sampled_from(GSM_BASIC_SAMPLE + GSM_EXT_SAMPLE + LATIN1_NON_GSM + BMP + ASTRAL), max_size=400),
    # long GSM texts with one non-GSM character somewhere
    st.builds(
        lambda a, c, b: a + c + b,
        st.text(st.sampled_from(GSM_BASIC_SAMPLE), max_size=200),
        st.sampled_from(LATIN1_NON_GSM + BMP + ASTRAL),
        st.text(st.sampled_from(GSM_EXT_SAMPLE + "ab"), max_size=200),
    ),
]
texts_strategy = st.one_of(*_mixes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(texts_strategy, min_size=1, max_size=20))
def test_count_parts_matches_reference(texts: list[str]) -> None:
    enc, parts = count_parts(pd.Series(texts, dtype="str"))
    expected = [ref_parts(t) for t in texts]
    assert enc.tolist() == [e for e, _ in expected]
    assert parts.tolist() == [len(p) for _, p in expected]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts_strategy)
def test_split_parts_matches_reference_and_limits(text: str) -> None:
    encoding, expected = ref_parts(text)
    assert encoding_of(text) == encoding
    parts = split_parts(text, encoding)
    assert parts == expected
    assert "".join(parts) == text
    gsm = encoding == "gsm7"
    limit = (160 if gsm else 70) if len(parts) == 1 else (153 if gsm else 67)
    for part in parts:
        assert sum(ref_cost(ch, gsm) for ch in part) <= limit
    assert len(parts) == int(count_parts(pd.Series([text], dtype="str"))[1].iloc[0])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 700), ext_at=st.lists(st.integers(0, 699), max_size=8))
def test_every_extension_position(n: int, ext_at: list[int]) -> None:
    chars = ["a"] * n
    for i in ext_at:
        if i < n:
            chars[i] = "€"
    text = "".join(chars)
    assert one(text) == ref_parts(text)[0:1] + (len(ref_parts(text)[1]),)


# --- the column path on whole batches ---------------------------------------
def ref_forbidden(text: str) -> bool:
    return any((ord(c) < 0x20 and c not in "\t\n\f\r") or 0x7F <= ord(c) <= 0x9F for c in text)


CONTROLS = "\x00\x01\x07\x0b\x1b\x1f\x7f\x80\x85\x9f"
SAFE_NEAR_CONTROLS = "\t\n\f\r\xa0\xa3\xa7\xbf"  # allowed; £ § ¿ share the C2 lead byte with C1 controls


_MIXED_CONTROLS = st.text(st.sampled_from("ab€ж😀" + CONTROLS + SAFE_NEAR_CONTROLS), max_size=30)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(_MIXED_CONTROLS, max_size=30))
def test_forbidden_characters_match_reference(texts: list[str]) -> None:
    from ftpbatch.rules._arrow import to_arrow
    from ftpbatch.rules.segments import text_metrics

    arr, _ = to_arrow(pd.Series(texts, dtype="str"), len(texts))
    assert text_metrics(arr).forbidden.tolist() == [ref_forbidden(t) for t in texts]


@pytest.mark.parametrize(
    "make",
    [
        lambda i: "Привет, мир! " * (i % 40) + "😀" * (i % 7),  # dense non-ASCII, many parts
        lambda i: "{a}[b]~|€ " * (i % 50) + "x" * (i % 11),  # dense escapes
        lambda i: "a" * (i % 400) + "€" * (i % 3),  # plain, with escapes at the boundaries
        lambda i: "😀" * (i % 120),  # every character a surrogate pair
    ],
)
def test_large_columns_match_reference(make) -> None:  # type: ignore[no-untyped-def]
    """Enough rows and bytes for the dense (whole-array) code paths."""
    texts = [make(i) for i in range(2000)]
    enc, parts = count_parts(pd.Series(texts, dtype="str"))
    expected = [ref_parts(t) for t in texts]
    assert enc.tolist() == [e for e, _ in expected]
    assert parts.tolist() == [len(p) for _, p in expected]


def test_a_text_the_encoding_cannot_carry_is_an_error_of_the_tree_with_code_116() -> None:
    from ftpbatch import codes
    from ftpbatch.errors import EncodingError, FtpbatchError

    with pytest.raises(EncodingError) as raised:
        split_parts("Привет " * 30, "gsm7")
    assert isinstance(raised.value, FtpbatchError) and isinstance(raised.value, ValueError)
    assert raised.value.code == codes.E_UNICODE and "U+041F" in raised.value.message
    with pytest.raises(EncodingError) as raised:
        split_parts("hello " * 40, "latin1")
    assert raised.value.code == codes.E_PARAMETERS
