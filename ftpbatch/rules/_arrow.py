"""Moving string columns between pandas and Arrow, and small Arrow helpers.

The rules run on ``pyarrow.compute`` kernels (RE2 regexes, UTF-8 aware
lengths) because they work on the column's buffers without creating a Python
object per row; pandas' ``str`` dtype is already Arrow-backed, so for the
usual input the conversion is free. Object columns (a parser that built
Python lists) take a slower but still column-wide path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

STRING = pa.large_string()


def _scrub(value: Any) -> tuple[Any, bool]:
    """One object-column cell as text Arrow can store, and whether it was broken.

    A str may hold surrogate code points (e.g. from a UTF-16 decode with
    ``surrogatepass``): a matched pair is joined into its character, a lone
    one (a UTF-16 file cut mid-pair) becomes U+FFFD so the row stays visible
    in reports while the caller rejects it.
    """
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None, False
    if not isinstance(value, str):
        return str(value), False
    try:
        value.encode("utf-8")
        return value, False
    except UnicodeEncodeError:
        fixed = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return fixed, fixed.count("\ufffd") > value.count("\ufffd")


def to_arrow(values: pd.Series | None, length: int) -> tuple[pa.ChunkedArray, np.ndarray | None]:
    """A string column as an Arrow large_string array.

    Returns the array and, only when some cell was not valid Unicode (a lone
    surrogate), a boolean mask of those rows; otherwise ``None``. A missing
    column (``values is None``) becomes all nulls.
    """
    if values is None:
        return pa.chunked_array([pa.nulls(length, STRING)]), None
    try:
        arr = pa.array(values, from_pandas=True)
    except (UnicodeEncodeError, pa.ArrowInvalid, pa.ArrowTypeError):
        # Rare: non-string objects or broken Unicode. Per-cell repair is fine
        # here; the normal (str dtype) path never gets this far.
        cells = [_scrub(v) for v in values.to_numpy(dtype=object)]
        bad = np.fromiter((broken for _, broken in cells), dtype=bool, count=len(cells))
        arr = pa.array([text for text, _ in cells], type=STRING)
        return as_chunked(arr), (bad if bad.any() else None)
    if pa.types.is_null(arr.type):
        arr = arr.cast(STRING)
    elif not (pa.types.is_large_string(arr.type) or pa.types.is_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    return as_chunked(arr.cast(STRING)), None


def as_chunked(arr: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    return arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])


def byte_view(arr: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of a string column and its row offsets, without copying.

    Returns ``(data, offsets)``: row ``i`` is ``data[offsets[i]:offsets[i + 1]]``
    (nulls are empty). Lets numpy scan all the text of a chunk at once.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if not pa.types.is_large_string(arr.type):
        arr = arr.cast(STRING)
    if arr.null_count:  # a null slot's bytes are undefined; make them empty
        arr = pc.fill_null(arr, "")
    n = len(arr)
    if n == 0:
        return np.empty(0, dtype=np.uint8), np.zeros(1, dtype=np.int64)
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    start, end = int(offsets[0]), int(offsets[-1])
    if data_buf is None or end == start:
        data = np.empty(0, dtype=np.uint8)
    else:
        data = np.frombuffer(data_buf, dtype=np.uint8, count=end - start, offset=start)
    return data, offsets - start


def to_bool(arr: pa.Array | pa.ChunkedArray, null: bool = False) -> np.ndarray:
    """An Arrow boolean array as a numpy bool array, nulls replaced by ``null``."""
    if arr.null_count:  # fill_null costs more than the conversion itself
        arr = pc.fill_null(arr, null)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)


def to_int(arr: pa.Array | pa.ChunkedArray, null: int = 0) -> np.ndarray:
    """An Arrow integer array as numpy int64, nulls replaced by ``null``."""
    if arr.null_count:
        arr = pc.fill_null(arr, null)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)


def take_mask(arr: pa.ChunkedArray, mask: np.ndarray) -> pa.ChunkedArray:
    """The rows of ``arr`` where ``mask`` is true, in order."""
    if mask.all():  # no copy of a column that may hold hundreds of MB of text
        return arr
    return arr.filter(pa.array(mask, type=pa.bool_()))


def sentence(*pieces: str | pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """Concatenate literal strings and string arrays element-wise.

    Used to build one error sentence per rejected row without a Python loop:
    ``sentence("sender '", values, "' is not valid")``.
    """
    if all(isinstance(p, str) for p in pieces):
        raise ValueError("sentence() needs at least one array")
    # Literal pieces broadcast as scalars; every piece must share one type.
    args = [
        pa.scalar(p, STRING) if isinstance(p, str) else as_chunked(pc.cast(p, STRING)) for p in pieces
    ]
    return as_chunked(pc.binary_join_element_wise(*args, pa.scalar("", STRING)))


def quote(values: pa.ChunkedArray, limit: int = 40) -> pa.ChunkedArray:
    """Values shortened for an error sentence (a whole text pasted into ``to``
    would otherwise make an unreadable report)."""
    values = pc.fill_null(values, "")
    short = pc.utf8_slice_codeunits(values, 0, limit)
    longer = pc.greater(pc.utf8_length(values), limit)
    dots = pc.binary_join_element_wise(short, pa.scalar("...", STRING), pa.scalar("", STRING))
    return as_chunked(pc.if_else(longer, dots, short))


def to_pandas_str(arr: pa.ChunkedArray, index: pd.Index) -> pd.Series:
    """An Arrow string array as a pandas ``str`` Series (missing = NaN)."""
    out = arr.to_pandas()
    if out.dtype != "str":
        out = out.astype("str")
    out.index = index
    return out


def from_choices(choices: list[str], picks: np.ndarray, index: pd.Index) -> pd.Series:
    """A ``str`` Series whose row ``i`` is ``choices[picks[i]]``.

    Building a column of a few distinct strings through Arrow's ``take`` is
    about fifty times faster than ``pd.Series(numpy_str_array, dtype="str")``.
    """
    taken = pa.array(choices, type=STRING).take(pa.array(picks, type=pa.int8()))
    return to_pandas_str(as_chunked(taken), index)
