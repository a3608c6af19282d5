"""Report file formatting, in process."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ftpbatch.report.files import _iso_column, iso


def test_report_times_are_formatted_like_the_summary_times():
    rng = np.random.default_rng(7)
    # microsecond clock readings over two days, some on whole seconds, some missing
    values = np.round(1.79e9 + rng.random(5000) * 172_800, 6)
    values[::10] = np.floor(values[::10])
    values[::13] = np.nan
    column = _iso_column(pd.Series(values))
    expected = ["" if np.isnan(v) else iso(float(v)) for v in values]
    assert column.tolist() == expected
    assert column.iloc[1].endswith("Z") and len(column.iloc[1]) == len("2026-11-25T15:04:05.123Z")


def test_an_empty_or_all_missing_column_formats():
    assert _iso_column(pd.Series([], dtype=float)).tolist() == []
    assert _iso_column(pd.Series([np.nan, None], dtype=float)).tolist() == ["", ""]
