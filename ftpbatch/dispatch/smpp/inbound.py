"""deliver_sm from the SMSC: receipts and MO messages, answered only once they are stored.

A deliver_sm is decoded (smpp34's codec), recognised as a receipt or an MO
message, and collected while more keep coming (see FLUSH_DELAY); then the
receipts go to ``events.receipts`` and the MO messages to
``events.mo_messages``, each batch with an ``ack`` callable. The
dispatcher's sink calls ``ack`` right after the ledger transaction that
stored the batch; only then does each deliver_sm get its deliver_sm_resp,
on the session it came on. If the gateway dies first, the SMSC still holds
them and delivers them again on the next bind; the ledger's conditional
update makes the repeat harmless.

Answered at once (nothing to store): intermediate receipts (ENROUTE), and
deliver_sm that cannot be read (logged and counted; answered with
ESME_RSYSERR would make the SMSC re-send a PDU that will never parse).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable

import smpp34

from ... import codes
from ...models import MoMessage, Receipt
from ..connector import ConnectorEvents
from . import pdu
from .encoding import DCS_UCS2, gsm_decode
from .receipts import is_receipt, parse_receipt
from .session import Session
from .settings import SmppSettings

log = logging.getLogger("ftpbatch.dispatch.smpp")

# deliver_sm are collected until none came for FLUSH_DELAY seconds, FLUSH_HOLD seconds
# after the first, or FLUSH_SIZE of them: then one events call, one ledger write and
# one round of deliver_sm_resp. An SMSC that waits for our answers before it sends
# more (its window is full) goes quiet, and is answered FLUSH_DELAY after its last
# deliver_sm, as when every batch was cut FLUSH_DELAY after its first; one that keeps
# sending waits at most FLUSH_HOLD for its answers. Cut after the first, 20,000
# receipts at ~2,000 a second came in ~1,700 batches of a dozen, each its own ledger
# write (the sink's most frequent transaction); now in ~425. The size bound keeps a
# write short at high rates (a long one holds the submit answers queued behind it),
# where the sink's own gathering merges batches anyway.
FLUSH_DELAY = 0.002
FLUSH_HOLD = 0.02
FLUSH_SIZE = 100


class Inbound:
    """Collects deliver_sm on the connector's loop and hands them over in batches."""

    def __init__(self, settings: SmppSettings, stats: Counter[str], events: Callable[[], ConnectorEvents | None],
                 loop_of: Callable[[], asyncio.AbstractEventLoop | None]) -> None:
        self.settings = settings
        self.account = settings.account
        self.stats = stats
        self._events = events
        self._loop_of = loop_of
        self._receipts: list[Receipt] = []
        self._receipt_acks: list[tuple[Session, int]] = []
        self._mo: list[MoMessage] = []
        self._mo_acks: list[tuple[Session, int]] = []
        self._flush_scheduled = False
        # loop time of the first and the last deliver_sm collected since the last flush,
        # and the number of flushes so far (a look set for a batch gone does nothing)
        self._first_at = self._last_at = 0.0
        self._flushes = 0

    def on_deliver(self, session: Session, sequence: int, raw: bytes) -> None:
        try:
            event = pdu.decode_deliver_sm(raw)
        except smpp34.SmppError as exc:
            self.stats["receipts_failed"] += 1
            log.warning("%s: deliver_sm that does not decode (%s): %s", self.account, exc, raw[:64].hex())
            session.respond([sequence])
            return
        try:
            stored = self._take(event, session, sequence)
        except Exception:  # a bug must not stall the bind: say so, answer, go on
            self.stats["receipts_failed"] += 1
            log.exception("%s: could not handle deliver_sm %r", self.account, event.short_message[:200])
            stored = False
        if not stored:
            session.respond([sequence])

    def _take(self, event: smpp34.DeliverSm, session: Session, sequence: int) -> bool:
        """Collect one deliver_sm; False when there is nothing to store (answer it now)."""
        tlvs = {t.tag: t.value for t in event.tlvs}
        now = dt.datetime.now(dt.UTC)
        if not is_receipt(event.esm_class, set(tlvs)):
            self.stats["mo_messages"] += 1
            self._mo.append(_mo_message(self.account, event, now))
            self._mo_acks.append((session, sequence))
            self._schedule_flush()
            return True
        parsed = parse_receipt(event.short_message, tlvs, self.settings.receipt_id)
        if parsed is None:
            self.stats["receipts_unparsed"] += 1
            log.warning("%s: receipt without a usable id or status from %s: %r (TLVs %s)", self.account,
                        event.source_addr, event.short_message[:200], sorted(hex(t) for t in tlvs))
            return False
        if parsed.status is None:
            self.stats["receipts_intermediate"] += 1
            log.info("%s: intermediate receipt %s for %s", self.account, parsed.stat, parsed.upstream_id)
            return False
        self.stats["receipts"] += 1
        error_text = None if parsed.status == codes.DELIVERED else f"stat:{parsed.stat} err:{parsed.err or '-'}"
        self._receipts.append(Receipt(self.account, parsed.upstream_id, parsed.status, now, error_text))
        self._receipt_acks.append((session, sequence))
        self._schedule_flush()
        return True

    def _schedule_flush(self) -> None:
        if len(self._receipts) + len(self._mo) >= FLUSH_SIZE:
            self.flush()
            return
        # the connector's loop as it keeps it: asyncio.get_running_loop() asks the OS for the pid
        loop = self._loop_of() or asyncio.get_running_loop()
        self._last_at = loop.time()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._first_at = self._last_at
            loop.call_at(self._last_at + FLUSH_DELAY, self._flush_when_quiet, loop, self._flushes)

    def _flush_when_quiet(self, loop: asyncio.AbstractEventLoop, flushes: int) -> None:
        """Flush, unless the SMSC is still sending: then look again once it may have stopped."""
        if flushes != self._flushes:
            return  # the batch it was set for went already (full, or a stop)
        due = min(self._last_at + FLUSH_DELAY, self._first_at + FLUSH_HOLD)
        if loop.time() < due:
            loop.call_at(due, self._flush_when_quiet, loop, flushes)
            return
        self.flush()

    def flush(self) -> None:
        self._flush_scheduled = False
        self._flushes += 1
        events = self._events()
        if events is None:
            return
        if self._receipts:
            receipts, self._receipts = self._receipts, []
            acks, self._receipt_acks = self._receipt_acks, []
            try:
                events.receipts(receipts, self._acknowledger(acks))
            except Exception:
                log.exception("%s: events.receipts failed for %d receipts", self.account, len(receipts))
        if self._mo:
            messages, self._mo = self._mo, []
            acks, self._mo_acks = self._mo_acks, []
            try:
                events.mo_messages(messages, self._acknowledger(acks))
            except Exception:
                log.exception("%s: events.mo_messages failed for %d messages", self.account, len(messages))

    def _acknowledger(self, acks: list[tuple[Session, int]]) -> Callable[[], None]:
        """``ack()``, callable from any thread once the batch is stored: one deliver_sm_resp each."""

        def answer() -> None:
            by_session: dict[Session, list[int]] = {}
            for session, sequence in acks:
                by_session.setdefault(session, []).append(sequence)
            for session, sequences in by_session.items():
                session.respond(sequences)  # a session that died meanwhile sends nothing: the SMSC re-delivers
            self.stats["deliver_sm_acked"] += len(acks)

        def ack() -> None:
            loop = self._loop_of()
            if loop is not None and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(answer)
                except RuntimeError:  # the loop closed meanwhile: the SMSC re-delivers after the next bind
                    pass

        return ack


