"""BatchRules.apply: every row-level error, their order, and the output frame."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ftpbatch.rules import OUTPUT_COLUMNS, BatchRules, ProductRules

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
COLUMNS = [
    "row", "to", "text", "from", "climsgid", "scheduled_time", "deliv_time", "validity", "error_code", "error_text"
]


def chunk(*rows: dict[str, Any], start: int = 1) -> pd.DataFrame:
    """A parser-shaped chunk; unspecified cells are missing."""
    data: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for i, values in enumerate(rows):
        data["row"].append(values.get("row", start + i))
        for c in COLUMNS[1:]:
            data[c].append(values.get(c))
    frame = pd.DataFrame({c: pd.Series(v, dtype="str") for c, v in data.items() if c != "row"})
    frame.insert(0, "row", pd.Series(data["row"], dtype="int64"))
    return frame


def ok(**values: Any) -> dict[str, Any]:
    return {"to": "447700900123", "text": "hello", **values}


def apply(*rows: dict[str, Any], rules: ProductRules | None = None) -> pd.DataFrame:
    return BatchRules(rules or ProductRules(), NOW).apply(chunk(*rows))


def codes(out: pd.DataFrame) -> list[str | None]:
    return [None if pd.isna(c) else c for c in out["error_code"]]


# --- the output frame ---------------------------------------------------------
def test_output_columns_types_and_a_good_row() -> None:
    out = apply(ok(**{"from": "MyShop", "climsgid": "ref-1", "validity": "60"}))
    assert tuple(out.columns) == OUTPUT_COLUMNS
    row = out.iloc[0]
    assert row["row"] == 1 and row["destination"] == "447700900123" and row["text"] == "hello"
    assert row["sender"] == "MyShop" and row["climsgid"] == "ref-1"
    assert row["encoding"] == "gsm7" and row["parts"] == 1 and row["status"] == "002"
    assert pd.isna(row["error_code"]) and pd.isna(row["error_text"]) and pd.isna(row["not_before"])
    assert row["validity_minutes"] == 60
    assert str(out["row"].dtype) == "int64" and str(out["parts"].dtype) == "int64"
    assert str(out["validity_minutes"].dtype) == "Int64"
    assert str(out["not_before"].dtype).startswith("datetime64") and str(out["not_before"].dt.tz) == "UTC"
    for name in ("destination", "text", "sender", "climsgid", "encoding", "status", "error_code", "error_text"):
        assert out[name].dtype == "str", name


def test_index_is_kept_and_rejected_destination_shows_raw_value() -> None:
    frame = chunk(ok(), ok(to="12ab")).set_axis([100, 101])
    out = BatchRules(ProductRules(), NOW).apply(frame)
    assert list(out.index) == [100, 101]
    assert out["destination"].tolist() == ["447700900123", "12ab"]
    assert out["status"].tolist() == ["002", "005"]
    assert out["error_text"].iloc[1] == (
        "destination '12ab' is not a valid number: it must have 8 to 15 digits after the country code"
    )


def test_dial_prefix_applies() -> None:
    out = apply(ok(to="07700 900123"), rules=ProductRules(dial_prefix="44"))
    assert out["destination"].iloc[0] == "447700900123" and codes(out) == [None]


def test_national_number_without_dial_prefix_says_what_to_do() -> None:
    out = apply(ok(to="07700 900123"))
    assert codes(out) == ["105"]
    assert "country code" in out["error_text"].iloc[0] and "dial prefix" in out["error_text"].iloc[0]


def test_empty_destination() -> None:
    out = apply(ok(to=None), ok(to="  "))
    assert codes(out) == ["105", "105"]
    assert out["error_text"].str.startswith("destination is empty").all()


def test_missing_optional_columns() -> None:
    frame = pd.DataFrame({"row": [1], "to": ["447700900123"], "text": ["hi"]})
    out = BatchRules(ProductRules(sender="Shop"), NOW).apply(frame)
    assert out["sender"].iloc[0] == "Shop" and out["status"].iloc[0] == "002"
    assert pd.isna(out["climsgid"].iloc[0])


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError):
        BatchRules(ProductRules(), dt.datetime(2025, 6, 1))


# --- 107 empty text -----------------------------------------------------------
def test_empty_text() -> None:
    out = apply(ok(text=""), ok(text="   \n\t"), ok(text=None), ok(text="\u3000"), ok(text=" . "))
    assert codes(out) == ["107", "107", "107", "107", None]
    assert (out["status"].iloc[:4] == "005").all()


# --- 116 unsendable text --------------------------------------------------------
@pytest.mark.parametrize("bad", ["a\x00b", "bell\x07", "\x1b", "del\x7f", "c1\x85", "x\x0b"])
def test_control_characters_are_refused(bad: str) -> None:
    out = apply(ok(text=bad))
    assert codes(out) == ["116"]
    assert "control character" in out["error_text"].iloc[0]


@pytest.mark.parametrize("fine", ["line\nbreak", "cr\r\n", "tab\there", "page\fbreak"])
def test_line_breaks_tabs_and_form_feed_are_fine(fine: str) -> None:
    assert codes(apply(ok(text=fine))) == [None]


def test_lone_surrogate_in_object_column() -> None:
    frame = chunk(ok(), ok(to="447700900124"))
    frame["text"] = pd.Series(["fine", "broken \ud83d half"], dtype=object)
    out = BatchRules(ProductRules(), NOW).apply(frame)
    assert codes(out) == [None, "116"]
    assert out["text"].iloc[1] == "broken \ufffd half"  # shown, not crashed on


# --- 113 parts ------------------------------------------------------------------
def test_too_many_parts() -> None:
    rules = ProductRules(max_parts=2)
    out = apply(
        ok(text="a" * 306), ok(to="447700900124", text="a" * 307), ok(to="447700900125", text="ж" * 135), rules=rules
    )
    assert codes(out) == [None, "113", "113"]
    assert out["parts"].tolist() == [2, 3, 3]
    assert out["encoding"].tolist() == ["gsm7", "gsm7", "ucs2"]
    assert out["error_text"].iloc[1].startswith("text needs 3 SMS parts but at most 2 are allowed")
    assert "GSM alphabet" not in out["error_text"].iloc[1]
    assert "GSM alphabet" in out["error_text"].iloc[2]


def test_default_max_parts_is_six() -> None:
    out = apply(ok(text="a" * 153 * 6), ok(to="447700900124", text="a" * (153 * 6 + 1)))
    assert codes(out) == [None, "113"]


# --- 123 sender -----------------------------------------------------------------
@pytest.mark.parametrize(
    "good", ["MyShop", "My Shop 24", "A", "abcdefghijk", "12345", "+447700900123", "1234567890123456"]
)
def test_valid_senders(good: str) -> None:
    out = apply(ok(**{"from": good}))
    assert codes(out) == [None] and out["sender"].iloc[0] == good


@pytest.mark.parametrize(
    "bad", ["abcdefghijkl", "My-Shop", "Café", "+MyShop", "12345678901234567", "+", "Shop!", "123 456", "+44 7700"]
)
def test_invalid_senders(bad: str) -> None:
    out = apply(ok(**{"from": bad}))
    assert codes(out) == ["123"]
    assert out["error_text"].iloc[0].startswith(f"sender '{bad}' is not valid")


def test_sender_defaulting() -> None:
    rows = [ok(**{"from": "RowSender"}), ok(to="447700900124"), ok(to="447700900125", **{"from": "   "})]
    with_default = apply(*rows, rules=ProductRules(sender="Product"))
    assert with_default["sender"].tolist() == ["RowSender", "Product", "Product"]
    without = apply(*rows)
    assert without["sender"].iloc[0] == "RowSender"
    assert without["sender"].iloc[1:].isna().all()
    assert codes(without) == [None, None, None]


def test_invalid_product_sender_rejects_rows_that_use_it() -> None:
    out = apply(ok(), ok(to="447700900124", **{"from": "Row"}), rules=ProductRules(sender="Way Too Long Name"))
    assert codes(out) == ["123", None]


def test_sender_is_trimmed() -> None:
    out = apply(ok(**{"from": "  MyShop "}))
    assert out["sender"].iloc[0] == "MyShop" and codes(out) == [None]


# --- 120 time, 101 validity --------------------------------------------------------
def test_scheduled_in_the_future_is_011_with_not_before() -> None:
    out = apply(
        ok(scheduled_time="2025-06-01T15:00:00+01:00"),
        ok(to="447700900124", scheduled_time="2025-06-02T08:00:00Z"),
        ok(to="447700900125", scheduled_time=str(int(NOW.timestamp()) + 3600)),
        ok(to="447700900126", deliv_time="30"),
    )
    assert codes(out) == [None] * 4
    assert out["status"].tolist() == ["011"] * 4
    expected = [NOW + dt.timedelta(hours=2), dt.datetime(2025, 6, 2, 8, tzinfo=dt.timezone.utc),
                NOW + dt.timedelta(hours=1), NOW + dt.timedelta(minutes=30)]
    assert [t.to_pydatetime() for t in out["not_before"]] == expected


def test_recent_past_and_now_are_sent_at_once() -> None:
    out = apply(
        ok(scheduled_time="2025-06-01T11:56:00Z"),  # 4 minutes ago
        ok(to="447700900124", scheduled_time="2025-06-01T12:00:00+00:00"),
        ok(to="447700900125", deliv_time="0"),
        ok(to="447700900126", scheduled_time="  "),  # blank = not given
    )
    assert codes(out) == [None] * 4
    assert out["status"].tolist() == ["002"] * 4
    assert out["not_before"].isna().all()


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"scheduled_time": "2025-06-01T11:54:59Z"}, "more than 5 minutes in the past"),
        ({"scheduled_time": "2025-06-08T12:00:01Z"}, "more than 7 days ahead"),
        ({"scheduled_time": "2025-06-01T13:00:00"}, "has no time zone"),
        ({"scheduled_time": "2025-06-01"}, "has no time zone"),
        ({"scheduled_time": "tomorrow"}, "is not a time"),
        ({"scheduled_time": "2025-13-45T25:00:00Z"}, "is not a time"),
        ({"scheduled_time": "1000"}, "more than 5 minutes in the past"),  # Unix seconds in 1970
        ({"deliv_time": "soon"}, "is not a delay"),
        ({"deliv_time": "-5"}, "is not a delay"),
        ({"deliv_time": "10081"}, "more than 7 days"),
        ({"deliv_time": "30", "scheduled_time": "2025-06-01T13:00:00Z"}, "not both"),
    ],
)
def test_bad_times(values: dict[str, str], fragment: str) -> None:
    out = apply(ok(**values))
    assert codes(out) == ["120"]
    assert fragment in out["error_text"].iloc[0]
    assert pd.isna(out["not_before"].iloc[0]) and out["status"].iloc[0] == "005"


def test_seven_days_ahead_exactly_is_allowed() -> None:
    out = apply(ok(scheduled_time="2025-06-08T12:00:00Z"), ok(to="447700900124", deliv_time="10080"))
    assert codes(out) == [None, None] and out["status"].tolist() == ["011", "011"]


@pytest.mark.parametrize(("value", "minutes"), [("60", 60), (" 1440 ", 1440), ("1", 1), ("10080", 10080), (None, None)])
def test_validity(value: str | None, minutes: int | None) -> None:
    out = apply(ok(validity=value))
    assert codes(out) == [None]
    got = out["validity_minutes"].iloc[0]
    assert (pd.isna(got) and minutes is None) or got == minutes


@pytest.mark.parametrize("value", ["0", "abc", "-5", "1.5", "10081"])
def test_invalid_validity_is_101(value: str) -> None:
    out = apply(ok(validity=value))
    assert codes(out) == ["101"]
    assert out["error_text"].iloc[0].startswith(f"validity '{value}' is not valid")


# --- 132 duplicates ------------------------------------------------------------------
def test_duplicate_in_one_chunk() -> None:
    out = apply(ok(), ok(text="other"), ok(), ok(to="+44 7700 900123"))
    assert codes(out) == [None, None, "132", "132"]
    assert out["error_text"].iloc[2] == (
        "same destination and text as row 1: remove the repeated row, or allow duplicates on the product"
    )


def test_duplicate_across_chunks() -> None:
    rules = BatchRules(ProductRules(dial_prefix="44"), NOW)
    first = rules.apply(chunk(ok(), ok(to="447700900124"), start=1))
    second = rules.apply(chunk(ok(to="07700900123"), ok(to="447700900125"), ok(to="447700900124"), start=3))
    assert codes(first) == [None, None]
    assert codes(second) == ["132", None, "132"]
    assert "as row 1:" in second["error_text"].iloc[0] and "as row 2:" in second["error_text"].iloc[2]
    # A third chunk still remembers both earlier chunks.
    third = rules.apply(chunk(ok(to="447700900125"), start=6))
    assert codes(third) == ["132"] and "as row 4:" in third["error_text"].iloc[0]


def test_duplicates_allowed() -> None:
    rules = BatchRules(ProductRules(allow_duplicates=True), NOW)
    assert codes(rules.apply(chunk(ok(), ok()))) == [None, None]
    assert codes(rules.apply(chunk(ok(), start=3))) == [None]


def test_a_new_batch_forgets() -> None:
    assert codes(apply(ok())) == [None]
    assert codes(apply(ok())) == [None]


def test_rejected_row_does_not_make_a_later_one_a_duplicate() -> None:
    out = apply(ok(**{"from": "bad sender!"}), ok())
    assert codes(out) == ["123", None]


def test_same_text_other_destination_and_same_destination_other_text_are_fine() -> None:
    out = apply(ok(), ok(to="447700900124"), ok(text="hello!"), ok(text="Hello"))
    assert codes(out) == [None] * 4


# --- order of errors and the parser's codes -------------------------------------------
def test_parser_code_wins_and_keeps_its_text() -> None:
    out = apply(
        ok(to="bad", error_code="101", error_text="template field #name# has no column: add it"),
        ok(text="", error_code="100"),
    )
    assert codes(out) == ["101", "100"]
    assert out["error_text"].tolist() == ["template field #name# has no column: add it", "data malformed"]
    assert out["status"].tolist() == ["005", "005"]


@pytest.mark.parametrize(
    ("values", "code"),
    [
        ({"to": "12ab", "text": "", "from": "bad!"}, "105"),
        ({"text": " ", "from": "bad!", "scheduled_time": "x"}, "107"),
        ({"text": "a\x00" * 400, "from": "bad!"}, "116"),
        ({"from": "bad!", "scheduled_time": "x", "text": "a" * 2000}, "123"),
        ({"scheduled_time": "x", "validity": "x", "text": "a" * 2000}, "120"),
        ({"validity": "x", "text": "a" * 2000}, "101"),
        ({"text": "a" * 2000}, "113"),
    ],
)
def test_first_error_wins_in_order(values: dict[str, str], code: str) -> None:
    out = apply(ok(**values))
    assert codes(out) == [code]


def test_too_many_parts_is_not_also_a_duplicate() -> None:
    out = apply(ok(text="a" * 2000), ok(text="a" * 2000))
    assert codes(out) == ["113", "113"]


def test_object_dtype_input() -> None:
    frame = chunk(ok(), ok(to="12ab")).astype({c: object for c in COLUMNS[1:]})
    frame["to"] = np.array(["447700900123", "12ab"], dtype=object)
    out = BatchRules(ProductRules(), NOW).apply(frame)
    assert codes(out) == [None, "105"]


def test_surrogate_pair_in_object_column_is_joined() -> None:
    frame = chunk(ok())
    frame["text"] = pd.Series(["smile \ud83d\ude00"], dtype=object)
    out = BatchRules(ProductRules(), NOW).apply(frame)
    assert codes(out) == [None] and out["text"].iloc[0] == "smile 😀" and out["encoding"].iloc[0] == "ucs2"


def test_parser_text_without_code_is_dropped() -> None:
    out = apply(ok(error_text="stray sentence"))
    assert codes(out) == [None] and pd.isna(out["error_text"].iloc[0])


def test_empty_chunk() -> None:
    out = apply()
    assert tuple(out.columns) == OUTPUT_COLUMNS and len(out) == 0


def test_opted_out_destinations_get_122_after_105_and_before_the_text_checks():
    from ftpbatch.rules import optout_keys

    rules = BatchRules(ProductRules(dial_prefix="44"), NOW, opted_out=["447700900123", "not a number", "447700900999"])
    out = rules.apply(chunk(ok(), ok(to="07700 900123", text=""), ok(to="447700900124"), ok(to="12"), ok(to="07700900999")))
    assert codes(out) == ["122", "122", None, "105", "122"]
    assert out["status"].tolist() == ["005", "005", "002", "005", "005"]
    assert "opted out" in out["error_text"].iloc[0]
    # one binary search per chunk agrees with numpy's isin on any numbers
    rng = np.random.default_rng(7)
    keys = optout_keys(str(n) for n in rng.integers(10**10, 10**11, 5000).tolist())
    values = np.concatenate([keys[::7], rng.integers(10**10, 10**11, 5000).astype(np.uint64), np.array([0, 2**64 - 1], dtype=np.uint64)])
    from ftpbatch.rules.apply import in_sorted

    assert (in_sorted(values, keys) == np.isin(values, keys)).all()
    assert not in_sorted(values, optout_keys([])).any()
