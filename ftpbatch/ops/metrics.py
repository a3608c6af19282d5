"""Prometheus metrics of a running gateway.

* :class:`Metrics` holds the counters and histograms of what happens in this
  process (submits, receipts, callbacks, FTP logins) plus collectors that
  read totals from the ledger at scrape time (uploads, batches by state,
  messages by status, queue depth, callback backlog), so those survive
  restarts and include work done by ``ftpbatch process``.
* :class:`MeteredConnector` wraps the connector to time submits and
  receipts without touching the dispatcher.
* :class:`GatewayCollector` exposes each service's state, read through the
  :class:`~ftpbatch.ops.health.GatewayView` protocol.

FTP logins are counted by :meth:`Metrics.ftp_login`, which the gateway hands
to the FTP server as the handler context's ``on_login`` hook; SFTP logins by
:meth:`Metrics.sftp_login`, handed to the SFTP server the same way. Both also
count in ``ftpbatch_logins{protocol=…}``.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from ..dispatch.connector import Ack, Connector, ConnectorEvents, OutboundMessage, Receipt, SubmitResult
from ..ledger import Ledger
from ..models import AcceptedRun, MoMessage, QueryOutcome, QueryRequest, ReceiptRun
from .health import GatewayView

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_RECEIPT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)


class BatchedHistogram:
    """A Prometheus histogram for values that come by the thousand a second.

    prometheus_client's ``Histogram.observe`` takes a lock and walks the
    buckets for every value: on the connector's loop, two of them per message
    were a few percent of its time. Here values are only queued (one list
    extend per batch of answers) and bucketed with numpy when scraped, or
    when ``fold_at`` of them wait. Exposed like a Histogram: ``_bucket``,
    ``_count``, ``_sum``.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry,
                 fold_at: int = 10_000) -> None:
        self.name = name
        self.documentation = documentation
        self.fold_at = fold_at
        self._upper = np.array(buckets, dtype=float)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last one is +Inf
        self._sum = 0.0
        self._pending: list[float] = []
        self._lock = threading.Lock()
        registry.register(self)

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    def observe_many(self, values: Sequence[float]) -> None:
        with self._lock:
            self._pending.extend(values)
            if len(self._pending) >= self.fold_at:
                self._fold()

    def _fold(self) -> None:
        if not self._pending:
            return
        values = np.asarray(self._pending, dtype=float)
        self._pending = []
        # the first bucket whose upper bound is >= the value (Prometheus' "le")
        self._counts += np.bincount(np.searchsorted(self._upper, values, side="left"), minlength=len(self._counts))
        self._sum += float(values.sum())

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> list[Metric]:
        with self._lock:
            self._fold()
            cumulative = np.cumsum(self._counts)
            total = self._sum
        buckets = [(floatToGoString(bound), int(n)) for bound, n in zip(self._upper, cumulative[:-1])]
        buckets.append(("+Inf", int(cumulative[-1])))
        return [HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)]


