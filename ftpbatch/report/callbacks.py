"""Delivers the callback outbox (DESIGN.md §8): POSTs to each product's callback URL.

Threads:

* the *coordinator* claims due rows from the ledger (leased, like messages),
  hands them to the workers, and writes their outcomes back in bulk;
* ``concurrency`` *workers* each POST one callback at a time.

Nothing here is on the dispatch path: the message state machine only inserts
outbox rows, in the transaction that changes a status. A slow or dead
endpoint costs this pool, never the dispatcher.

Exactly once, in the end: a row leaves ``pending`` only through a conditional
update on (id, attempt) after a 2xx answer; a restart finds the rows it had
leased and posts them again (the POST that was cut off never got its 2xx
recorded). A callback can reach a receiver twice only when the process dies
between the receiver's 2xx and the ledger commit, milliseconds wide;
receivers that must never see one twice can key on (``apiMsgId``,
``status``), unique per callback.

An endpoint that fails is *paused* (for the next retry delay, growing with
consecutive failures), then probed with one callback at a time until it
answers again: a dead receiver costs one request per delay, not one per
message, and cannot starve other products' callbacks.
"""

from __future__ import annotations

import base64
import http.client
import logging
import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlencode, urlsplit

from .. import __version__
from ..config import CallbackSettings
from ..lifecycle import all_alive
from ..ledger import Ledger
from ..ledger.records import CallbackJob, CallbackOutcome
from ..logs import redact_url

log = logging.getLogger(__name__)

# Claims are cheap but take the ledger's write lock: not more often than this.
_MIN_CLAIM_SPACING = 0.01
_IDLE_WAIT = 0.5
# Claimed callbacks per worker, at most: claims come in batches (one
# transaction for many rows), refilled while each worker still has a couple
# queued, so that workers never idle between two claims.
_PREFETCH = 8
_REFILL_AT = 2
_PURGE_EVERY = 3600.0
_MAX_BODY = 64 * 1024

#: Outcome names for metrics: delivered, retry, given_up.
Observer = Callable[[str, float], None]


@dataclass
class _Endpoint:
    """What this node knows about one product's callback endpoint."""

    failures: int = 0  # consecutive
    paused_until: float = 0.0
    in_flight: int = 0  # claimed and not yet answered


@dataclass
class _Posted:
    job: CallbackJob
    ok: bool
    error: str | None
    seconds: float
    released: bool = False