def _mo_message(account: str, event: smpp34.DeliverSm, now: dt.datetime) -> MoMessage:
    raw = event.short_message
    tlvs = {t.tag: t.value for t in event.tlvs}
    body = raw or tlvs.get(0x0424, b"")  # message_payload carries long MO without a short_message
    concat = None
    if event.esm_class & 0x40 and body:  # UDH: take it off before decoding
        udhl = body[0]
        udh, body = body[1 : 1 + udhl], body[1 + udhl :]
        if len(udh) >= 5 and udh[0] == 0x00 and udh[1] == 3:
            concat = (udh[2], udh[3], udh[4])
        elif len(udh) >= 6 and udh[0] == 0x08 and udh[1] == 4:
            concat = ((udh[2] << 8) | udh[3], udh[4], udh[5])
    return MoMessage(account, event.source_addr, event.destination_addr, decode_text(body, event.data_coding), event.data_coding,
                     now, raw, concat)


def decode_text(body: bytes, data_coding: int) -> str:
    """MO text: UCS-2 (0x08), Latin-1 (0x03), else GSM 03.38 one septet per octet (the SMSC default alphabet)."""
    if data_coding == DCS_UCS2:
        return body.decode("utf-16-be", "replace")
    if data_coding == 0x03:
        return body.decode("latin-1")
    if data_coding == 0x01:
        return body.decode("ascii", "replace")
    return gsm_decode(body)
