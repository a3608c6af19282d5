"""What a product's settings may be: every value is checked before it is stored.

A bad setting is refused with a code and one sentence saying what to fix, and
nothing is changed. The checks live here, beside the records of models.py
(and import no pandas or pyarrow), so that every way of storing a product
(the command line, ``Ledger.add_product``/``update_product``, a program
embedding the gateway) is held to the same rules, and a setting that would
only fail later (a negative quota locking the product out, a sender every
message is refused for, a callback URL nobody can reach) never gets in.
"""

from __future__ import annotations

import math
import re
from urllib.parse import urlsplit

from . import codes
from .errors import InvalidSetting
from .models import Product

# DESIGN §5, sender IDs (after trimming): alphanumeric 1-11 ASCII letters,
# digits or spaces with at least one letter, or numeric: up to 16 digits with
# an optional leading '+'. The rules stage checks each row's ``from`` with the
# same function.
_ALPHANUMERIC_SENDER = re.compile(r"(?=[A-Za-z0-9 ]*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_NUMERIC_SENDER = re.compile(r"\+?[0-9]{1,16}")
_DIAL_PREFIX = re.compile(r"[1-9][0-9]{0,3}")
MAX_PARTS_LIMIT = 255

SENDER_RULE = "use 1 to 11 letters, digits or spaces (at least one letter), or a number of up to 16 digits with an optional leading '+'"


def is_valid_sender(sender: str) -> bool:
    """True for an alphanumeric or numeric sender ID (already trimmed)."""
    return bool(_ALPHANUMERIC_SENDER.fullmatch(sender) or _NUMERIC_SENDER.fullmatch(sender))


def _refuse(product: Product, sentence: str, code: str = codes.E_PARAMETERS) -> InvalidSetting:
    return InvalidSetting(f"product {product.name!r} not changed: {sentence}", code=code)


def _at_least_zero(product: Product, value: float | None, what: str, fix: str) -> None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise _refuse(product, f"{what} {value:g} cannot be negative: {fix}")


def check_product(product: Product) -> Product:
    """Return ``product`` if every setting is allowed; else raise :class:`InvalidSetting`."""
    if product.tps is not None and (not math.isfinite(product.tps) or product.tps < 1):
        raise _refuse(product, f"tps {product.tps:g} is too low: give at least 1 message per second, or 0 for no product limit")
    _at_least_zero(product, product.duplicate_window_hours, "duplicate window", "give hours (0 = never refuse a repeated file)")
    _at_least_zero(product, product.quota_bytes, "quota", "give MB (0 = no quota)")
    _at_least_zero(product, product.max_file_bytes, "largest file size", "give MB (0 = no limit)")
    _at_least_zero(product, product.retention_days, "retention", "give days (0 = keep forever)")
    if not 1 <= product.max_parts <= MAX_PARTS_LIMIT:
        raise _refuse(product, f"max parts {product.max_parts} must be between 1 and {MAX_PARTS_LIMIT}")
    if product.callback_level not in (0, 1, 2, 3):
        raise _refuse(product, f"callback level {product.callback_level} must be 0 (none), 1 (intermediate), 2 (final) or 3 (all)")
    if product.sender is not None and not is_valid_sender(product.sender.strip()):
        raise _refuse(product, f"sender {product.sender!r} is not valid: {SENDER_RULE}", code=codes.E_SENDER)
    if product.dial_prefix is not None and not _DIAL_PREFIX.fullmatch(product.dial_prefix):
        raise _refuse(product, f"dial prefix {product.dial_prefix!r} must be a country code of 1-4 digits, e.g. 44")
    if product.callback_url is not None:
        _check_url(product, product.callback_url)
    return product


def _check_url(product: Product, url: str) -> None:
    try:
        parts = urlsplit(url)
        scheme, host, _ = parts.scheme.lower(), parts.hostname, parts.port  # .port raises on "host:notaport"
    except ValueError:
        scheme, host = "", None
    if scheme not in ("http", "https") or not host or any(c.isspace() for c in url):
        raise _refuse(product, f"callback URL {url!r} is not an http:// or https:// URL with a host, e.g. https://example.com/sms/status")
