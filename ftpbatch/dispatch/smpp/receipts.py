"""Delivery receipts: recognise them, find their id and status, normalise ids.

A receipt is a ``deliver_sm`` whose esm_class message type is 0x04 (SMSC
delivery receipt), or one that carries ``receipted_message_id``. Its id is
that TLV when present, else the ``id:`` of the text (SMPP 3.4 Appendix B)::

    id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text:...

Its status is the ``message_state`` TLV when present, else the text's
``stat:``; both are mapped to the contract's codes by :data:`STAT_CODES`.

**Id rule** (``receipt_id`` option). The ledger matches receipts by exact
string, so ids are normalised on *both* sides, the submit_sm_resp id and the
receipt id, with one rule per connector:

* ``as-is`` (default): both unchanged.
* ``dec``: the SMSC answers submit_sm with hexadecimal ids but writes the
  receipt text id in decimal. Every id becomes lower-case hex without
  leading zeros: the submit id and a TLV id are read as hex, a text id as
  decimal.
* ``hex``: the opposite (decimal submit ids, hex text ids). Every id becomes
  a decimal number without leading zeros.

An id that does not parse under its rule is kept as it came and logged.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from ... import codes

log = logging.getLogger("ftpbatch.dispatch.smpp")

ESM_TYPE_MASK = 0x3C
ESM_DELIVERY_RECEIPT = 0x04
ESM_INTERMEDIATE = 0x20

TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MESSAGE_STATE = 0x0427
TLV_NETWORK_ERROR_CODE = 0x0423

#: receipt ``stat:`` word -> contract status. ``None``: not final, not reported.
STAT_CODES: dict[str, str | None] = {
    "DELIVRD": codes.DELIVERED,
    "UNDELIV": codes.UNDELIVERABLE,
    "REJECTD": codes.UNDELIVERABLE,
    "EXPIRED": codes.EXPIRED,
    "DELETED": codes.ERROR,
    "UNKNOWN": codes.ERROR,
    "ACCEPTD": codes.ERROR,
    "ENROUTE": None,  # an intermediate notification: the final receipt follows
}
#: message_state TLV values (SMPP 3.4 §5.2.28) as stat words
MESSAGE_STATES = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV", 6: "ACCEPTD", 7: "UNKNOWN",
                  8: "REJECTD"}

# the three fields of a receipt text (SMPP 3.4 Appendix B) it is read for, searched in the raw bytes
_ID = re.compile(rb"\bid:(\S*)", re.IGNORECASE)
_STAT = re.compile(rb"\bstat:(\S*)", re.IGNORECASE)
_ERR = re.compile(rb"\berr:(\S*)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ParsedReceipt:
    upstream_id: str
    stat: str  # the stat word, e.g. "DELIVRD"
    status: str | None  # contract code, None for intermediate states
    err: str | None
    source: str  # "tlv" or "text": where the id came from


def is_receipt(esm_class: int, tlv_tags: set[int]) -> bool:
    return (esm_class & ESM_TYPE_MASK) in (ESM_DELIVERY_RECEIPT, ESM_INTERMEDIATE) or TLV_RECEIPTED_MESSAGE_ID in tlv_tags


def _text_field(short_message: bytes, pattern: re.Pattern[bytes]) -> str | None:
    match = pattern.search(short_message)
    return match.group(1).decode("latin-1") if match and match.group(1) else None


def _c_string(value: bytes) -> str:
    return value.split(b"\x00", 1)[0].decode("latin-1").strip()


def parse_receipt(short_message: bytes, tlvs: dict[int, bytes], rule: str = "as-is") -> ParsedReceipt | None:
    """Id and status of a receipt, or ``None`` when it has no usable id or status.

    Runs for every message sent, so the text is searched only for the
    fields the TLVs did not give (most SMSCs send both).
    """
    raw_id = _c_string(tlvs[TLV_RECEIPTED_MESSAGE_ID]) if TLV_RECEIPTED_MESSAGE_ID in tlvs else ""
    source = "tlv"
    if not raw_id:
        raw_id, source = _text_field(short_message, _ID) or "", "text"
        if not raw_id:
            return None
    stat = MESSAGE_STATES.get(tlvs[TLV_MESSAGE_STATE][0]) if tlvs.get(TLV_MESSAGE_STATE) else None
    if stat is None:
        text_stat = _text_field(short_message, _STAT)
        if text_stat is None:
            return None
        stat = text_stat.upper()
    status = STAT_CODES.get(stat, codes.ERROR)
    err = None if status == codes.DELIVERED else _text_field(short_message, _ERR)
    return ParsedReceipt(normalise_receipt_id(raw_id, source, rule), stat, status, err, source)


def normalise_submit_id(message_id: str, rule: str) -> str:
    """The form of a submit_sm_resp id the ledger stores (see the module doc)."""
    message_id = message_id.strip()
    if rule == "dec":
        return _convert(message_id, 16, "x")
    if rule == "hex":
        return _convert(message_id, 10, "d")
    return message_id


def normalise_receipt_id(receipt_id: str, source: str, rule: str) -> str:
    """The form of a receipt id that matches :func:`normalise_submit_id`."""
    receipt_id = receipt_id.strip()
    if rule == "dec":  # submit ids hex; text ids decimal; TLV ids as the submit ids
        return _convert(receipt_id, 16 if source == "tlv" else 10, "x")
    if rule == "hex":  # submit ids decimal; text ids hex
        return _convert(receipt_id, 10 if source == "tlv" else 16, "d")
    return receipt_id


def _convert(value: str, base: int, fmt: str) -> str:
    try:
        return format(int(value, base), fmt)
    except ValueError:
        log.warning("SMPP id %r is not a base-%d number; kept as it came", value, base)
        return value
