"""The SMPP 3.4 connector: smpp34 (Rust/tokio core) driven from its own asyncio loop.

Threads. The dispatcher calls :meth:`SmppConnector.submit` from its thread;
the connector runs an asyncio event loop in a background thread that owns the
smpp34 session(s). Messages cross over in chunks (one ``call_soon_threadsafe``
per chunk); results and receipts cross back in batches, one
``events.submitted`` / ``events.receipts`` call per loop turn.

Window. ``window`` worker coroutines each keep at most one submit_sm in
flight, so at most ``window`` PDUs are outstanding; smpp34's own window is
set to the same number. ``submit`` blocks while ``2 × window`` messages are
handed over and unanswered (``window`` in flight plus ``window`` ready to
go, so the pipe never waits for the dispatcher thread).

Outcomes (every handed message gets exactly one :class:`SubmitResult`):

* all parts accepted -> ``upstream_id`` (see *multipart* below);
* a permanent command_status on any part -> ``error_code`` (map: status.py);
* throttling (ESME_RTHROTTLED, ESME_RMSGQFUL) and generic_nack are retried
  **inside** the connector: the whole connector pauses (exponential, from
  ``throttle_min`` to ``throttle_max`` seconds) and re-sends the same part,
  up to ``retry_max`` times; after that the message comes back ``retry=True``;
* no submit_sm_resp within ``response_timeout``, the connection lost while a
  part was in flight, ESME_RSYSERR -> ``retry=True`` at once (the SMSC may
  have taken it: the ledger flags the re-send as a possible duplicate);
* not yet sent when the connection dropped: kept and sent after the re-bind;
  if the link stays down longer than ``response_timeout`` they come back
  ``retry=True``, and so does anything handed over until it is up again.

Multipart. Each part is its own submit_sm; the parts of one message share
one reference (UDH 8-bit IE 0x00, or SAR TLVs with ``sar=1``). Only the
**last** part asks for a delivery receipt (registered_delivery=1, the others
0) and ``upstream_id`` is that part's id, so each message has exactly one
id and one receipt and the ledger's (account, upstream_id) map needs no
change. The price: the receipt tells about the last part only.

Receipts. Every deliver_sm is acknowledged by smpp34's core. Receipts become
:class:`Receipt` events (ids normalised by ``receipt_id``, see receipts.py),
whether or not their submit_sm_resp was seen: the ledger parks the early
ones. Intermediate (ENROUTE), unparseable and MO messages are logged and
counted in :attr:`SmppConnector.stats`, never silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import os
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from ... import codes
from ...errors import ConnectorError
from ..connector import Connector, ConnectorEvents, OutboundMessage, Receipt, SubmitResult
from .encoding import EncodingError, Part, Splitter, build_parts
from .loop import describe, new_event_loop
from .receipts import is_receipt, normalise_submit_id, parse_receipt
from .settings import SmppSettings, parse_url
from .sockets import set_nodelay_to
from .status import Action, Outcome, status_from_error, submit_outcome

# smpp34's tokio pool defaults to 2 threads; on small machines they fight the
# Python thread for the GIL on every completion. One is faster here (see
# bench/smpp_eval.py). Must be set before smpp34 starts its runtime.
os.environ.setdefault("SMPP34_WORKER_THREADS", "1")
import smpp34

log = logging.getLogger("ftpbatch.dispatch.smpp")

#: a session that lived at least this long resets the re-bind backoff
_STABLE_SESSION = 10.0
#: seconds results and receipts are collected before one events call
_FLUSH_DELAY = 0.002
#: deliver_sm events smpp34 may queue for the reader
_INBOUND_CAPACITY = 65536


class _Job:
    """One handed message and the state of its parts."""

    __slots__ = ("done", "ids", "left", "message", "parts")

    def __init__(self, message: OutboundMessage) -> None:
        self.message = message
        self.parts: list[_Part] = []
        self.ids: list[str | None] = []
        self.left = 0
        self.done = False


class _Part:
    __slots__ = ("body", "deadline", "in_doubt", "in_flight", "index", "job", "kwargs", "timed_out", "tries")

    def __init__(self, job: _Job, index: int, body: bytes, kwargs: dict[str, Any]) -> None:
        self.job = job
        self.index = index
        self.body = body
        self.kwargs = kwargs
        self.tries = 0
        self.in_flight = False  # counted in the window right now
        self.in_doubt = False  # sent, and no answer yet says whether the SMSC took it
        self.deadline = 0.0  # loop time by which its submit_sm_resp is due (while in flight)
        self.timed_out = False  # the watchdog cancelled its wait for the answer


class _Session:
    """One bind (trx) or a pair of binds (tx + rx), living and dying together."""

    def __init__(self, clients: list[smpp34.Client], smscs: list[smpp34.Smsc]) -> None:
        self.clients = clients
        self.smscs = smscs
        self.tx = smscs[0]
        self.dead = asyncio.Event()
        self.reason = ""

    def kill(self, reason: str) -> None:
        if not self.dead.is_set():
            self.reason = reason
            self.dead.set()

    async def alive(self) -> bool:
        for client in self.clients:
            if not await client.is_alive():
                return False
        return True


class _TokenBucket:
    """Connector-level submit_sm rate; a burst of at most a twentieth of a second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate / 20)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self) -> None:
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self.tokens) / self.rate)


