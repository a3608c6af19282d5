"""Destination normalisation (DESIGN.md §5): concrete cases and properties."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftpbatch.errors import ProductError
from ftpbatch.rules.numbers import clean_dial_prefix, normalise_destination, normalise_destinations


@pytest.mark.parametrize(
    ("raw", "prefix", "expected"),
    [
        ("447700900123", None, "447700900123"),
        ("+447700900123", None, "447700900123"),
        ("00447700900123", None, "447700900123"),
        ("+44 7700 900123", None, "447700900123"),
        ("+44 (0)7700 900123", None, "447700900123"),
        ("+44(0)7700-900-123", None, "447700900123"),
        ("0044 (0) 7700 900123", None, "447700900123"),
        ("44 (0)7700 900123", None, "447700900123"),
        ("+1 (555) 123-4567", None, "15551234567"),
        ("+1.555.123.4567", None, "15551234567"),
        ("  447700900123  ", None, "447700900123"),
        ("+44\u00a07700\u00a0900123", None, "447700900123"),  # no-break spaces from a spreadsheet
        ("+44\u20117700\u2013900123", None, "447700900123"),  # Unicode hyphen, en dash
        # dial prefix replaces a single leading 0
        ("07700900123", "44", "447700900123"),
        ("07700 900 123", "44", "447700900123"),
        ("(0)7700 900123", "44", "447700900123"),
        ("07700900123", "+44", "447700900123"),
        ("0612345678", "33", "33612345678"),
        # ... but never the international 00 or an explicit +
        ("0033612345678", "44", "33612345678"),
        ("+33612345678", "44", "33612345678"),
        # without a dial prefix a national number is refused, not guessed
        ("07700900123", None, None),
        # length: 8 to 15 digits
        ("12345678", None, "12345678"),
        ("1234567", None, None),
        ("123456789012345", None, "123456789012345"),
        ("1234567890123456", None, None),
        ("+1234567890123456", None, None),
        # garbage
        ("", None, None),
        ("   ", None, None),
        ("12ab", None, None),
        ("4477OO900123", None, None),  # letter O for zero
        ("+44 7700 900123 ext 5", None, None),
        ("+0447700900123", None, None),  # '+' then a trunk 0 is not E.164
        ("44+7700900123", None, None),  # '+' only in front
        ("+44+7700900123", None, None),
        ("(+44) 7700 900123", None, "447700900123"),
        (" + 44 7700 900123", None, "447700900123"),
        ("+0447700900123", "44", None),
        ("٤٤٧٧٠٠٩٠٠١٢٣", None, None),  # Arabic-Indic digits are not ASCII digits
        ("0", "44", None),
        ("00", None, None),
        ("+", None, None),
    ],
)
def test_normalise_cases(raw: str, prefix: str | None, expected: str | None) -> None:
    assert normalise_destination(raw, prefix) == expected


def test_vectorised_matches_scalar_and_keeps_index() -> None:
    values = pd.Series(["07700 900123", None, "12ab", "+44 20 7946 0000"], index=[10, 11, 12, 13], dtype="str")
    out = normalise_destinations(values, "44")
    assert list(out.index) == [10, 11, 12, 13]
    assert out.iloc[0] == "447700900123"
    assert pd.isna(out.iloc[1]) and pd.isna(out.iloc[2])
    assert out.iloc[3] == "442079460000"


def test_object_column_with_numbers_as_ints() -> None:
    # A parser that let Excel integers through must not crash the rules.
    values = pd.Series([447700900123, "07700900124", None], dtype=object)
    out = normalise_destinations(values, "44")
    assert out.tolist()[:2] == ["447700900123", "447700900124"]


@pytest.mark.parametrize("prefix", ["0", "044", "12345", "4a", "+"])
def test_bad_dial_prefix(prefix: str) -> None:
    with pytest.raises(ProductError):
        clean_dial_prefix(prefix)


@pytest.mark.parametrize(("prefix", "clean"), [("44", "44"), ("+44", "44"), ("0044", "44"), (" 1 ", "1"), ("", None)])
def test_clean_dial_prefix(prefix: str, clean: str | None) -> None:
    assert clean_dial_prefix(prefix) == clean


# --- properties -------------------------------------------------------------
def _e164(min_size: int = 8, max_size: int = 15) -> st.SearchStrategy[str]:
    return st.builds(
        lambda first, rest: first + rest,
        st.sampled_from("123456789"),
        st.text("0123456789", min_size=min_size - 1, max_size=max_size - 1),
    )


_SEPARATORS = st.sampled_from([" ", "-", ".", "  ", " - ", "\u00a0", ""])


@st.composite
def decorated(draw: st.DrawFn, digits: str) -> str:
    """``digits`` with separators, bracketed groups and surrounding space."""
    out: list[str] = []
    i = 0
    while i < len(digits):
        size = draw(st.integers(1, 4))
        group = digits[i : i + size]
        # A bracketed lone 0 after a digit is a trunk marker and is dropped
        # on purpose ("44 (0)7700"), so the generator never makes one.
        if draw(st.booleans()) and group != "0":
            group = f"({group})"
        out.append(group)
        i += size
        if i < len(digits):
            out.append(draw(_SEPARATORS))
    return draw(st.sampled_from(["", " ", "\t"])) + "".join(out) + draw(st.sampled_from(["", " "]))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), digits=_e164(), intl=st.sampled_from(["", "+", "00", "+ ", "00 "]))
def test_any_decoration_normalises_to_the_digits(data: st.DataObject, digits: str, intl: str) -> None:
    raw = intl + data.draw(decorated(digits))
    assert normalise_destination(raw) == digits
    # A dial prefix changes nothing for a number that does not start with 0,
    # unless the number, written without + or 00, is no valid international
    # number but has the length of a UK national one: then it is read as one.
    with_prefix = normalise_destination(raw, "44")
    if with_prefix != digits:
        assert intl == "" and with_prefix == "44" + digits and len(digits) in (9, 10) and not _valid(digits)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), cc=st.sampled_from(["1", "44", "33", "353", "971"]), rest=_e164(7, 12))
def test_trunk_marker_after_country_code(data: st.DataObject, cc: str, rest: str) -> None:
    raw = "+" + cc + data.draw(st.sampled_from([" (0)", "(0)", " (0) ", "-(0)-"])) + data.draw(decorated(rest))
    assert normalise_destination(raw) == cc + rest


@settings(max_examples=300, deadline=None)
@given(data=st.data(), prefix=_e164(1, 3), rest=_e164(7, 12))
def test_national_number_gets_the_dial_prefix(data: st.DataObject, prefix: str, rest: str) -> None:
    raw = data.draw(decorated("0" + rest))
    expected = prefix + rest if 8 <= len(prefix + rest) <= 15 else None
    assert normalise_destination(raw, prefix) == expected
    # Without a prefix the national number is not valid E.164.
    assert normalise_destination(raw) is None


@settings(max_examples=200, deadline=None)
@given(digits=st.text("0123456789", min_size=0, max_size=30))
def test_only_8_to_15_digits_not_starting_with_0_are_valid(digits: str) -> None:
    bare = digits[2:] if digits.startswith("00") else digits  # 00 is the international prefix
    ok = 8 <= len(bare) <= 15 and not bare.startswith("0")
    assert normalise_destination(digits) == (bare if ok else None)


def test_strict_check_uses_libphonenumber() -> None:
    pytest.importorskip("phonenumbers")
    import datetime as dt

    from ftpbatch.rules import BatchRules, ProductRules

    now = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
    chunk = pd.DataFrame(
        {
            "row": [1, 2, 3],
            "to": ["+44 7911 123456", "+999 123 456 789", "+999 123 456 789"],
            "text": ["a", "b", "c"],
        }
    )
    loose = BatchRules(ProductRules(), now).apply(chunk)
    assert loose["error_code"].isna().all()
    strict = BatchRules(ProductRules(strict_numbers=True), now).apply(chunk)
    assert strict["error_code"].tolist()[1:] == ["105", "105"]
    assert pd.isna(strict["error_code"].iloc[0])
    assert "not a number in use" in strict["error_text"].iloc[1]


def _valid(digits: str) -> bool:
    import phonenumbers

    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse("+" + digits)))
    except phonenumbers.NumberParseException:
        return False


# --- national numbers whose leading 0 a spreadsheet dropped (issue 15, point 4) ----------------
@pytest.mark.parametrize(
    ("raw", "prefix", "expected"),
    [
        # Excel's number 7700900023 (typed as 07700 900023): not +7 700 900 023 but the UK number
        ("7700900023", "44", "447700900023"),
        ("7911 123456", "44", "447911123456"),
        ("2079460000", "44", "442079460000"),
        # a real international number is sent as written, whatever the dial prefix
        ("4915112345678", "44", "4915112345678"),
        ("33612345678", "44", "33612345678"),
        ("447700900023", "44", "447700900023"),
        # ... also when it has the length of a UK national number (10 digits): Danish mobile, Brussels
        ("4520123456", "44", "4520123456"),
        ("3222345678", "44", "3222345678"),
        # written as international (+ or 00): never reinterpreted
        ("+7700900023", "44", "7700900023"),
        ("007700900023", "44", "7700900023"),
        # without a dial prefix there is no country to read it in
        ("7700900023", None, "7700900023"),
        # a length the country's numbers do not have: left alone (8 digits for the UK)
        ("77009000", "44", "77009000"),
        # shorter than an international number can be, but a whole Icelandic one
        ("5512345", "354", "3545512345"),
    ],
)
def test_a_number_without_its_leading_0_is_read_as_national(raw: str, prefix: str | None, expected: str) -> None:
    assert normalise_destination(raw, prefix) == expected


def test_rules_say_in_a_note_which_numbers_were_read_as_national() -> None:
    import datetime as dt

    from ftpbatch.rules import BatchRules, ProductRules

    chunk = pd.DataFrame(
        {"row": [1, 2, 3], "to": ["7700900023", "4915112345678", "07700900024"], "text": ["a", "b", "c"]}
    )
    out = BatchRules(ProductRules(dial_prefix="44"), dt.datetime.now(dt.timezone.utc)).apply(chunk)
    assert out["destination"].tolist() == ["447700900023", "4915112345678", "447700900024"]
    assert out["error_code"].isna().all()
    assert out["note"].iloc[0] == (
        "read as a national number of +44: '7700900023' is not a valid international number, "
        "and spreadsheets drop a national number's leading 0"
    )
    assert out["note"].iloc[1:].isna().all()


def test_libphonenumber_sees_only_the_candidate_rows_once_each(monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    from ftpbatch.rules import BatchRules, ProductRules
    from ftpbatch.rules.national import NationalReading

    asked: list[int] = []
    check = NationalReading._check
    monkeypatch.setattr(NationalReading, "_check", lambda self, value: asked.append(value) or check(self, value))
    n = 20_000
    usual = [f"447700{i:06d}" for i in range(n // 2)] + [f"07700{i:06d}" for i in range(n // 2)]
    rules = BatchRules(ProductRules(dial_prefix="44"), dt.datetime.now(dt.timezone.utc))
    rules.apply(pd.DataFrame({"row": range(1, n + 1), "to": usual, "text": "hi"}))
    assert asked == []  # prefixed, trunk-0 and international rows never reach libphonenumber
    odd = usual[:100] + ["7700900023"] * 50 + ["+4915112345678", "4915112345678"]
    rules.apply(pd.DataFrame({"row": range(1, len(odd) + 1), "to": odd, "text": "hi"}))
    assert asked == [7700900023]  # 13 digits is no UK length: the German number is no candidate
