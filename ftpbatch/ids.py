"""Sortable batch ids (ULID layout: 48-bit milliseconds + 80 random bits)."""

from __future__ import annotations

import secrets
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_batch_id(now: float | None = None) -> str:
    """A 26-character id that sorts by creation time, like a ULID."""
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))