class SmppConnector(Connector):
    """An SMPP 3.4 upstream, configured by an ``smpp://`` URL (see settings.py)."""

    def __init__(self, settings: SmppSettings, *, split: Splitter | None = None) -> None:
        self.settings = settings
        self.account = settings.account
        self.window = settings.window
        self.tps = settings.tps
        #: seconds after which the ledger should stop waiting for a receipt
        self.receipt_timeout = settings.receipt_timeout
        #: counters for logs and metrics: accepted, failed, retried, throttled, receipts, ...
        self.stats: Counter[str] = Counter()
        self._split = split
        self._refs = itertools.count(random.randrange(1 << 16))
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
            self._init_loop_state()
            ready.set()
            try:
                loop.run_until_complete(self._main())
            except Exception:  # pragma: no cover - a bug; make it loud, then hand everything back
                log.exception("%s: SMPP connector loop crashed", self.account)
                with self._cond:  # from now on submit() hands everything straight back
                    self._stopping = True
                    self._cond.notify_all()
                self._flush_scheduled = True  # no loop to schedule on: flush by hand below
                self._retry_all("internal error in the SMPP connector")
                self._flush()
                self._up = False
            finally:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"smpp-{self.settings.host}:{self.settings.port}", daemon=True)
        self._thread.start()
        ready.wait()

    def submit(self, messages: Sequence[OutboundMessage]) -> None:
        if self._thread is None or self._loop is None:
            raise ConnectorError(f"{self.account}: submit() before start()")
        immediate: list[SubmitResult] = []
        jobs: list[_Job] = []
        for message in messages:
            try:
                jobs.append(self._make_job(message))
            except EncodingError as exc:
                self.stats["failed"] += 1
                immediate.append(SubmitResult(message.message_id, message.attempt, error_code=codes.ERROR,
                                              error_text=f"cannot encode the text: {exc}"))
        i = 0
        while i < len(jobs):
            with self._cond:
                # Wait for a handful of free slots, not one: every hand-over wakes the
                # loop thread and trades the GIL, so fewer, bigger hand-overs are cheaper.
                need = min(len(jobs) - i, self._chunk)
                while not (self._stopping or self._refusing) and self._capacity - self._pending < need:
                    self._waiters += 1
                    self._need = need
                    try:
                        self._cond.wait(1.0)
                    finally:
                        self._waiters -= 1
                if self._stopping or self._refusing:
                    reason = "connector stopping" if self._stopping else "connection to the SMSC is down"
                    for job in jobs[i:]:
                        immediate.append(self._retry_result(job, reason))
                    break
                n = min(len(jobs) - i, self._capacity - self._pending)
                chunk = jobs[i : i + n]
                self._pending += n
                i += n
                # Scheduled under the lock: stop() sets _stopping under it too, so every
                # chunk reaches the loop before the stop request does.
                self._loop.call_soon_threadsafe(self._enqueue, chunk)
        if immediate:
            self._deliver_results(immediate)

    @property
    def is_up(self) -> bool:
        return self._up and not self._stopping

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
    def _make_job(self, message: OutboundMessage) -> _Job:
        s = self.settings
        split = self._split or _default_split
        specs: list[Part] = build_parts(message.text, message.encoding, split=split, reference=next(self._refs),
                                        packed=s.gsm_packed, sar=s.sar)
        job = _Job(message)
        source, ton, npi = _source_address(message.sender, s)
        common: dict[str, Any] = {
            "source_addr": source, "source_addr_ton": ton, "source_addr_npi": npi,
            "dest_addr_ton": s.dest_ton, "dest_addr_npi": s.dest_npi, "service_type": s.service_type,
        }
        if message.validity_minutes:
            common["validity_period"] = _relative_time(message.validity_minutes)
        last = len(specs) - 1
        for index, spec in enumerate(specs):
            kwargs = dict(common, esm_class=spec.esm_class, data_coding=spec.data_coding,
                          registered_delivery=1 if index == last else 0)
            if spec.tlvs:
                kwargs["tlvs"] = [smpp34.Tlv(tag, value) for tag, value in spec.tlvs]
            job.parts.append(_Part(job, index, spec.short_message, kwargs))
        job.ids = [None] * len(specs)
        job.left = len(specs)
        return job

    def _retry_result(self, job: _Job, reason: str) -> SubmitResult:
        self.stats["retried"] += 1
        return SubmitResult(job.message.message_id, job.message.attempt, error_text=reason, retry=True)

    def _deliver_results(self, results: list[SubmitResult]) -> None:
        assert self._events is not None
        try:
            self._events.submitted(results)
        except Exception:
            log.exception("%s: events.submitted failed for %d results", self.account, len(results))

    # ------------------------------------------------------- loop: set-up
    def _init_loop_state(self) -> None:
        self._stop_event = asyncio.Event()
        self._parts: deque[_Part] = deque()
        # Workers waiting for a part, each on its own future: a hand-over wakes
        # as many as there are new parts, not all fifty of them.
        self._idle_workers: deque[asyncio.Future[None]] = deque()
        # Parts whose submit_sm_resp is awaited, and the worker task awaiting it
        # (see _watch_answers: one watchdog instead of a timer per submit).
        self._awaiting: dict[_Part, asyncio.Task[Any]] = {}
        self._jobs: set[_Job] = set()
        self._draining = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._results: list[SubmitResult] = []
        self._receipts: list[Receipt] = []
        self._flush_scheduled = False
        self._paused_until = 0.0
        self._throttle_level = 0
        self._grace: asyncio.TimerHandle | None = None
        self._bucket = _TokenBucket(self.tps) if self.tps else None

    def _enqueue(self, jobs: list[_Job]) -> None:
        if self._stopping or self._draining or self._refusing:
            reason = "connector stopping" if (self._stopping or self._draining) else "connection to the SMSC is down"
            for job in jobs:
                self._finish(job, self._retry_result(job, reason))
            return
        for job in jobs:
            self._jobs.add(job)
            self._parts.extend(job.parts)
        self._wake_workers(len(self._parts))

    def _wake_workers(self, count: int | None = None) -> None:
        """Wake ``count`` idle workers (all when None)."""
        while self._idle_workers and (count is None or count > 0):
            waiter = self._idle_workers.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if count is not None:
                    count -= 1

    def _finish(self, job: _Job, result: SubmitResult) -> None:
        if job.done:
            return
        job.done = True
        self._jobs.discard(job)
        self._results.append(result)
        self._schedule_flush()
        # Free the slot now, not at the flush: the pipe must not wait for the coalescing.
        with self._cond:
            self._pending -= 1
            if self._waiters and self._capacity - self._pending >= self._need:
                self._cond.notify()

    def _retry(self, job: _Job, reason: str) -> None:
        if not job.done:
            self._finish(job, self._retry_result(job, reason))

    def _retry_all(self, reason: str) -> None:
        for job in list(self._jobs):
            self._retry(job, reason)
        self._parts.clear()

    def _schedule_flush(self) -> None:
        # A couple of milliseconds of coalescing turns a stream of single answers
        # into batches: fewer wake-ups of the dispatcher, bigger ledger writes.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(_FLUSH_DELAY, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        results, self._results = self._results, []
        receipts, self._receipts = self._receipts, []
        if results:
            self._deliver_results(results)
        if receipts:
            assert self._events is not None
            try:
                self._events.receipts(receipts)
            except Exception:
                log.exception("%s: events.receipts failed for %d receipts", self.account, len(receipts))

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
        # Messages handed over before the first bind wait for it, but not forever.
        self._grace = asyncio.get_running_loop().call_later(s.connect_timeout + s.response_timeout, self._refuse)
        while not self._stop_event.is_set():
            session = await self._bind_unless_stopped(delay)
            if session is None:
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
                              f"(window {s.window}, {describe(asyncio.get_running_loop())})")
            started = time.monotonic()
            await self._serve(session)
            await self._close(session, unbind=self._stop_event.is_set())
            if self._stop_event.is_set():
                break
            self.stats["reconnects"] += 1
            if time.monotonic() - started >= _STABLE_SESSION:
                delay = s.reconnect_min
            self._state(False, f"connection to {s.host}:{s.port} lost ({session.reason}); re-binding in {delay:g}s")
            self._grace = asyncio.get_running_loop().call_later(s.response_timeout, self._refuse)
            await self._sleep_unless_stopped(delay)
            delay = min(delay * 2, s.reconnect_max)
        self._retry_all("connector stopped")
        self._state(False, f"unbound from {s.host}:{s.port} (stopped)")
        self._flush()

    def _refuse(self) -> None:
        """The link stayed down: hand back what waits, and what comes, until it is up."""
        self._grace = None
        with self._cond:
            self._refusing = True
            self._cond.notify_all()
        self._retry_all("connection to the SMSC is down")

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    async def _bind_unless_stopped(self, delay: float) -> _Session | None:
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
        if bind.exception() is not None:
            self.stats["bind_failures"] += 1
            self._state(False, f"bind to {s.host}:{s.port} as {s.system_id!r} failed ({bind.exception()}); "
                               f"next try in {delay:g}s")
            await self._sleep_unless_stopped(delay)
            return None
        session: _Session = bind.result()
        if self._stop_event.is_set():
            await self._close(session, unbind=True)
            return None
        return session

    async def _bind(self) -> _Session:
        s = self.settings
        kinds = ["TRX"] if s.bind == "trx" else ["TX", "RX"]
        clients: list[smpp34.Client] = []
        smscs: list[smpp34.Smsc] = []
        try:
            for kind in kinds:
                client = smpp34.Client(s.host, s.port, s.system_id, s.password, bind_type=kind,
                                       system_type=s.system_type, window_size=s.window,
                                       # Never let smpp34's inbound queue fill: its
                                       # backpressure NAK is a malformed deliver_sm_resp
                                       # (17 bytes sent, command_length 16) that desyncs
                                       # a strict SMSC. The reader drains it continuously.
                                       inbound_capacity=_INBOUND_CAPACITY,
                                       connect_timeout_ms=int(s.connect_timeout * 1000))
                clients.append(client)
                smscs.append(await asyncio.wait_for(client.connect(), s.connect_timeout + 1.0))
        except BaseException:
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.stop()
            raise
        # Not a bound state on its own; see sockets.py for why this is done from outside.
        if set_nodelay_to(s.host, s.port) < len(clients):
            log.debug("%s: TCP_NODELAY could not be set on every socket", self.account)
        return _Session(clients, smscs)

    async def _serve(self, session: _Session) -> None:
        tasks = [asyncio.create_task(self._worker(session)) for _ in range(self.window)]
        tasks += [asyncio.create_task(self._reader(session, smsc)) for smsc in session.smscs]
        tasks.append(asyncio.create_task(self._watch(session)))
        tasks.append(asyncio.create_task(self._watch_answers()))
        dead = asyncio.ensure_future(session.dead.wait())
        stop = asyncio.ensure_future(self._stop_event.wait())
        await asyncio.wait({dead, stop}, return_when=asyncio.FIRST_COMPLETED)
        dead.cancel()
        stop.cancel()
        if self._stop_event.is_set() and not session.dead.is_set():
            # Stop: nothing new goes out; what is in flight may still be answered.
            self._draining = True
            self._wake_workers()
            for job in [j for j in self._jobs if not any(p.in_flight for p in j.parts)]:
                self._retry(job, "connector stopping")
            self._parts.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), max(0.0, self._stop_timeout - 1.0))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _close(self, session: _Session, unbind: bool) -> None:
        if unbind and not session.dead.is_set():
            for smsc in session.smscs:
                try:
                    await asyncio.wait_for(smsc.unbind(), 2.0)
                except Exception as exc:  # noqa: BLE001 - a failed unbind only delays the close
                    log.warning("%s: unbind failed: %s", self.account, exc)
        for client in session.clients:
            with contextlib.suppress(Exception):
                await client.stop()

    # ------------------------------------------------------ loop: sending
    async def _next_part(self) -> _Part | None:
        while True:
            if self._draining:
                return None
            while self._parts:
                part = self._parts.popleft()
                if not part.job.done:
                    return part
            waiter = asyncio.get_running_loop().create_future()
            self._idle_workers.append(waiter)
            await waiter

    async def _worker(self, session: _Session) -> None:
        while not session.dead.is_set():
            part = await self._next_part()
            if part is None:
                return
            try:
                usable = await self._send(session, part)
            except asyncio.CancelledError:
                if part.in_flight:
                    self._landed(part)
                if part.in_doubt:
                    self._retry(part.job, "connection closed before the SMSC answered")
                elif not part.job.done:
                    self._parts.appendleft(part)  # never sent, or refused: safe to send again
                raise
            except Exception:
                # A bug must not leave a message without its result, nor kill the worker.
                log.exception("%s: error sending message %d", self.account, part.job.message.message_id)
                if part.in_flight:
                    self._landed(part)
                self._retry(part.job, "internal error in the SMPP connector")
                continue
            if not usable:
                return

    def _landed(self, part: _Part) -> None:
        part.in_flight = False
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def _send(self, session: _Session, part: _Part) -> bool:
        """Send one part until it has an outcome. False: the session is unusable."""
        s = self.settings
        job = part.job
        loop = asyncio.get_running_loop()
        while True:
            pause = self._paused_until - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            if self._bucket is not None:
                await self._bucket.take()
            if job.done:
                return True
            if session.dead.is_set() or self._draining:
                if not self._draining:
                    self._parts.appendleft(part)
                return False
            part.in_flight = part.in_doubt = True
            self._inflight += 1
            self._idle.clear()
            message_id = ""
            task = asyncio.current_task()
            assert task is not None
            cancelling = task.cancelling()
            part.deadline = loop.time() + s.response_timeout
            part.timed_out = False
            self._awaiting[part] = task
            try:
                try:
                    resp = await session.tx.submit_sm(job.message.destination, part.body, **part.kwargs)
                finally:
                    del self._awaiting[part]
            except asyncio.CancelledError:
                # The watchdog's cancel is a timeout; any other (stop, session end) goes on up.
                if not part.timed_out or task.uncancel() > cancelling:
                    raise
                self._landed(part)
                self.stats["timeouts"] += 1
                self._retry(job, f"no submit_sm_resp within {s.response_timeout:g}s")
                return True
            except smpp34.SmppError as exc:
                self._landed(part)
                died = await self._dies_soon(session)
                log.debug("%s: submit_sm for message %d part %d failed (%s); connection %s", self.account,
                          job.message.message_id, part.index, exc, "lost" if died else "alive: generic_nack")
                if died:
                    session.kill("connection lost")
                    self._retry(job, "connection lost before the SMSC answered")
                    return False
                # The session lives on, so this was a generic_nack: the PDU was not taken.
                part.in_doubt = False
                self.stats["generic_nacks"] += 1
                number = status_from_error(str(exc))
                outcome = Outcome(Action.THROTTLE, text=f"generic_nack {exc}" if number is None else
                                  f"generic_nack 0x{number:08X}")
            else:
                self._landed(part)
                part.in_doubt = False
                outcome = submit_outcome(resp.command_status)
                message_id = resp.message_id or ""

            if outcome.action is Action.OK:
                self._throttle_level = 0
                self._accepted(part, message_id)
                return True
            if outcome.action is Action.THROTTLE:
                self.stats["throttled"] += 1
                self._throttle(loop)
                part.tries += 1
                if part.tries > s.retry_max:
                    self._retry(job, f"{outcome.text}, {part.tries} times")
                    return True
                continue
            if outcome.action is Action.RETRY:
                self._retry(job, outcome.text)
                return True
            if outcome.action is Action.REBIND:
                self._retry(job, outcome.text)
                session.kill(outcome.text)
                return False
            self.stats["failed"] += 1
            self._finish(job, SubmitResult(job.message.message_id, job.message.attempt,
                                           error_code=outcome.code, error_text=outcome.text))
            return True

    async def _watch_answers(self) -> None:
        """Cancel the waits for submit_sm_resp that are overdue (the worker turns that into a retry).

        One look every few tenths of a second instead of a timer per submit:
        at thousands of submits a second, creating and cancelling those timers
        was a tenth of the loop's time. An answer is given up at most one tick
        after ``response_timeout``.
        """
        tick = min(0.25, self.settings.response_timeout / 4)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for part, task in list(self._awaiting.items()):
                if part.deadline <= now and not part.timed_out:
                    part.timed_out = True
                    task.cancel()

    async def _dies_soon(self, session: _Session, within: float = 0.25) -> bool:
        """Whether a failed submit_sm was the connection going down.

        smpp34 raises the same SmppError for a generic_nack and for a submit
        cut off by a disconnect, and may still call the session alive for a
        moment after the socket closed. A nack means "not taken" and may be
        re-sent here; a cut-off submit is in doubt and must go back to the
        ledger (possible duplicate). So look for the disconnect a little while.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            if session.dead.is_set() or not await session.alive():
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)

    def _throttle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Pause all sending; back off further only if throttled again after a pause ended.

        The answers to the other PDUs of the window that were sent before the
        pause belong to the same episode and must not double the delay again.
        """
        s = self.settings
        now = loop.time()
        if now < self._paused_until:
            return
        delay = min(s.throttle_max, s.throttle_min * (2 ** self._throttle_level))
        self._throttle_level = min(self._throttle_level + 1, 30)
        self._paused_until = now + delay

    def _accepted(self, part: _Part, message_id: str) -> None:
        job = part.job
        if job.done:
            log.info("%s: late submit_sm_resp %r for message %d (already answered)", self.account, message_id,
                     job.message.message_id)
            return
        if not message_id:
            # Accepted without an id: nothing can ever match its receipt. Say so.
            log.warning("%s: SMSC accepted message %d without a message_id", self.account, job.message.message_id)
            message_id = f"no-id:{job.message.message_id}:{job.message.attempt}:{part.index}"
        job.ids[part.index] = normalise_submit_id(message_id, self.settings.receipt_id)
        job.left -= 1
        if job.left == 0:
            self.stats["accepted"] += 1
            self.stats["parts"] += len(job.ids)
            # The last part is the one that asked for the receipt.
            self._finish(job, SubmitResult(job.message.message_id, job.message.attempt, upstream_id=job.ids[-1]))

    # ---------------------------------------------------- loop: receiving
    async def _reader(self, session: _Session, smsc: smpp34.Smsc) -> None:
        # This loop must never stop while the bind lives: smpp34 acknowledges
        # deliver_sm itself and, once its inbound queue is full, answers with a
        # malformed NAK. So a bad receipt is logged and skipped, and a reader that
        # ends for any reason takes the bind down with it.
        try:
            while True:
                event = await smsc.next()
                if isinstance(event, smpp34.Disconnected):
                    session.kill("the SMSC closed the connection or unbound")
                    return
                if isinstance(event, smpp34.DeliverSmEvent):
                    try:
                        self._on_deliver(event)
                    except Exception:
                        self.stats["receipts_failed"] += 1
                        log.exception("%s: could not handle deliver_sm %r", self.account, event.short_message[:200])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: receipt reader failed", self.account)
            session.kill(f"receipt reader failed: {exc}")

    def _on_deliver(self, event: smpp34.DeliverSmEvent) -> None:
        tlvs = {t.tag: t.value for t in event.tlvs}
        if not is_receipt(event.esm_class, set(tlvs)):
            self.stats["mo_messages"] += 1
            log.info("%s: MO message from %s to %s (data_coding %d, %d octets) acknowledged; MO is not handled",
                     self.account, event.source_addr, event.destination_addr, event.data_coding,
                     len(event.short_message))
            return
        parsed = parse_receipt(event.short_message, tlvs, self.settings.receipt_id)
        if parsed is None:
            self.stats["receipts_unparsed"] += 1
            log.warning("%s: receipt without a usable id or status from %s: %r (TLVs %s)", self.account,
                        event.source_addr, event.short_message[:200], sorted(hex(t) for t in tlvs))
            return
        if parsed.status is None:
            self.stats["receipts_intermediate"] += 1
            log.info("%s: intermediate receipt %s for %s", self.account, parsed.stat, parsed.upstream_id)
            return
        self.stats["receipts"] += 1
        error_text = None if parsed.status == codes.DELIVERED else f"stat:{parsed.stat} err:{parsed.err or '-'}"
        self._receipts.append(Receipt(self.account, parsed.upstream_id, parsed.status,
                                      dt.datetime.now(dt.UTC), error_text))
        self._schedule_flush()

    async def _watch(self, session: _Session) -> None:
        """smpp34 sends enquire_link itself; this notices a bind that died quietly."""
        while True:
            await asyncio.sleep(self.settings.enquire_link)
            if not await session.alive():
                session.kill("bind no longer alive")
                return


def _default_split(text: str, encoding: str) -> list[str]:
    # Imported late: the rules stage owns segmentation and may be absent in unit tests.
    from ...rules.segments import split_parts

    return split_parts(text, encoding)


def _source_address(sender: str | None, s: SmppSettings) -> tuple[str, int, int]:
    """source_addr, TON, NPI: alphanumeric 5/0, digits 1/1 (international), none 0/0."""
    if not sender:
        addr, ton, npi = "", 0, 0
    elif sender.lstrip("+").isdigit():
        addr, ton, npi = sender.lstrip("+"), 1, 1
    else:
        addr, ton, npi = sender, 5, 0
    return addr, s.source_ton if s.source_ton is not None else ton, s.source_npi if s.source_npi is not None else npi


def _relative_time(minutes: int) -> str:
    """SMPP relative time "YYMMDDhhmmss000R" (§7.1.1), at most 99 days."""
    minutes = max(1, min(minutes, 99 * 1440 + 23 * 60 + 59))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    return f"0000{days:02d}{hours:02d}{mins:02d}00000R"