@dataclass
class _Deadlines:
    """Sockets of POSTs in progress and when they must be cut (a receiver that trickles bytes)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    open: dict[int, tuple[float, http.client.HTTPConnection]] = field(default_factory=dict)
    cut: set[int] = field(default_factory=set)  # POSTs cut short: whatever they read is void

    def cut_overdue(self, now: float) -> None:
        with self.lock:
            overdue = [(key, conn) for key, (deadline, conn) in self.open.items() if deadline < now]
            self.cut.update(key for key, _ in overdue)
        for _, conn in overdue:
            sock = conn.sock
            if sock is not None:
                try:  # socket.socket's own shutdown: safe beside a read on another thread, TLS or not
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass


class CallbackSender:
    def __init__(
        self,
        ledger: Ledger,
        settings: CallbackSettings,
        node_id: str,
        *,
        observe: Observer | None = None,
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.node_id = node_id
        self.delays = settings.delays()
        self.timeout = settings.timeout
        # Room for a POST to run its full time after waiting its turn in the
        # work queue; a worker never starts one on a lease too close to expiry.
        self.lease_seconds = (_PREFETCH + 1) * settings.timeout + 10.0
        self.observe = observe or (lambda outcome, seconds: None)
        self._ssl = ssl.create_default_context()
        self._work: queue.SimpleQueue[CallbackJob | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[_Posted] = queue.SimpleQueue()
        self._endpoints: dict[str, _Endpoint] = {}
        self._deadlines = _Deadlines()
        self._wake = threading.Event()
        # Whether any product has a callback URL, looked at every round. Without one
        # nothing is ever queued, and waking the coordinator after each of the
        # dispatcher's writes (hundreds a second) was a tenth of a one-shot run's CPU.
        self._configured = True
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._coordinator: threading.Thread | None = None
        self._last_claim = 0.0
        self._last_purge = 0.0
        self._last_claimed = 0
        self._unrecorded: list[CallbackOutcome] = []  # outcomes the ledger has not taken yet
        self.delivered = 0
        self.retried = 0
        self.given_up = 0

    # --- lifecycle -----------------------------------------------------
    def start(self) -> None:
        resumed = self.ledger.expire_callback_leases_of(self.node_id)
        if resumed:
            log.warning("resuming %d callback(s) that were being posted when this node last stopped", resumed)
        for n in range(self.settings.concurrency):
            thread = threading.Thread(target=self._work_loop, name=f"callback-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._coordinator = threading.Thread(target=self._coordinate, name="callbacks", daemon=True)
        self._coordinator.start()

    def wake(self) -> None:
        """New outbox rows may be due: look now rather than at the next tick (if any product has a callback URL)."""
        if self._configured:
            self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming, let the POSTs in progress finish (each within its timeout), record them."""
        self._stopping.set()
        self._wake.set()
        limit = (self.timeout + 2.0) if timeout is None else timeout
        if self._coordinator is not None:
            self._coordinator.join(limit)
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join(1.0)

    name = "callbacks"

    @property
    def is_up(self) -> bool:
        return self._coordinator is not None and self._coordinator.is_alive()

    @property
    def healthy(self) -> bool:
        return all_alive([self._coordinator, *self._threads])

    def details(self) -> dict[str, Any]:
        return {"in_flight": self.in_flight, "endpoints": self.endpoint_states()}

    @property
    def in_flight(self) -> int:
        """Callbacks claimed by this node and not answered yet."""
        return sum(e.in_flight for e in list(self._endpoints.values()))

    def endpoint_states(self) -> dict[str, str]:
        """Product -> ``ok``, ``paused`` or ``probing``, for products this node has posted to."""
        now = time.time()
        states = {}
        for product, e in list(self._endpoints.items()):
            states[product] = "ok" if e.failures == 0 else ("paused" if e.paused_until > now else "probing")
        return states

    # --- coordinator ---------------------------------------------------
    def _coordinate(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            try:
                self._record(self._drain(wait=0.05 if stopping else 0.0))
                if stopping:
                    if self.in_flight == 0 and not self._unrecorded:
                        return
                    self._deadlines.cut_overdue(time.time())
                    continue
                self._configured = self.ledger.callbacks_configured()
                self._claim(time.time())
                self._deadlines.cut_overdue(time.time())
                self._purge(time.time())
                wait = self._idle_wait()
            except Exception:  # the ledger may be busy; outcomes are kept and written later
                log.exception("callback round failed; retrying")
                wait = 0.5
            self._wake.wait(wait)
            self._wake.clear()

    def _idle_wait(self) -> float:
        if self._last_claimed and self.in_flight <= _REFILL_AT * self.settings.concurrency:
            # a backlog, and the workers are running low: claim again as soon as allowed
            return max(0.001, self._last_claim + _MIN_CLAIM_SPACING - time.time())
        if self.in_flight or self._last_claimed:
            return 0.05  # answers come back through the done queue and wake us; more may be due
        now = time.time()
        waits = [_IDLE_WAIT]
        due = self.ledger.next_callback_due()
        if due is not None and due > now:
            waits.append(due - now)
        waits += [e.paused_until - now for e in list(self._endpoints.values()) if e.paused_until > now]
        return max(_MIN_CLAIM_SPACING, min(waits))

    def _purge(self, now: float) -> None:
        if now - self._last_purge < _PURGE_EVERY:
            return
        self._last_purge = now
        purged = self.ledger.purge_callbacks(now - self.settings.keep_days * 86400)
        if purged:
            log.info("forgot %d callback(s) done more than %g day(s) ago", purged, self.settings.keep_days)

    def _drain(self, wait: float = 0.0) -> list[_Posted]:
        posted: list[_Posted] = []
        try:
            posted.append(self._done.get(timeout=wait) if wait else self._done.get_nowait())
            while True:
                posted.append(self._done.get_nowait())
        except queue.Empty:
            pass
        return posted

    def _claim(self, now: float) -> None:
        outstanding = self.in_flight
        if outstanding > _REFILL_AT * self.settings.concurrency or now - self._last_claim < _MIN_CLAIM_SPACING:
            return  # every worker has work queued
        free = self.settings.concurrency * _PREFETCH - outstanding
        self._last_claim = now
        self._last_claimed = 0
        paused = [p for p, e in self._endpoints.items() if e.failures and (e.paused_until > now or e.in_flight)]
        probing = [p for p, e in self._endpoints.items() if e.failures and e.paused_until <= now and not e.in_flight]
        jobs = self.ledger.claim_callbacks(self.node_id, free, now, self.lease_seconds, exclude=paused + probing)
        for product in probing:  # one at a time until the endpoint answers again
            if len(jobs) >= free:
                break
            jobs += self.ledger.claim_callbacks(self.node_id, 1, now, self.lease_seconds, only=product)
        self._last_claimed = len(jobs)
        for job in jobs:
            self._endpoints.setdefault(job.product, _Endpoint()).in_flight += 1
            self._work.put(job)

    def _record(self, posted: list[_Posted]) -> None:
        """Turn answers into outcomes and write them (with any a busy ledger refused before)."""
        now = time.time()
        outcomes = self._unrecorded
        for p in posted:
            job, endpoint = p.job, self._endpoints.setdefault(p.job.product, _Endpoint())
            endpoint.in_flight = max(0, endpoint.in_flight - 1)
            if p.released:
                outcomes.append(CallbackOutcome(job.id, job.attempt, "released"))
                continue
            if p.ok:
                endpoint.failures, endpoint.paused_until = 0, 0.0
                outcomes.append(CallbackOutcome(job.id, job.attempt, "delivered"))
                self.delivered += 1
                self.observe("delivered", p.seconds)
                continue
            endpoint.failures += 1
            if self.delays:
                pause = self.delays[min(endpoint.failures, len(self.delays)) - 1]
                endpoint.paused_until = max(endpoint.paused_until, now + pause)
            tries = job.tries + 1
            if tries > len(self.delays):
                outcomes.append(CallbackOutcome(job.id, job.attempt, "failed", error=p.error))
                self.given_up += 1
                self.observe("given_up", p.seconds)
                log.warning(
                    "callback %d of %s given up after %d tries: %s (%s)",
                    job.id, job.product, tries, p.error, redact_url(job.url or "-"),
                )
            else:
                next_at = now + self.delays[tries - 1]
                outcomes.append(CallbackOutcome(job.id, job.attempt, "retry", next_at=next_at, error=p.error))
                self.retried += 1
                self.observe("retry", p.seconds)
                if endpoint.failures == 1:
                    log.info("callbacks of %s paused: %s (%s)", job.product, p.error, redact_url(job.url or "-"))
        if outcomes:
            self.ledger.record_callback_outcomes(outcomes, now)
            self._unrecorded = []

    # --- workers ---------------------------------------------------------
    def _work_loop(self) -> None:
        connections: dict[tuple[str, str, int], http.client.HTTPConnection] = {}
        while (job := self._work.get()) is not None:
            started = time.monotonic()
            if self._should_release(job):
                self._done.put(_Posted(job, False, None, 0.0, released=True))
            else:
                ok, error = self._post(job, connections)
                self._done.put(_Posted(job, ok, error, time.monotonic() - started))
            self._wake.set()
        for conn in connections.values():
            conn.close()

    def _should_release(self, job: CallbackJob) -> bool:
        if self._stopping.is_set():
            return True
        endpoint = self._endpoints.get(job.product)
        now = time.time()
        if endpoint is not None and endpoint.failures and endpoint.paused_until > now:
            return True  # paused while this one waited its turn
        return job.lease_until - now < self.timeout + 1.0

    def _post(self, job: CallbackJob, connections: dict[tuple[str, str, int], http.client.HTTPConnection]) -> tuple[bool, str | None]:
        if not job.url:
            return False, "the product has no callback URL any more"
        try:
            parts = urlsplit(job.url)
            scheme = parts.scheme.lower()
            if scheme not in ("http", "https") or not parts.hostname:
                return False, f"callback URL {redact_url(job.url)} is not an http(s) URL"
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            return False, f"callback URL is not valid: {exc}"
        body = urlencode(job.fields).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": f"ftpbatch/{__version__}",
        }
        user = job.user if job.user is not None else parts.username
        password = job.password if job.user is not None else parts.password
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (scheme, parts.hostname, port)
        for fresh in (False, True):
            conn = connections.get(key)
            reused = conn is not None and not fresh
            if conn is None or fresh:
                if conn is not None:
                    conn.close()
                conn = connections[key] = self._connect(scheme, parts.hostname, port)
            try:
                status = self._send(conn, target, body, headers)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                connections.pop(key, None)
                if reused:
                    continue  # the receiver closed an idle kept-alive connection: once more on a new one
                return False, _describe(exc, self.timeout)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                connections.pop(key, None)
                return False, _describe(exc, self.timeout)
            if 200 <= status < 300:
                return True, None
            return False, f"HTTP {status} from the callback URL"
        return False, "connection closed by the receiver"

    def _connect(self, scheme: str, host: str, port: int) -> http.client.HTTPConnection:
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._ssl)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _send(self, conn: http.client.HTTPConnection, target: str, body: bytes, headers: dict[str, str]) -> int:
        key = threading.get_ident()
        with self._deadlines.lock:
            self._deadlines.open[key] = (time.time() + self.timeout, conn)
        failure: BaseException | None = None
        try:
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            response.read(_MAX_BODY)
            if not response.isclosed():
                conn.close()  # a long answer: not worth reading to the end to keep the connection
        except BaseException as exc:
            failure = exc
        with self._deadlines.lock:
            self._deadlines.open.pop(key, None)
            was_cut = key in self._deadlines.cut
            self._deadlines.cut.discard(key)
        if was_cut:  # whatever came back, it came past the deadline: not a delivery, and no quick second try
            raise TimeoutError("cut at the deadline") from failure
        if failure is not None:
            raise failure
        return response.status


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
