"""A test SMSC: SMPP 3.4 server on loopback, one misbehaviour per mode.

Run as a process::

    python -m tests.smsc.server --port 0 --mode happy --record /tmp/smsc.jsonl

It prints ``PORT <n>`` on stdout once it listens, accepts binds (transceiver,
transmitter, receiver), answers ``submit_sm`` with ids, sends delivery
receipts after ``--receipt-delay`` seconds and appends one JSON line per
event to ``--record`` (``SmscProcess.events()`` in fixtures.py reads them).

Modes (each adds exactly one misbehaviour to ``happy``):

``reject_some``     ESME_RINVDSTADR for destinations ending in ``--reject-suffix``
``throttled``       ESME_RTHROTTLED for every ``--throttle-every``-th submit_sm
``drop_mid_window`` closes the TCP connection at the ``--drop-after``-th submit_sm
                    of a connection (unanswered), ``--drop-times`` times; rebinds work
``no_answer``       never answers submit_sm to destinations ending in ``--silent-suffix``
``receipt_first``   sends the receipt, then (``--resp-delay`` later) the submit_sm_resp
``nack_some``       generic_nack instead of submit_sm_resp for every ``--nack-every``-th
``server_unbind``   sends unbind after ``--unbind-after`` submits (once), then closes

``--bind-tps N`` (any mode) caps every bind at N submit_sm a second, as
SMSCs cap an account's binds: the answers of one connection are paced N a
second (the window fills and waits), each receipt following its answer.

Store and forward, in every mode: a deliver_sm (receipt or MO) not answered
with deliver_sm_resp when its connection ends is kept and delivered again
to the next receiver of that system_id (``"redelivered": true`` in the
record), as a real SMSC does. ``query_sm`` is answered with the message's
state (ENROUTE until its receipt is due, then its final state), unless
``--query-refusal nack|status`` (generic_nack, or query_sm_resp with
ESME_RINVCMDID). ``--drop-receipt-suffix S``: destinations ending in S never
get a receipt (query_sm still knows their state). ``--mo SOURCE:DEST:TEXT``
(repeatable): MO messages sent to the first receiver that binds (UCS-2 when
the text is not ASCII).

The PDU codec is ``smpp.pdu3`` (from smpp.twisted3), deliberately not the
client library, so a codec bug cannot hide on both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import signal
import struct
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import IO, Any

from smpp.pdu import constants
from smpp.pdu import operations as op
from smpp.pdu import pdu_types as pt
from smpp.pdu.pdu_encoding import DataCodingEncoder, EsmClassEncoder, PDUEncoder, RegisteredDeliveryEncoder

MODES = (
    "happy",
    "reject_some",
    "throttled",
    "drop_mid_window",
    "no_answer",
    "receipt_first",
    "nack_some",
    "server_unbind",
)

# SMPP 3.4 §5.2.28 message_state values, keyed by the receipt text's stat word.
MESSAGE_STATE = {"ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5, "ACCEPTD": 6, "UNKNOWN": 7, "REJECTD": 8}
_STATE_ENUM = {
    "ENROUTE": "ENROUTE", "DELIVRD": "DELIVERED", "EXPIRED": "EXPIRED", "DELETED": "DELETED",
    "UNDELIV": "UNDELIVERABLE", "ACCEPTD": "ACCEPTED", "UNKNOWN": "UNKNOWN", "REJECTD": "REJECTED",
}

_ENC = PDUEncoder()
_ESM = EsmClassEncoder()
_DCS = DataCodingEncoder()
_REG = RegisteredDeliveryEncoder()
_HEADER = struct.Struct("!LLLL")
_TON = constants.addr_ton_name_map
_NPI = constants.addr_npi_name_map
_GENERIC_NACK = 0x80000000


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = 0
    mode: str = "happy"
    record: str | None = None
    system_id: str | None = None  # None: any system_id / password binds
    password: str | None = None
    receipt_delay: float = 0.05
    receipts: bool = True
    receipt_tlv: bool = True  # receipted_message_id + message_state TLVs
    id_format: str = "hex"  # submit_sm_resp ids: hex | dec
    receipt_text_id: str = "same"  # id: in the receipt text: same | dec | hex
    stat: dict[str, str] = field(default_factory=dict)  # destination suffix -> stat word
    reject_suffix: tuple[str, ...] = ("13",)
    silent_suffix: tuple[str, ...] = ("99",)
    throttle_every: int = 5
    drop_after: int = 25
    drop_times: int = 1
    nack_every: int = 7
    unbind_after: int = 20
    resp_delay: float = 0.0
    drop_receipt_suffix: tuple[str, ...] = ()
    query_refusal: str = "none"  # none | nack | status
    mo: tuple[str, ...] = ()
    bind_tps: float = 0.0  # submit_sm answered per second per connection (0: no cap)


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m tests.smsc.server", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: pick a free port (printed)")
    p.add_argument("--mode", choices=MODES, default="happy")
    p.add_argument("--record", help="append one JSON line per event to this file")
    p.add_argument("--system-id")
    p.add_argument("--password")
    p.add_argument("--receipt-delay", type=float, default=0.05)
    p.add_argument("--no-receipts", action="store_true")
    p.add_argument("--no-receipt-tlv", action="store_true", help="receipt text only, no receipted_message_id")
    p.add_argument("--id-format", choices=("hex", "dec"), default="hex")
    p.add_argument("--receipt-text-id", choices=("same", "dec", "hex"), default="same")
    p.add_argument("--stat", action="append", default=[], metavar="SUFFIX=STAT",
                   help="receipt stat for destinations ending in SUFFIX (default DELIVRD)")
    p.add_argument("--reject-suffix", default="13")
    p.add_argument("--silent-suffix", default="99")
    p.add_argument("--throttle-every", type=int, default=5)
    p.add_argument("--drop-after", type=int, default=25)
    p.add_argument("--drop-times", type=int, default=1)
    p.add_argument("--nack-every", type=int, default=7)
    p.add_argument("--unbind-after", type=int, default=20)
    p.add_argument("--resp-delay", type=float, default=None)
    p.add_argument("--drop-receipt-suffix", default="", help="comma-separated: these destinations get no receipt")
    p.add_argument("--query-refusal", choices=("none", "nack", "status"), default="none")
    p.add_argument("--mo", action="append", default=[], metavar="SOURCE:DEST:TEXT")
    p.add_argument("--bind-tps", type=float, default=0.0, help="answer at most N submit_sm a second per bind (0: no cap)")
    a = p.parse_args(argv)
    stat = {}
    for item in a.stat:
        suffix, _, word = item.partition("=")
        if word.upper() not in MESSAGE_STATE:
            p.error(f"--stat {item}: unknown stat word")
        stat[suffix] = word.upper()
    resp_delay = a.resp_delay if a.resp_delay is not None else (0.05 if a.mode == "receipt_first" else 0.0)
    return Options(
        host=a.host, port=a.port, mode=a.mode, record=a.record, system_id=a.system_id, password=a.password,
        receipt_delay=a.receipt_delay, receipts=not a.no_receipts, receipt_tlv=not a.no_receipt_tlv,
        id_format=a.id_format, receipt_text_id=a.receipt_text_id, stat=stat,
        reject_suffix=tuple(s for s in a.reject_suffix.split(",") if s),
        silent_suffix=tuple(s for s in a.silent_suffix.split(",") if s),
        throttle_every=a.throttle_every, drop_after=a.drop_after, drop_times=a.drop_times,
        nack_every=a.nack_every, unbind_after=a.unbind_after, resp_delay=resp_delay,
        drop_receipt_suffix=tuple(x for x in a.drop_receipt_suffix.split(",") if x),
        query_refusal=a.query_refusal, mo=tuple(a.mo), bind_tps=a.bind_tps,
    )


def parse_udh(sm: bytes) -> dict[str, int] | None:
    """The concatenation IE (8-bit 0x00 or 16-bit 0x08) of a UDH, if any."""
    if not sm:
        return None
    udhl = sm[0]
    ies = sm[1 : 1 + udhl]
    i = 0
    while i + 2 <= len(ies):
        iei, length = ies[i], ies[i + 1]
        data = ies[i + 2 : i + 2 + length]
        if iei == 0x00 and length == 3:
            return {"ref": data[0], "total": data[1], "seq": data[2], "udhl": udhl}
        if iei == 0x08 and length == 4:
            return {"ref": (data[0] << 8) | data[1], "total": data[2], "seq": data[3], "udhl": udhl}
        i += 2 + length
    return {"ref": -1, "total": 0, "seq": 0, "udhl": udhl}


class Recorder:
    """JSON lines, flushed after every batch of PDUs so tests can read them at once."""

    def __init__(self, path: str | None) -> None:
        self._file: IO[str] | None = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def write(self, event: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(event, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Smsc:
    """State shared by all connections: counters, receivers, pending receipts."""

    def __init__(self, options: Options) -> None:
        self.o = options
        self.rec = Recorder(options.record)
        self.submits = 0
        self.next_id = 0x2A0000  # hex ids contain letters, decimal ids differ from hex ones
        self.connections = 0
        self.drops = 0
        self.unbinds_sent = 0
        self.receivers: list[SmscProtocol] = []
        # Receipts for a system_id with no receiver bound: (system_id, deliver_sm args, record).
        self.parked: deque[tuple[str, dict[str, Any], dict[str, Any]]] = deque()
        # What query_sm answers: submit_sm_resp id -> (final stat word, loop time its receipt is due)
        self.states: dict[str, tuple[str, float]] = {}
        self.mo_sent = False

    def ids(self) -> tuple[str, str]:
        """A fresh (submit_sm_resp id, id in the receipt text)."""
        self.next_id += 1
        n = self.next_id
        resp = format(n, "X") if self.o.id_format == "hex" else str(n)
        fmt = self.o.receipt_text_id
        text = resp if fmt == "same" else (str(n) if fmt == "dec" else format(n, "X"))
        return resp, text

    def stat_for(self, dest: str) -> str:
        for suffix, word in self.o.stat.items():
            if dest.endswith(suffix):
                return word
        return "DELIVRD"

    def receiver_for(self, system_id: str) -> SmscProtocol | None:
        for proto in reversed(self.receivers):
            if proto.system_id == system_id and not proto.closing:
                return proto
        return None


class SmscProtocol(asyncio.Protocol):
    def __init__(self, smsc: Smsc) -> None:
        self.smsc = smsc
        self.o = smsc.o
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.out: list[bytes] | None = None  # answers of the PDU batch being handled
        self.system_id: str | None = None
        self.bind_type: str | None = None
        self.closing = False
        self.seq = 0
        self.conn_submits = 0
        # --bind-tps: the loop time at which this connection's next submit_sm may be answered
        self.next_answer_at = 0.0
        # deliver_sm sent on this connection and not answered yet: seq -> (args, record)
        self.unacked: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        smsc.connections += 1
        self.conn = smsc.connections

    # --- transport ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self in self.smsc.receivers:
            self.smsc.receivers.remove(self)
        # store and forward: what the ESME never answered goes to its next receiver
        for args, record in self.unacked.values():
            assert self.system_id is not None
            self.smsc.parked.append((self.system_id, args, {k: v for k, v in record.items() if k not in ("conn", "seq")}))
            self.smsc.rec.write({"event": "unanswered", "conn": self.conn, "seq": record.get("seq"),
                                 "id": record.get("id")})
        self.unacked.clear()
        target = self.smsc.receiver_for(self.system_id) if self.system_id else None
        if target is not None:
            target._flush_parked()
        self.smsc.rec.write({"event": "disconnect", "conn": self.conn, "error": str(exc) if exc else None})
        self.smsc.rec.flush()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        # Answers to this batch of PDUs are written together, after the records of
        # the batch are on disk: whoever got an answer can read what was recorded.
        self.out = []
        try:
            while not self.closing and len(self.buf) >= 16:
                (length,) = struct.unpack_from("!L", self.buf)
                if length < 16 or length > 64 * 1024:
                    self.smsc.rec.write({"event": "bad_length", "conn": self.conn, "length": length,
                                         "raw": bytes(self.buf[:64]).hex()})
                    self._drop()
                    break
                if len(self.buf) < length:
                    break
                raw = bytes(self.buf[:length])
                del self.buf[:length]
                self.handle(raw)
        finally:
            out, self.out = self.out, None
            self.smsc.rec.flush()
            if out and self.transport is not None and not self.transport.is_closing():
                self.transport.write(b"".join(out))

    def send(self, pdu: op.PDU) -> None:
        if self.transport is None or self.closing:
            return
        if self.out is not None:
            self.out.append(_ENC.encode(pdu))
        else:
            self.smsc.rec.flush()
            self.transport.write(_ENC.encode(pdu))

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _drop(self) -> None:
        """Close after writing what was answered so far (close() flushes; abort() would not)."""
        if self.transport is not None and not self.closing:
            self.smsc.rec.flush()
            if self.out:
                self.transport.write(b"".join(self.out))
                self.out = []
            self.transport.close()
        self.closing = True
        if self in self.smsc.receivers:
            self.smsc.receivers.remove(self)

    # --- PDUs ---------------------------------------------------------------
    def handle(self, raw: bytes) -> None:
        _, command_id, _, seq = _HEADER.unpack_from(raw)
        try:
            pdu = _ENC.decode(io.BytesIO(raw))
        except Exception as exc:  # noqa: BLE001 - a corrupt or unknown PDU: generic_nack, as the spec says
            self.smsc.rec.write({"event": "undecodable", "conn": self.conn, "command_id": command_id, "error": str(exc),
                                 "raw": raw[:64].hex()})
            if not command_id & 0x80000000:
                status = getattr(exc, "status", None) or pt.CommandStatus.ESME_RINVCMDID
                self.send(op.GenericNack(seqNum=seq, status=status))
            return
        name = pdu.commandId.name
        if name in ("bind_transceiver", "bind_transmitter", "bind_receiver"):
            self.on_bind(pdu, name)
        elif name == "submit_sm":
            self.on_submit(pdu, raw)
        elif name == "enquire_link":
            self.smsc.rec.write({"event": "enquire_link", "conn": self.conn})
            self.send(op.EnquireLinkResp(seqNum=pdu.seqNum))
        elif name == "unbind":
            self.smsc.rec.write({"event": "unbind", "conn": self.conn, "system_id": self.system_id})
            self.send(op.UnbindResp(seqNum=pdu.seqNum))
            self._drop()
        elif name == "unbind_resp":
            self._drop()
        elif name == "query_sm":
            self.on_query(pdu)
        elif name == "deliver_sm_resp":
            self.unacked.pop(pdu.seqNum, None)
            self.smsc.rec.write({"event": "deliver_sm_resp", "conn": self.conn, "seq": pdu.seqNum,
                                 "status": pdu.status.name})
        elif name == "generic_nack":
            self.smsc.rec.write({"event": "generic_nack", "conn": self.conn, "seq": pdu.seqNum, "status": pdu.status.name})
        elif name.endswith("_resp"):
            pass
        else:
            self.send(op.GenericNack(seqNum=pdu.seqNum, status=pt.CommandStatus.ESME_RINVCMDID))

    def on_bind(self, pdu: op.PDU, name: str) -> None:
        resp_cls = {"bind_transceiver": op.BindTransceiverResp, "bind_transmitter": op.BindTransmitterResp,
                    "bind_receiver": op.BindReceiverResp}[name]
        system_id = pdu.params["system_id"].decode()
        password = (pdu.params["password"] or b"").decode()
        status = pt.CommandStatus.ESME_ROK
        if self.bind_type is not None:
            status = pt.CommandStatus.ESME_RALYBND
        elif self.o.system_id is not None and system_id != self.o.system_id:
            status = pt.CommandStatus.ESME_RINVSYSID
        elif self.o.password is not None and password != self.o.password:
            status = pt.CommandStatus.ESME_RINVPASWD
        self.smsc.rec.write({"event": "bind", "conn": self.conn, "type": name[5:], "system_id": system_id,
                             "system_type": (pdu.params["system_type"] or b"").decode(), "status": status.name})
        if status != pt.CommandStatus.ESME_ROK:
            self.send(resp_cls(seqNum=pdu.seqNum, status=status))
            return
        self.system_id = system_id
        self.bind_type = name[5:]
        self.send(resp_cls(seqNum=pdu.seqNum, system_id="TESTSMSC"))
        if self.bind_type in ("transceiver", "receiver"):
            self.smsc.receivers.append(self)
            self._flush_parked()
            if self.o.mo and not self.smsc.mo_sent:
                self.smsc.mo_sent = True
                for spec in self.o.mo:
                    self._send_mo(*spec.split(":", 2))

    def on_query(self, pdu: op.PDU) -> None:
        message_id = pdu.params["message_id"].decode()
        record: dict[str, Any] = {"event": "query_sm", "conn": self.conn, "id": message_id,
                                  "source": (pdu.params["source_addr"] or b"").decode()}
        if self.o.query_refusal == "nack":
            record["answer"] = "generic_nack"
            self.smsc.rec.write(record)
            self.send(op.GenericNack(seqNum=pdu.seqNum, status=pt.CommandStatus.ESME_RINVCMDID))
            return
        if self.o.query_refusal == "status":
            record["answer"] = "ESME_RINVCMDID"
            self.smsc.rec.write(record)
            self._error_resp(0x80000003, pt.CommandStatus.ESME_RINVCMDID, pdu.seqNum)
            return
        known = self.smsc.states.get(message_id)
        if known is None:
            record["answer"] = "ESME_RQUERYFAIL"
            self.smsc.rec.write(record)
            self._error_resp(0x80000003, pt.CommandStatus.ESME_RQUERYFAIL, pdu.seqNum)
            return
        stat, due = known
        word = stat if asyncio.get_running_loop().time() >= due else "ENROUTE"
        record["answer"] = word
        self.smsc.rec.write(record)
        self.send(op.QuerySMResp(seqNum=pdu.seqNum, message_id=message_id, final_date=None,
                                 message_state=getattr(pt.MessageState, _STATE_ENUM[word]),
                                 error_code=0 if word in ("DELIVRD", "ENROUTE") else 1))

    def _error_resp(self, command_id: int, status: pt.CommandStatus, seq: int) -> None:
        """A response with an error status and no body (SMPP 3.4 §3.3; smpp.pdu3 insists on the body)."""
        raw = _HEADER.pack(16, command_id, constants.command_status_name_map[status.name], seq)
        if self.transport is None or self.closing:
            return
        if self.out is not None:
            self.out.append(raw)
        else:
            self.transport.write(raw)

    def _send_mo(self, source: str, dest: str, text: str) -> None:
        ucs2 = not text.isascii()
        args = dict(
            service_type="", source_addr_ton=pt.AddrTon.INTERNATIONAL, source_addr_npi=pt.AddrNpi.ISDN,
            source_addr=source, dest_addr_ton=pt.AddrTon.UNKNOWN, dest_addr_npi=pt.AddrNpi.UNKNOWN,
            destination_addr=dest, esm_class=pt.EsmClass(pt.EsmClassMode.DEFAULT, pt.EsmClassType.DEFAULT),
            protocol_id=0, priority_flag=pt.PriorityFlag.LEVEL_0,
            registered_delivery=pt.RegisteredDelivery(pt.RegisteredDeliveryReceipt.NO_SMSC_DELIVERY_RECEIPT_REQUESTED),
            replace_if_present_flag=pt.ReplaceIfPresentFlag.DO_NOT_REPLACE,
            data_coding=pt.DataCoding(pt.DataCodingScheme.DEFAULT, pt.DataCodingDefault.UCS2) if ucs2
            else pt.DataCoding(), sm_default_msg_id=0,
            short_message=text.encode("utf-16-be") if ucs2 else text.encode("ascii"),
        )
        self.deliver(args, {"event": "mo", "source": source, "dest": dest, "text": text})

    def on_submit(self, pdu: op.PDU, raw: bytes) -> None:
        smsc, o, p = self.smsc, self.o, pdu.params
        if self.bind_type not in ("transceiver", "transmitter"):
            self.send(op.SubmitSMResp(seqNum=pdu.seqNum, status=pt.CommandStatus.ESME_RINVBNDSTS))
            return
        smsc.submits += 1
        self.conn_submits += 1
        n = smsc.submits
        dest = p["destination_addr"].decode()
        source = (p["source_addr"] or b"").decode()
        sm: bytes = p["short_message"] or b""
        esm = _ESM.encode(p["esm_class"])[0]
        dcs = _DCS.encode(p["data_coding"])[0]
        reg = _REG.encode(p["registered_delivery"])[0]
        record: dict[str, Any] = {
            "event": "submit_sm", "n": n, "conn": self.conn, "seq": pdu.seqNum, "source": source,
            "source_ton": _TON[p["source_addr_ton"].name], "source_npi": _NPI[p["source_addr_npi"].name],
            "dest": dest, "dest_ton": _TON[p["dest_addr_ton"].name], "dest_npi": _NPI[p["dest_addr_npi"].name],
            "esm_class": esm, "data_coding": dcs, "registered_delivery": reg,
            "service_type": (p["service_type"] or b"").decode(), "short_message": sm.hex(),
            "udh": parse_udh(sm) if esm & 0x40 else None,
            "sar": {"ref": p["sar_msg_ref_num"], "total": p["sar_total_segments"], "seq": p["sar_segment_seqnum"]}
            if "sar_msg_ref_num" in p else None,
        }

        # One misbehaviour per mode; everything else is the happy path.
        mode = o.mode
        if mode == "drop_mid_window" and smsc.drops < o.drop_times and self.conn_submits >= o.drop_after:
            smsc.drops += 1
            record["answer"] = "dropped"
            smsc.rec.write(record)
            self._drop()
            return
        if mode == "no_answer" and dest.endswith(o.silent_suffix):
            record["answer"] = "none"
            smsc.rec.write(record)
            return
        if mode == "nack_some" and n % o.nack_every == 0:
            record["answer"] = "generic_nack"
            smsc.rec.write(record)
            self.send(op.GenericNack(seqNum=pdu.seqNum, status=pt.CommandStatus.ESME_RSYSERR))
            return
        status = pt.CommandStatus.ESME_ROK
        if mode == "reject_some" and dest.endswith(o.reject_suffix):
            status = pt.CommandStatus.ESME_RINVDSTADR
        elif mode == "throttled" and n % o.throttle_every == 0:
            status = pt.CommandStatus.ESME_RTHROTTLED
        if status != pt.CommandStatus.ESME_ROK:
            record["answer"] = status.name
            smsc.rec.write(record)
            self._respond(op.SubmitSMResp(seqNum=pdu.seqNum, status=status))
            return

        resp_id, text_id = smsc.ids()
        record["answer"] = "ok"
        record["message_id"] = resp_id
        wants_receipt = o.receipts and (reg & 0x03) in (1, 2)
        stat = smsc.stat_for(dest)
        if (reg & 0x03) in (1, 2):
            smsc.states[resp_id] = (stat, asyncio.get_running_loop().time() + o.receipt_delay)
        if wants_receipt and o.drop_receipt_suffix and dest.endswith(o.drop_receipt_suffix):
            wants_receipt = False
            record["receipt"] = "dropped"
        smsc.rec.write(record)
        if wants_receipt and (reg & 0x03) == 2 and stat == "DELIVRD":
            wants_receipt = False  # receipt on failure only
        if mode == "receipt_first":
            if wants_receipt:
                self._send_receipt(resp_id, text_id, dest, source, stat, sm)
            self._respond(op.SubmitSMResp(seqNum=pdu.seqNum, message_id=resp_id))
        else:
            answered_in = self._respond(op.SubmitSMResp(seqNum=pdu.seqNum, message_id=resp_id))
            if wants_receipt:
                loop = asyncio.get_running_loop()
                loop.call_later(answered_in + o.receipt_delay, self._send_receipt, resp_id, text_id, dest, source, stat, sm)
        if mode == "server_unbind" and smsc.unbinds_sent == 0 and n >= o.unbind_after:
            smsc.unbinds_sent += 1
            smsc.rec.write({"event": "server_unbind", "conn": self.conn})
            self.send(op.Unbind(seqNum=self._next_seq()))
            asyncio.get_running_loop().call_later(1.0, self._drop)

    def _respond(self, pdu: op.PDU) -> float:
        """Answer a submit_sm (after ``--resp-delay``, and in its turn under ``--bind-tps``); returns the delay."""
        delay = self.o.resp_delay
        if self.o.bind_tps > 0:
            now = asyncio.get_running_loop().time()
            slot = max(now, self.next_answer_at)
            self.next_answer_at = slot + 1.0 / self.o.bind_tps
            delay = max(delay, slot - now)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self.send, pdu)
        else:
            self.send(pdu)
        return delay

    # --- receipts -----------------------------------------------------------
    def _send_receipt(self, resp_id: str, text_id: str, dest: str, source: str, stat: str, sm: bytes) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%y%m%d%H%M")
        err = "000" if stat == "DELIVRD" else "001"
        dlvrd = "001" if stat == "DELIVRD" else "000"
        text = f"id:{text_id} sub:001 dlvrd:{dlvrd} submit date:{now} done date:{now} stat:{stat} err:{err} text:"
        body = text.encode("ascii") + sm[:20].hex().encode("ascii")[:20]
        kwargs: dict[str, Any] = {}
        if self.o.receipt_tlv:
            kwargs["receipted_message_id"] = resp_id
            kwargs["message_state"] = getattr(pt.MessageState, _STATE_ENUM[stat])
        args = dict(
            service_type="", source_addr_ton=pt.AddrTon.INTERNATIONAL, source_addr_npi=pt.AddrNpi.ISDN,
            source_addr=dest, dest_addr_ton=pt.AddrTon.UNKNOWN, dest_addr_npi=pt.AddrNpi.UNKNOWN,
            destination_addr=source,
            esm_class=pt.EsmClass(pt.EsmClassMode.DEFAULT, pt.EsmClassType.SMSC_DELIVERY_RECEIPT),
            protocol_id=0, priority_flag=pt.PriorityFlag.LEVEL_0,
            registered_delivery=pt.RegisteredDelivery(pt.RegisteredDeliveryReceipt.NO_SMSC_DELIVERY_RECEIPT_REQUESTED),
            replace_if_present_flag=pt.ReplaceIfPresentFlag.DO_NOT_REPLACE,
            data_coding=pt.DataCoding(), sm_default_msg_id=0, short_message=body, **kwargs,
        )
        assert self.system_id is not None
        target = self.smsc.receiver_for(self.system_id)
        record = {"event": "receipt", "id": resp_id, "text_id": text_id, "dest": dest, "stat": stat}
        if target is None:
            # No receiver bound right now: keep it, like a real SMSC, until one binds.
            self.smsc.parked.append((self.system_id, args, record))
            self.smsc.rec.write({**record, "parked": True})
            self.smsc.rec.flush()
            return
        target.deliver(args, record)

    def deliver(self, args: dict[str, Any], record: dict[str, Any]) -> None:
        seq = self._next_seq()
        record.update(conn=self.conn, seq=seq)
        self.unacked[seq] = (args, record)
        self.smsc.rec.write(record)
        self.send(op.DeliverSM(seqNum=seq, **args))
        self.smsc.rec.flush()

    def _flush_parked(self) -> None:
        smsc = self.smsc
        keep: deque[tuple[str, dict[str, Any], dict[str, Any]]] = deque()
        while smsc.parked:
            item = smsc.parked.popleft()
            if item[0] != self.system_id:
                keep.append(item)
                continue
            self.deliver(item[1], {**item[2], "redelivered": True})
        smsc.parked = keep


async def serve(options: Options) -> None:
    smsc = Smsc(options)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SmscProtocol(smsc), options.host, options.port)
    port = server.sockets[0].getsockname()[1]
    smsc.rec.write({"event": "listening", "port": port, "mode": options.mode})
    smsc.rec.flush()
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    smsc.rec.write({"event": "stopped", "submits": smsc.submits})
    smsc.rec.close()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
