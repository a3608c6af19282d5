"""SMPP 3.4 PDUs: the codec the session layer speaks.

``submit_sm`` is encoded and ``deliver_sm`` decoded by smpp34's Rust codec
(``smpp34.SubmitSm(...).encode()``, ``smpp34.decode``), a tested codec the
project already depends on. The other PDUs the ESME needs are a 16-byte
header plus at most a few C-strings and octets (bind, the responses,
enquire_link, unbind, generic_nack, query_sm), written here with ``struct``.
Measured in this repository (50,000 PDUs, CPU time): smpp34 encodes a
submit_sm in 0.95 µs, a ``struct`` version of it takes the same 0.95 µs, and
decoding a receipt deliver_sm with its TLVs takes 1.3 µs: the codec is not
where a session spends its time, so the tested one is used. What a message
costs around it (a ``SubmitSm`` object and its field dictionary) is saved
by :class:`SubmitTemplate`: smpp34's PDU for a set of fields, made once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import smpp34

HEADER = struct.Struct("!LLLL")
HEADER_SIZE = 16
#: longest PDU accepted from the SMSC; anything longer means a lost framing
MAX_PDU = 64 * 1024

GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_TRANSMITTER = 0x00000002
QUERY_SM = 0x00000003
SUBMIT_SM = 0x00000004
DELIVER_SM = 0x00000005
UNBIND = 0x00000006
BIND_TRANSCEIVER = 0x00000009
ENQUIRE_LINK = 0x00000015
RESP = 0x80000000

BIND_IDS = {"trx": BIND_TRANSCEIVER, "tx": BIND_TRANSMITTER, "rx": BIND_RECEIVER}

ESME_ROK = 0x00
ESME_RINVCMDID = 0x03
ESME_RSYSERR = 0x08


@dataclass(frozen=True, slots=True)
class Header:
    length: int
    command_id: int
    status: int
    sequence: int


def header(data: bytes | bytearray | memoryview) -> Header:
    return Header(*HEADER.unpack_from(data))


def pack(command_id: int, sequence: int, body: bytes = b"", status: int = 0) -> bytes:
    return HEADER.pack(HEADER_SIZE + len(body), command_id, status, sequence) + body


def c_string(value: str, limit: int) -> bytes:
    """A C-Octet String of at most ``limit`` octets with its NUL (longer values are cut, never overflow)."""
    raw = value.encode("latin-1", "replace")[: limit - 1]
    return raw + b"\0"


def read_c_string(body: bytes, offset: int) -> tuple[str, int]:
    """The C-string at ``offset`` and the offset after its NUL (a missing NUL ends at the body's end)."""
    end = body.find(b"\0", offset)
    if end == -1:
        return body[offset:].decode("latin-1"), len(body)
    return body[offset:end].decode("latin-1"), end + 1


def bind(kind: str, sequence: int, system_id: str, password: str, system_type: str) -> bytes:
    """bind_transceiver / _transmitter / _receiver (SMPP 3.4 §4.1), interface version 3.4."""
    body = (c_string(system_id, 16) + c_string(password, 9) + c_string(system_type, 13)
            + bytes((0x34, 0, 0)) + b"\0")  # interface_version, addr_ton, addr_npi, address_range
    return pack(BIND_IDS[kind], sequence, body)


def submit_sm(sequence: int, source: str, destination: str, short_message: bytes, fields: dict[str, Any]) -> bytes:
    """One submit_sm, encoded by smpp34's codec (``fields``: smpp34.SubmitSm keyword arguments, not changed)."""
    return smpp34.SubmitSm(source, destination, short_message, sequence_number=sequence, **fields).encode()  # keyword fields are checked by smpp34 itself


class SubmitTemplate:
    """The submit_sm PDUs of one set of fields, with only destination_addr and short_message to fill in.

    smpp34 builds a ``SubmitSm`` object from keyword fields and encodes it
    for every message, with a field dictionary made for it. Turning a message
    into its PDU took 13-18 us, 7-10 us with templates (20,000 messages,
    measured apart; in a dispatch run, with the timing's own cost, 17-19 ->
    15 us). The fields
    of a batch's messages are mostly the same, so each set is encoded by
    smpp34 once, with an empty destination and text, and split around them;
    a message's PDU is then that template with its destination and text put
    in. Only a template that reproduces smpp34's own PDU for a probe is made
    (:meth:`of`); a message it cannot hold (a text over 254 octets, a NUL in
    the destination) goes to smpp34, which refuses or encodes it as before.
    """

    __slots__ = ("_before", "_fixed", "_middle")

    def __init__(self, before: bytes, middle: bytes) -> None:
        self._before = before  # service_type .. dest_addr_npi
        self._middle = middle  # destination_addr's NUL, esm_class .. sm_default_msg_id
        self._fixed = HEADER_SIZE + len(before) + len(middle) + 1  # + sm_length

    @classmethod
    def of(cls, source: str, fields: dict[str, Any]) -> SubmitTemplate | None:
        """The template of ``fields`` (``submit_sm``'s), or None if smpp34's PDU does not split as expected."""
        empty = submit_sm(0, source, "", b"", fields)
        probe = submit_sm(0, source, "1", b"", fields)
        # the destination is the first octet after the header that differs, and an empty
        # text leaves sm_length (0) last; anything else (TLVs) is not a template's
        at = next((i for i in range(HEADER_SIZE, len(empty)) if empty[i] != probe[i]), None)
        if at is None or empty[-1] != 0:
            return None
        template = cls(empty[HEADER_SIZE:at], empty[at:-1])
        for destination, text in (("1", b""), ("447700900123", b"a\x00\xff text"), ("", b"x" * 254)):
            if template.submit_sm(0, destination, text) != submit_sm(0, source, destination, text, fields):
                return None
        return template

    def submit_sm(self, sequence: int, destination: str, short_message: bytes) -> bytes | None:
        """The PDU for one message, byte for byte smpp34's; None when smpp34 must encode it (see the class)."""
        address = destination.encode()
        size = len(short_message)
        if size > 254 or b"\0" in address:
            return None
        return b"".join((HEADER.pack(self._fixed + len(address) + size, SUBMIT_SM, 0, sequence),
                         self._before, address, self._middle, size.to_bytes(1, "big"), short_message))


def query_sm(sequence: int, message_id: str, source_addr: str, source_ton: int, source_npi: int) -> bytes:
    """query_sm (§4.8): the SMSC's id of the message and the source address it was submitted with."""
    body = c_string(message_id, 65) + bytes((source_ton, source_npi)) + c_string(source_addr, 21)
    return pack(QUERY_SM, sequence, body)


def response(command_id: int, sequence: int, status: int = ESME_ROK, body: bytes = b"") -> bytes:
    """The response to a request: deliver_sm_resp (body: an empty message_id), enquire_link_resp, unbind_resp."""
    return pack(command_id | RESP, sequence, body, status)


def deliver_sm_resp(sequence: int, status: int = ESME_ROK) -> bytes:
    return response(DELIVER_SM, sequence, status, b"\0")


def generic_nack(sequence: int, status: int) -> bytes:
    return pack(GENERIC_NACK, sequence, b"", status)


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    """A query_sm_resp body (§4.8.2)."""

    message_id: str
    final_date: str
    message_state: int
    error_code: int


def parse_query_sm_resp(body: bytes) -> QueryAnswer:
    message_id, at = read_c_string(body, 0)
    final_date, at = read_c_string(body, at)
    state = body[at] if at < len(body) else 0
    error = body[at + 1] if at + 1 < len(body) else 0
    return QueryAnswer(message_id, final_date, state, error)


def decode_deliver_sm(data: bytes) -> smpp34.DeliverSm:
    """A whole deliver_sm PDU (header included), decoded by smpp34's codec."""
    pdu = smpp34.decode(data)
    if not isinstance(pdu, smpp34.DeliverSm):
        raise smpp34.SmppError(f"expected a deliver_sm, got command 0x{pdu.command_id:08X}")
    return pdu
