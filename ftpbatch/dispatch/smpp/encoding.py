"""Text to submit_sm bodies: GSM 03.38 (packed or not), UCS-2, UDH or SAR concatenation.

The split into parts is not decided here: it is the rules stage's
``split_parts(text, encoding)`` (one part up to 160 septets / 70 UTF-16
units, else GSM parts ≤ 153 septets with escape pairs kept whole, UCS-2
parts ≤ 67 units with surrogate pairs kept whole), passed in, so what the
report counts is what goes on the wire. The GSM table is the rules stage's
too (``ftpbatch/rules/gsm.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ... import codes
from ...errors import EncodingError
from ...rules.gsm import GSM_BASIC, GSM_ESCAPE, GSM_EXTENSION

#: data_coding values (SMPP 3.4 §5.2.19)
DCS_GSM = 0x00  # SMSC default alphabet, GSM 03.38 here
DCS_UCS2 = 0x08
#: esm_class UDHI bit
ESM_UDHI = 0x40

Splitter = Callable[[str, str], list[str]]

# One GSM 03.38 table for the whole program: the rules stage counts with it,
# the connector writes septets with it.
_SEPTETS: dict[str, tuple[int, ...]] = {ch: (i,) for i, ch in enumerate(GSM_BASIC) if ch != GSM_ESCAPE}
_SEPTETS.update({ch: (0x1B, code) for ch, code in GSM_EXTENSION.items()})


class _SeptetTable(dict[int, str]):
    """code point -> its septets as a str of chr(septet); a character outside the table is refused.

    ``str.translate`` walks the text in C: thousands of messages a second
    made the per-character Python loop this replaces the connector's
    biggest single cost. (A LookupError would make translate keep the
    character; EncodingError is a ValueError, so it propagates.)
    """

    def __missing__(self, code: int) -> str:
        raise EncodingError(f"character {chr(code)!r} (U+{code:04X}) is not in the GSM 03.38 alphabet")


_TRANSLATE = _SeptetTable({ord(ch): "".join(map(chr, septets)) for ch, septets in _SEPTETS.items()})




def gsm_unpacked(text: str) -> bytes:
    """GSM 03.38 septets of ``text``, one per octet (extension characters take two)."""
    return text.translate(_TRANSLATE).encode("latin-1")


def gsm_septets(text: str) -> list[int]:
    """GSM 03.38 septets of ``text`` as numbers."""
    return list(gsm_unpacked(text))


def pack_septets(septets: list[int], fill_bits: int = 0) -> bytes:
    """Pack septets 7 bits each, least significant first (GSM 03.38 §6.1.2.1).

    ``fill_bits`` zero bits come first so that, after a UDH, the text starts on
    a septet boundary. When the last octet would have 7 spare bits a CR is
    added, as 03.38 says, so the receiver does not read an extra '@'.
    """
    if (len(septets) * 7 + fill_bits) % 8 == 1:
        septets = [*septets, 0x0D]
    out = bytearray()
    acc, nbits = 0, fill_bits
    for s in septets:
        acc |= (s & 0x7F) << nbits
        nbits += 7
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> list[int]:
    """Inverse of :func:`pack_septets` (for tests and the receipt of packed MO)."""
    value = int.from_bytes(data, "little") >> fill_bits
    return [(value >> (7 * i)) & 0x7F for i in range(count)]


def ucs2(text: str) -> bytes:
    """UTF-16-BE: characters beyond the BMP become surrogate pairs, as handsets expect."""
    return text.encode("utf-16-be", "surrogatepass")


@dataclass(frozen=True, slots=True)
class Part:
    """One submit_sm body."""

    short_message: bytes
    data_coding: int
    esm_class: int
    #: SAR TLVs (tag, value) when concatenating with sar=1
    tlvs: tuple[tuple[int, bytes], ...] = ()


TLV_SAR_MSG_REF_NUM = 0x020C
TLV_SAR_TOTAL_SEGMENTS = 0x020E
TLV_SAR_SEGMENT_SEQNUM = 0x020F


def build_parts(text: str, encoding: str, *, split: Splitter, reference: int, packed: bool = False,
                sar: bool = False) -> list[Part]:
    """The submit_sm bodies for one message.

    ``reference`` is the concatenation reference shared by every part of this
    message (8-bit in a UDH, 16-bit in SAR TLVs).
    """
    if encoding not in ("gsm7", "ucs2"):
        raise EncodingError(f"unknown encoding {encoding!r}: expected gsm7 or ucs2", codes.E_PARAMETERS)
    if len(text) <= (80 if encoding == "gsm7" else 35):
        texts = [text]  # fits one part even if every character takes 2 units: skip the walk
    else:
        try:
            texts = split(text, encoding) or [""]
        except EncodingError:  # a character the encoding cannot carry
            raise
        except ValueError as exc:
            raise EncodingError(str(exc)) from exc
    total = len(texts)
    if total > 255:
        raise EncodingError(f"{total} parts: concatenation allows at most 255", codes.E_TOO_MANY_PARTS)
    dcs = DCS_GSM if encoding == "gsm7" else DCS_UCS2
    parts = []
    for seq, chunk in enumerate(texts, start=1):
        tlvs: tuple[tuple[int, bytes], ...]
        if total == 1:
            udh, tlvs, esm = b"", (), 0
        elif sar:
            ref = reference & 0xFFFF
            udh, esm = b"", 0
            tlvs = ((TLV_SAR_MSG_REF_NUM, ref.to_bytes(2, "big")), (TLV_SAR_TOTAL_SEGMENTS, bytes([total])),
                    (TLV_SAR_SEGMENT_SEQNUM, bytes([seq])))
        else:
            # UDHL=5, IEI 0x00 (8-bit reference concatenation), IEDL=3, ref, total, seq
            udh, tlvs, esm = bytes([5, 0x00, 3, reference & 0xFF, total, seq]), (), ESM_UDHI
        if encoding == "ucs2":
            body = ucs2(chunk)
        elif packed:
            # The UDH is counted in septets too: pad so the text starts on a septet boundary.
            fill = (7 - (len(udh) * 8) % 7) % 7
            body = pack_septets(gsm_septets(chunk), fill)
        else:
            body = gsm_unpacked(chunk)
        parts.append(Part(udh + body, dcs, esm, tlvs))
    return parts


_FROM_SEPTET = {s[0]: ch for ch, s in _SEPTETS.items() if len(s) == 1}
_FROM_EXTENSION = {s[1]: ch for ch, s in _SEPTETS.items() if len(s) == 2}


def gsm_decode(data: bytes) -> str:
    """Text of GSM 03.38 septets, one per octet (an MO message); an unknown septet becomes '?'."""
    out: list[str] = []
    escape = False
    for septet in data:
        if escape:
            out.append(_FROM_EXTENSION.get(septet, " "))
            escape = False
        elif septet == 0x1B:
            escape = True
        else:
            out.append(_FROM_SEPTET.get(septet & 0x7F, "?"))
    return "".join(out)