class Metrics:
    def __init__(self, ledger: Ledger | None = None, *, ledger_cache_seconds: float = 2.0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.submits = Counter("ftpbatch_submits", "Submit answers from the upstream, by result (accepted, failed, retry).", ["result"], registry=r)
        self.submit_latency = BatchedHistogram(
            "ftpbatch_submit_latency_seconds", "Seconds from handing a message to the connector to its submit answer.",
            _LATENCY_BUCKETS, r,
        )
        self.receipts = Counter("ftpbatch_receipts", "Delivery receipts received, by status.", ["status"], registry=r)
        self.receipt_latency = BatchedHistogram(
            "ftpbatch_receipt_latency_seconds", "Seconds from the submit answer to the delivery receipt (receipts seen by this process).",
            _RECEIPT_BUCKETS, r,
        )
        self.callbacks = Counter("ftpbatch_callbacks", "Callback POSTs by outcome (delivered, retry, given_up).", ["result"], registry=r)
        self.callback_latency = Histogram(
            "ftpbatch_callback_seconds", "Seconds one callback POST took.", buckets=_LATENCY_BUCKETS, registry=r
        )
        for result in ("delivered", "retry", "given_up"):
            self.callbacks.labels(result)
        self.ftp_logins = Counter("ftpbatch_ftp_logins", "FTP logins by result (ok, failed).", ["result"], registry=r)
        self.logins = Counter("ftpbatch_logins", "Logins by protocol (ftp, sftp) and result (ok, failed).", ["protocol", "result"], registry=r)
        self.mo_optouts = Counter(
            "ftpbatch_mo_optouts", "MO messages with an opt-out keyword, by result (optout; unmatched: no product's sender).",
            ["result"], registry=r,
        )
        for result in ("optout", "unmatched"):
            self.mo_optouts.labels(result)
        if ledger is not None:
            r.register(LedgerCollector(ledger, ledger_cache_seconds))

    def ftp_login(self, result: str) -> None:
        """Count one FTP login: ``ok`` or ``failed`` (cheap: safe on the FTP loop)."""
        self.ftp_logins.labels(result).inc()
        self.logins.labels("ftp", result).inc()

    def sftp_login(self, result: str) -> None:
        """Count one SFTP login: ``ok`` or ``failed`` (from the SFTP loop)."""
        self.logins.labels("sftp", result).inc()

    def mo_optout(self, result: str) -> None:
        """Count one STOP reply: ``optout`` or ``unmatched`` (from the dispatch sink)."""
        self.mo_optouts.labels(result).inc()

    def callback_outcome(self, result: str, seconds: float) -> None:
        self.callbacks.labels(result).inc()
        self.callback_latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LedgerCollector:
    """Totals read from the ledger at scrape time (cached briefly: one is a full table scan)."""

    def __init__(self, ledger: Ledger, cache_seconds: float = 2.0) -> None:
        self.ledger = ledger
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def describe(self) -> list[Metric]:
        return []  # names vary with the data; no need to check them at registration

    def collect(self) -> list[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.cache_seconds:
                self._cached = (now, self._read())
            return self._cached[1]

    def _read(self) -> list[Metric]:
        ledger = self.ledger
        uploads = CounterMetricFamily("ftpbatch_uploads", "Files received, by product and source (ftp, local, cli, ...).", labels=["product", "source"])
        for (product, source), n in sorted(ledger.batch_source_totals().items()):
            uploads.add_metric([product, source], n)
        batches = GaugeMetricFamily("ftpbatch_batches", "Batches by product and state.", labels=["product", "state"])
        for (product, state), n in sorted(ledger.batch_state_totals().items()):
            batches.add_metric([product, state], n)
        messages = GaugeMetricFamily("ftpbatch_messages", "Messages by product and status (DESIGN.md §6 codes).", labels=["product", "status"])
        for (product, status), n in sorted(ledger.message_status_totals().items()):
            messages.add_metric([product, status], n)
        queue = GaugeMetricFamily("ftpbatch_queue_messages", "Messages waiting: queued, scheduled, awaiting_receipt.", labels=["state"])
        for state, n in ledger.queue_depth().items():
            queue.add_metric([state], n)
        backlog = ledger.callback_backlog(time.time())
        pending = GaugeMetricFamily("ftpbatch_callback_backlog", "Callbacks waiting in the outbox (due now or later).", labels=["due"])
        pending.add_metric(["now"], backlog.due)
        pending.add_metric(["later"], backlog.pending - backlog.due)
        unmatched = GaugeMetricFamily(
            "ftpbatch_receipts_unmatched", "Receipts matching no message: parked (re-tried) or never_matched (given up).",
            labels=["state"])
        for state, n in ledger.inbound.unmatched_receipts().items():
            unmatched.add_metric([state], n)
        queries = CounterMetricFamily(
            "ftpbatch_receipt_queries", "query_sm about overdue receipts: asked, final (applied), open (to ask again).",
            labels=["result"])
        for result, n in ledger.inbound.query_tally().items():
            queries.add_metric([result], n)
        return [uploads, batches, messages, queue, pending, unmatched, queries]


class GatewayCollector:
    """Component states of a running gateway."""

    def __init__(self, gateway: GatewayView) -> None:
        self.gateway = gateway

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> list[Metric]:
        g = self.gateway
        components = g.components()
        up = GaugeMetricFamily("ftpbatch_up", "1 when a component is up: every service and the connector.", labels=["component"])
        for name, state in components.items():
            up.add_metric([name], 1 if state["up"] else 0)
        ready = GaugeMetricFamily("ftpbatch_ready", "1 when the gateway is ready (what /healthz says).")
        ready.add_metric([], 1 if g.ready else 0)
        sessions = GaugeMetricFamily("ftpbatch_ftp_sessions", "Open FTP control connections.")
        sessions.add_metric([], int(components.get("ftp", {}).get("sessions", 0)))
        return [up, ready, sessions]


# --- connector timing ---------------------------------------------------------
class MeteredConnector(Connector):
    """Wraps a connector to count and time submits and receipts; everything else passes through."""

    # Submit answers remembered for receipt latency; older ones are dropped
    # (their receipts are still recorded, just not timed).
    _REMEMBER = 200_000

    def __init__(self, inner: Connector, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self._handed: dict[int, float] = {}
        self._answered: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._lock = threading.Lock()

    @property
    def account(self) -> str:  # type: ignore[override]  # a property over the protocol's attribute
        return self.inner.account

    @property
    def window(self) -> int:  # type: ignore[override]  # a property over the protocol's attribute
        return self.inner.window

    @property
    def tps(self) -> float | None:  # type: ignore[override]  # a property over the protocol's attribute
        return self.inner.tps

    @property
    def is_up(self) -> bool:
        return self.inner.is_up

    def start(self, events: ConnectorEvents) -> None:
        self.inner.start(_MeteredEvents(self, events))

    def submit(self, messages: Sequence[OutboundMessage]) -> None:
        now = time.monotonic()
        for message in messages:
            self._handed[message.message_id] = now
        self.inner.submit(messages)

    def stop(self, timeout: float = 5.0) -> None:
        self.inner.stop(timeout)

    @property
    def can_query(self) -> bool:  # type: ignore[override]  # a property over the class attribute
        return self.inner.can_query

    def query(self, requests: Sequence[QueryRequest]) -> None:
        self.inner.query(requests)

    def _submitted(self, results: Sequence[SubmitResult]) -> None:
        now = time.monotonic()
        if isinstance(results, AcceptedRun):
            self._submitted_run(results, now)
            return
        accepted = failed = retried = 0
        latencies: list[float] = []
        with self._lock:
            for r in results:
                handed = self._handed.pop(r.message_id, None)
                if handed is not None:
                    latencies.append(now - handed)
                if r.retry:
                    retried += 1
                elif r.upstream_id:
                    accepted += 1
                    self._answered[r.upstream_id] = now
                else:
                    failed += 1
            while len(self._answered) > self._REMEMBER:
                self._answered.popitem(last=False)
        self.metrics.submit_latency.observe_many(latencies)
        for result, n in (("accepted", accepted), ("failed", failed), ("retry", retried)):
            if n:
                self.metrics.submits.labels(result).inc(n)

    def _submitted_run(self, run: AcceptedRun, now: float) -> None:
        """As :meth:`_submitted`, for answers in bulk: not one SubmitResult made per message to read."""
        with self._lock:
            handed = [self._handed.pop(i, None) for i in range(run.first_id, run.last_id + 1)]
            self._answered.update(dict.fromkeys(run.upstream_ids(), now))
            while len(self._answered) > self._REMEMBER:
                self._answered.popitem(last=False)
        self.metrics.submit_latency.observe_many([now - at for at in handed if at is not None])
        self.metrics.submits.labels("accepted").inc(len(run))

    def _receipts(self, receipts: Sequence[Receipt]) -> None:
        now = time.monotonic()
        by_status: dict[str, int] = {}
        latencies: list[float] = []
        if isinstance(receipts, ReceiptRun):  # in bulk: not one Receipt made per message to read
            by_status[receipts.status] = len(receipts)
            with self._lock:
                answered_at = [self._answered.pop(u, None) for u in receipts.upstream_ids()]
            latencies = [now - at for at in answered_at if at is not None]
            receipts = ()
        with self._lock:
            for r in receipts:
                by_status[r.status] = by_status.get(r.status, 0) + 1
                answered = self._answered.pop(r.upstream_id, None)
                if answered is not None:
                    latencies.append(now - answered)
        self.metrics.receipt_latency.observe_many(latencies)
        for status, n in by_status.items():
            self.metrics.receipts.labels(status).inc(n)


class _MeteredEvents:
    def __init__(self, owner: MeteredConnector, events: ConnectorEvents) -> None:
        self.owner = owner
        self.events = events

    def submitted(self, results: Sequence[SubmitResult]) -> None:
        self.owner._submitted(results)
        self.events.submitted(results)

    def receipts(self, receipts: Sequence[Receipt], ack: Ack | None = None) -> None:
        self.owner._receipts(receipts)
        self.events.receipts(receipts, ack)

    def mo_messages(self, messages: Sequence[MoMessage], ack: Ack | None = None) -> None:
        self.events.mo_messages(messages, ack)

    def query_answers(self, outcomes: Sequence[QueryOutcome]) -> None:
        self.events.query_answers(outcomes)

    def connection_state(self, up: bool, detail: str) -> None:
        self.events.connection_state(up, detail)


