"""Sender IDs: the row's ``from``, else the product's sender (error 123).

Valid senders, after trimming surrounding white space:

* alphanumeric: 1 to 11 ASCII letters, digits or spaces with at least one
  letter (the 11-character limit of the GSM TP-OA field; non-ASCII letters
  are refused because many networks replace or reject them);
* numeric: up to 16 digits, with an optional leading ``+``.

A blank ``from`` counts as missing, so the product's sender applies. Rows
rarely carry more than a handful of distinct senders, so each distinct value
is checked once in Python and the answer spread over the column.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..product_checks import SENDER_RULE, is_valid_sender
from ._arrow import STRING, as_chunked, quote, sentence, to_bool

__all__ = ["error_sentences", "is_valid_sender", "resolve"]


def resolve(values: pa.ChunkedArray, default: str | None) -> tuple[pa.ChunkedArray, np.ndarray]:
    """The sender of each row and the mask of rows whose sender is invalid.

    Rows with neither a ``from`` nor a product sender get null (the SMSC's
    default sender); that is not an error.
    """
    senders = pc.utf8_trim_whitespace(values)
    senders = pc.if_else(pc.equal(senders, ""), pa.scalar(None, STRING), senders)
    if default is not None and default.strip():
        senders = pc.fill_null(senders, pa.scalar(default.strip(), STRING))
    senders = as_chunked(senders)
    bad = [s for s in pc.unique(senders).to_pylist() if s is not None and not is_valid_sender(s)]
    if not bad:
        return senders, np.zeros(len(senders), dtype=bool)
    return senders, to_bool(pc.is_in(senders, value_set=pa.array(bad, type=STRING)))


def error_sentences(senders: pa.ChunkedArray) -> pa.ChunkedArray:
    """The sentence for each rejected sender (``senders`` holds only those)."""
    return sentence(
        "sender '",
        quote(senders),
        f"' is not valid: {SENDER_RULE}",
    )
