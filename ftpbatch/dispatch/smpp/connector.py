"""The SMPP 3.4 connector: our own session layer (session.py) on an asyncio/uvloop loop of its own.

Why our own session and not smpp34's client: smpp34's Rust core answers
every deliver_sm itself, before Python sees it, and offers no query_sm; a
receipt acknowledged before it is stored is lost when the gateway dies. So
the session (framing, sequence numbers, enquire_link, unbind, generic_nack)
is ours, and smpp34 stays as the codec of the two big PDUs (pdu.py).
bench/smpp_eval.py measures it against smpp34's client in one run.

Threads. The dispatcher calls :meth:`SmppConnector.submit` and
:meth:`SmppConnector.query` from its thread; the connector runs an event
loop in a background thread that owns the session(s). Messages cross over in
chunks (one ``call_soon_threadsafe`` per chunk); results cross back in
batches, one ``events.submitted`` call per couple of milliseconds.
``submit`` blocks while ``2 × window`` messages are handed over and
unanswered (``window`` in flight plus ``window`` ready to go).

Rooms: sender.py (window, throttling, outcomes of submit_sm), inbound.py
(deliver_sm: receipts and MO, acknowledged after they are stored),
queries.py (query_sm), session.py (one connection), pdu.py (the codec).

Multipart. Each part is its own submit_sm; the parts of one message share
one reference (UDH 8-bit IE 0x00, or SAR TLVs with ``sar=1``). Only the last
part asks for a delivery receipt and ``upstream_id`` is that part's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import smpp34

from ... import codes
from ...errors import ConnectorError
from ...models import QueryRequest
from ..connector import Connector, ConnectorEvents, OutboundMessage, SubmitResult
from . import pdu
from .encoding import EncodingError, Part, Splitter, build_parts
from .inbound import Inbound
from .loop import describe, new_event_loop
from .queries import Queries
from .fields import relative_time, source_address
from .sender import Job, Sender
from .session import Session, open_session
from .settings import SmppSettings, parse_url

log = logging.getLogger("ftpbatch.dispatch.smpp")

#: a session that lived at least this long resets the re-bind backoff
_STABLE_SESSION = 10.0


class SmppConnector(Connector):
    """An SMPP 3.4 upstream, configured by an ``smpp://`` URL (see settings.py)."""

    can_query = True

    def __init__(self, settings: SmppSettings, *, split: Splitter | None = None) -> None:
        self.settings = settings
        self.account = settings.account
        self.window = settings.window
        self.tps = settings.tps
        #: seconds after which the ledger should stop waiting for a receipt
        self.receipt_timeout = settings.receipt_timeout
        self.max_binds = settings.max_binds
        #: counters for logs and metrics: accepted, failed, retried, throttled, receipts, ...
        self.stats: Counter[str] = Counter()
        self._split = split
        self._refs = itertools.count(random.randrange(1 << 16))
        # --- the hand-over between the dispatcher's thread and the loop
        self._cond = threading.Condition()
        self._pending = 0  # handed over, no result yet
        self._waiters = 0  # submit() calls waiting for free slots
        self._chunk = max(1, settings.window // 2)  # hand over at least this many at a time
        self._need = 1
        self._capacity = 2 * settings.window
        self._stopping = False
        self._refusing = False  # link down for longer than the grace: hand back at once
        self._up = False
        self._events: ConnectorEvents | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_timeout = 5.0
        # --- loop state (asyncio objects bind to the loop on first use)
        self._stop_event = asyncio.Event()
        self._sender = Sender(settings, self.stats, self._finish)
        self._inbound = Inbound(settings, self.stats, lambda: self._events, lambda: self._loop)
        self._queries = Queries(settings, self.stats, lambda: self._events, self._sender.bucket)
        self._results: list[SubmitResult] = []
        self._commons: dict[tuple[str | None, int | None], tuple[str, dict[str, Any]]] = {}
        self._templates: dict[tuple[str | None, int | None, int, int, int], pdu.SubmitTemplate | None] = {}
        self._flush_scheduled = False
        self._grace: asyncio.TimerHandle | None = None
        self._sessions: list[Session] = []  # the bound sessions now (binds)

    @classmethod
    def from_url(cls, url: str, *, split: Splitter | None = None) -> SmppConnector:
        return cls(parse_url(url), split=split)

    def __repr__(self) -> str:
        return f"SmppConnector({self.account}, bind={self.settings.bind}, window={self.window})"

    # ------------------------------------------------------------------ API
    def start(self, events: ConnectorEvents) -> None:
        if self._thread is not None:
            raise ConnectorError(f"{self.account}: connector already started")
        self._events = events
        ready = threading.Event()

        def run() -> None:
            loop = new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            ready.set()
            try:
                loop.run_until_complete(self._main())
            except Exception:  # pragma: no cover - a bug; make it loud, then hand everything back
                log.exception("%s: SMPP connector loop crashed", self.account)
                with self._cond:  # from now on submit() hands everything straight back
                    self._stopping = True
                    self._cond.notify_all()
                self._flush_scheduled = True  # no loop to schedule on: flush by hand below
                self._sender.retry_all("internal error in the SMPP connector")
                self._flush()
                self._up = False
            finally:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    # A bind-slot call (ledger) may still run on the executor's thread: wait for
                    # it, so stop() returns only when nothing here uses the ledger any more (the
                    # caller closes it next; a SQLite connection closed under a running statement
                    # crashes the process).
                    loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"smpp-{self.settings.host}:{self.settings.port}", daemon=True)
        self._thread.start()
        ready.wait()

    def submit(self, messages: Sequence[OutboundMessage]) -> None:
        if self._thread is None or self._loop is None:
            raise ConnectorError(f"{self.account}: submit() before start()")
        immediate: list[SubmitResult] = []
        # The messages are encoded on the connector's loop (_enqueue), not here: this
        # is the dispatcher's sink, which every answer waits for, while the loop has
        # room between the SMSC's answers (window 50 against a fast SMSC: the sink
        # spent 0.8 ms of each 50-message round encoding).
        pending = list(messages)
        i = 0
        while i < len(pending):
            with self._cond:
                # Wait for a handful of free slots, not one: every hand-over wakes the
                # loop thread and trades the GIL, so fewer, bigger hand-overs are cheaper.
                need = min(len(pending) - i, self._chunk)
                while not (self._stopping or self._refusing) and self._capacity - self._pending < need:
                    self._waiters += 1
                    self._need = need
                    try:
                        self._cond.wait(1.0)
                    finally:
                        self._waiters -= 1
                if self._stopping or self._refusing:
                    reason = "connector stopping" if self._stopping else "connection to the SMSC is down"
                    for message in pending[i:]:
                        immediate.append(self._retry_result(message, reason))
                    break
                n = min(len(pending) - i, self._capacity - self._pending)
                chunk = pending[i : i + n]
                self._pending += n
                i += n
                # Scheduled under the lock: stop() sets _stopping under it too, so every
                # chunk reaches the loop before the stop request does.
                self._loop.call_soon_threadsafe(self._enqueue, chunk)
        if immediate:
            self._deliver_results(immediate)

    def query(self, requests: Sequence[QueryRequest]) -> None:
        """Ask the SMSC about overdue receipts; each gets one ``events.query_answers`` outcome."""
        if self._loop is None or self._stopping:
            return
        self._loop.call_soon_threadsafe(self._queries.enqueue, list(requests))

    @property
    def is_up(self) -> bool:
        return self._up and not self._stopping

    @property
    def binds(self) -> int:
        """Sessions bound now: one transceiver, or a transmitter and a receiver."""
        return sum(1 for session in self._sessions if session.alive)

    def stop(self, timeout: float = 5.0) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._stop_timeout = timeout
            self._cond.notify_all()
            loop.call_soon_threadsafe(self._stop_event.set)
        thread.join(timeout + 5.0)
        if thread.is_alive():
            log.error("%s: SMPP connector thread did not stop within %.1fs", self.account, timeout + 5.0)

    # ------------------------------------------------------------ messages
    def _make_job(self, message: OutboundMessage) -> Job:
        s = self.settings
        split = self._split or _default_split
        specs: list[Part] = build_parts(message.text, message.encoding, split=split, reference=next(self._refs),
                                        packed=s.gsm_packed, sar=s.sar)
        last = len(specs) - 1
        bodies = []
        for index, spec in enumerate(specs):
            registered = 1 if index == last else 0
            if not spec.tlvs:
                template = self._template(message.sender, message.validity_minutes, spec.esm_class,
                                          spec.data_coding, registered)
                body = template.submit_sm(0, message.destination, spec.short_message) if template else None
                if body is not None:
                    bodies.append(body)
                    continue
            source, fields = self._part_fields(message.sender, message.validity_minutes, spec.esm_class,
                                               spec.data_coding, registered)
            if spec.tlvs:
                fields["tlvs"] = [smpp34.Tlv(tag, value) for tag, value in spec.tlvs]
            bodies.append(pdu.submit_sm(0, source, message.destination, spec.short_message, fields))
        return Job(message, bodies)

    def _template(self, sender: str | None, validity_minutes: int | None, esm_class: int, data_coding: int,
                  registered: int) -> pdu.SubmitTemplate | None:
        """The submit_sm template of these fields (kept: a batch has few sets; None: smpp34 encodes each)."""
        key = (sender, validity_minutes, esm_class, data_coding, registered)
        try:
            return self._templates[key]
        except KeyError:
            pass
        if len(self._templates) > 1000:  # bounded, as _commons
            self._templates.clear()
        template = self._templates[key] = pdu.SubmitTemplate.of(*self._part_fields(*key))
        return template

    def _part_fields(self, sender: str | None, validity_minutes: int | None, esm_class: int, data_coding: int,
                     registered: int) -> tuple[str, dict[str, Any]]:
        """source_addr and the submit_sm keyword fields of one part."""
        source, common = self._common_fields(sender, validity_minutes)
        return source, {**common, "esm_class": esm_class, "data_coding": data_coding,
                        "registered_delivery": registered}

    def _common_fields(self, sender: str | None, validity_minutes: int | None) -> tuple[str, dict[str, Any]]:
        """source_addr and the submit_sm fields every message of this sender and validity shares (kept: a batch has few)."""
        key = (sender, validity_minutes)
        found = self._commons.get(key)
        if found is None:
            s = self.settings
            source, ton, npi = source_address(sender, s)
            common: dict[str, Any] = {
                "source_addr_ton": ton, "source_addr_npi": npi,
                "dest_addr_ton": s.dest_ton, "dest_addr_npi": s.dest_npi, "service_type": s.service_type,
            }
            if validity_minutes:
                common["validity_period"] = relative_time(validity_minutes)
            if len(self._commons) > 1000:  # bounded: senders and validities per row are few in practice
                self._commons.clear()
            found = self._commons[key] = (source, common)
        return found

    def _retry_result(self, message: OutboundMessage, reason: str) -> SubmitResult:
        self.stats["retried"] += 1
        return SubmitResult(message.message_id, message.attempt, error_text=reason, retry=True)

    def _deliver_results(self, results: list[SubmitResult]) -> None:
        assert self._events is not None
        try:
            self._events.submitted(results)
        except Exception:
            log.exception("%s: events.submitted failed for %d results", self.account, len(results))

    # ------------------------------------------------------- loop: hand-over
    def _enqueue(self, messages: list[OutboundMessage]) -> None:
        if self._stopping or self._sender.draining or self._refusing:
            reason = "connector stopping" if (self._stopping or self._sender.draining) else "connection to the SMSC is down"
            for message in messages:
                self._answer(self._retry_result(message, reason))
            return
        jobs: list[Job] = []
        for message in messages:
            try:
                jobs.append(self._make_job(message))
            except EncodingError as exc:
                self.stats["failed"] += 1
                self._answer(SubmitResult(message.message_id, message.attempt, error_code=codes.ERROR,
                                          error_text=f"cannot encode the text: {exc.message}"))
        self._sender.enqueue(jobs)

    def _finish(self, job: Job, result: SubmitResult) -> None:
        if job.done:
            return
        job.done = True
        self._sender.jobs.discard(job)
        self._answer(result)

    def _answer(self, result: SubmitResult) -> None:
        """A message's result, handed over with the others of this turn of the loop; its slot is free now."""
        self._results.append(result)
        if not self._flush_scheduled:
            # Handed over at the end of this turn of the loop: every answer of one
            # read (an SMSC answers a window in a few segments) goes in one batch,
            # one wake-up of the dispatcher and one ledger write. Waiting a couple
            # of milliseconds more for the next read held the window for nothing:
            # at window 50 against a fast SMSC, 8,500-8,900 -> 9,500-10,400 msg/s.
            self._flush_scheduled = True
            self._loop_now().call_soon(self._flush)
        # Free the slot now, not at the flush: the pipe must not wait for the coalescing.
        with self._cond:
            self._pending -= 1
            if self._waiters and self._capacity - self._pending >= self._need:
                self._cond.notify()

    def _loop_now(self) -> asyncio.AbstractEventLoop:
        """The connector's loop (set once it runs; asyncio.get_running_loop() asks the OS for the pid each call)."""
        loop = self._loop
        assert loop is not None
        return loop

    def _flush(self) -> None:
        self._flush_scheduled = False
        results, self._results = self._results, []
        if results:
            self._deliver_results(results)

    def _state(self, up: bool, detail: str) -> None:
        self._up = up
        (log.info if up else log.warning)("%s: %s", self.account, detail)
        assert self._events is not None
        try:
            self._events.connection_state(up, detail)
        except Exception:
            log.exception("%s: events.connection_state failed", self.account)

    # ---------------------------------------------------- loop: sessions
    async def _main(self) -> None:
        s = self.settings
        delay = s.reconnect_min
        loop = asyncio.get_running_loop()
        # Messages handed over before the first bind wait for it, but not forever.
        self._grace = loop.call_later(s.connect_timeout + s.response_timeout, self._refuse)
        while not self._stop_event.is_set():
            sessions = await self._bind_unless_stopped(delay)
            if sessions is None:
                if self._stop_event.is_set():
                    break
                delay = min(delay * 2, s.reconnect_max)
                continue
            if self._grace is not None:
                self._grace.cancel()
                self._grace = None
            with self._cond:
                self._refusing = False
            self._state(True, f"bound {s.bind} to {s.host}:{s.port} as {s.system_id!r} "
                              f"(window {s.window}, {describe(loop)})")
            started = time.monotonic()
            reason = await self._serve(sessions)
            if self._stop_event.is_set():
                break
            self.stats["reconnects"] += 1
            if time.monotonic() - started >= _STABLE_SESSION:
                delay = s.reconnect_min
            self._state(False, f"connection to {s.host}:{s.port} lost ({reason}); re-binding in {delay:g}s")
            self._grace = loop.call_later(s.response_timeout, self._refuse)
            await self._sleep_unless_stopped(delay)
            delay = min(delay * 2, s.reconnect_max)
        await self._release_slots()
        self._sender.retry_all("connector stopped")
        self._queries.fail_all("connector stopped")
        self._state(False, f"unbound from {s.host}:{s.port} (stopped)")
        self._flush()
        self._inbound.flush()

    def _refuse(self) -> None:
        """The link stayed down: hand back what waits, and what comes, until it is up."""
        self._grace = None
        with self._cond:
            self._refusing = True
            self._cond.notify_all()
        self._sender.retry_all("connection to the SMSC is down")

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    async def _bind_unless_stopped(self, delay: float) -> list[Session] | None:
        if not await self._take_slots(delay):
            return None
        sessions = await self._bind_or_stop(delay)
        if sessions is None:
            await self._release_slots()
        return sessions

    async def _take_slots(self, delay: float) -> bool:
        """With ``max_binds``: hold this bind's slots of the account first (ledger leases), or wait."""
        slots, s = self.bind_slots, self.settings
        if slots is None:
            return True
        try:
            free = await asyncio.get_running_loop().run_in_executor(None, slots.take, 1 if s.bind == "trx" else 2)
        except Exception as exc:  # the ledger cannot be reached: no new bind until it can
            free = False
            log.warning("%s: cannot take a bind slot (%s)", self.account, exc)
        if not free:
            self.stats["bind_slot_waits"] += 1
            self._state(False, f"not binding to {s.host}:{s.port}: the {s.max_binds} bind(s) of {s.system_id!r} "
                               f"are held by other nodes; trying again in {delay:g}s")
            await self._sleep_unless_stopped(delay)
        return free

    async def _release_slots(self) -> None:
        if self.bind_slots is not None:
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(None, self.bind_slots.release)

    async def _keep_slots(self, sessions: list[Session]) -> None:
        """Renew this node's bind slots while bound; lost to another node (after a cut): unbind."""
        slots = self.bind_slots
        assert slots is not None
        loop = asyncio.get_running_loop()
        every = float(getattr(slots, "seconds", 30.0)) / 3
        while True:
            await asyncio.sleep(every)
            try:
                kept = await loop.run_in_executor(None, slots.renew)
            except Exception:  # pragma: no cover - renew answers for an unreachable ledger itself
                kept = False
            if not kept:
                log.warning("%s: bind slot lost to another node; unbinding", self.account)
                for session in sessions:
                    await session.unbind(2.0)
                return

    async def _bind_or_stop(self, delay: float) -> list[Session] | None:
        s = self.settings
        bind = asyncio.ensure_future(self._bind())
        stop = asyncio.ensure_future(self._stop_event.wait())
        await asyncio.wait({bind, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not bind.done():
            bind.cancel()
            with contextlib.suppress(BaseException):
                await bind
            return None
        error = bind.exception()
        if error is not None:
            self.stats["bind_failures"] += 1
            self._state(False, f"bind to {s.host}:{s.port} as {s.system_id!r} failed "
                               f"({error or type(error).__name__}); next try in {delay:g}s")
            await self._sleep_unless_stopped(delay)
            return None
        sessions = bind.result()
        if self._stop_event.is_set():
            await self._close(sessions, unbind=True)
            return None
        return sessions

    async def _bind(self) -> list[Session]:
        """One transceiver, or a transmitter then a receiver; the first one is where submits go."""
        s = self.settings
        tls = ssl.create_default_context() if s.tls else None
        if tls is not None and not s.tls_verify:
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        sessions: list[Session] = []
        try:
            for kind in (["trx"] if s.bind == "trx" else ["tx", "rx"]):
                session = await open_session(f"{self.account}/{kind}", s.host, s.port, self._inbound.on_deliver,
                                             timeout=s.connect_timeout, tls=tls)
                sessions.append(session)
                await session.bind(kind, s.system_id, s.password, s.system_type, s.connect_timeout)
        except BaseException:
            for session in sessions:
                session.close("bind failed")
            raise
        return sessions

    async def _serve(self, sessions: list[Session]) -> str:
        """Send and receive until a session closes or the connector stops; returns why it ended."""
        tx = sessions[0]
        self._queries.session = tx
        self._sessions = list(sessions)
        tasks = [asyncio.create_task(self._sender.run(tx)), asyncio.create_task(self._queries.run())]
        tasks += [asyncio.create_task(session.keepalive(self.settings.enquire_link, self.settings.response_timeout))
                  for session in sessions]
        if self.bind_slots is not None:
            tasks.append(asyncio.create_task(self._keep_slots(sessions)))
        waits = [asyncio.ensure_future(session.closed.wait()) for session in sessions]
        stop = asyncio.ensure_future(self._stop_event.wait())
        await asyncio.wait({stop, *waits}, return_when=asyncio.FIRST_COMPLETED)
        for wait in (stop, *waits):
            wait.cancel()
        stopping = self._stop_event.is_set() and all(session.alive for session in sessions)
        if stopping:
            # Stop: nothing new goes out; what is in flight may still be answered.
            self._sender.draining = True
            self._sender.wake_workers()
            self._sender.retry_unsent("connector stopping")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sender.idle.wait(), max(0.0, self._stop_timeout - 1.0))
        self._queries.session = None
        self._sessions = []
        reason = next((session.reason for session in sessions if not session.alive), "stopped")
        await self._close(sessions, unbind=stopping)
        await self._release_slots()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return reason

    async def _close(self, sessions: list[Session], unbind: bool) -> None:
        # deliver_sm not yet stored stay unanswered: the SMSC re-delivers them on the next bind
        for session in sessions:
            if unbind and session.alive:
                await session.unbind(2.0)
            session.close("closed by the connector")


def _default_split(text: str, encoding: str) -> list[str]:
    # Imported late: the rules stage owns segmentation and may be absent in unit tests.
    from ...rules.segments import split_parts

    return split_parts(text, encoding)
