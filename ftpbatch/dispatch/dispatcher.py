"""The dispatcher: leases due messages from the ledger and feeds the connector.

Two threads:

* the *feeder* leases up to a window of messages per product (within the
  product's and the connector's throughput limits) and hands them to the
  connector;
* the *sink* receives the connector's events (from any thread) through a
  queue and writes them to the ledger in bulk, so that thousands of answers
  a second cost a few transactions, not thousands. Receipts and MO messages
  are acknowledged to the connector (``ack``) only after the transaction
  that stored them committed: an SMSC re-delivers what was not acknowledged,
  so a crash loses none of them.

The feeder also asks the connector about overdue receipts (query_sm, when
the connector can): messages at ``003`` longer than ``receipt_query_after``
seconds, and at start-up every message submitted before it; final answers
are applied like receipts.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from typing import Any, Callable, Sequence, cast

from ..ledger.protocol import DispatchLedger
from ..lifecycle import all_alive
from ..models import AcceptedRun, MoMessage, Product, QueryOutcome, Receipt, ReceiptRun, SubmitResult
from ..throttle import TokenBucket
from .connector import Ack, Connector

log = logging.getLogger(__name__)

# How long the sink gathers events before one ledger write: a flood of
# answers becomes one transaction. Answers hold in-flight slots until they
# are written, so shorter is faster while each write stays cheap (a
# statement per 2,000 rows): 2 ms beat 5 ms by ~3 % in bench/dispatch.py.
_SINK_GATHER_SECONDS = 0.002
_SINK_MAX_EVENTS = 5000
_PRODUCTS_REFRESH_SECONDS = 1.0
_RECEIPT_SWEEP_SECONDS = 1.0
#: how often the ledger is asked for overdue receipts to query, and at most how many at once
_QUERY_SWEEP_SECONDS = 1.0
_QUERY_BATCH = 500
#: how often parked receipts (no message matched yet) are tried again
_PARKED_SWEEP_SECONDS = 30.0

MoListener = Callable[[Sequence[MoMessage]], None]


class Dispatcher:
    def __init__(
        self,
        ledger: DispatchLedger,
        connector: Connector,
        node_id: str,
        *,
        lease_seconds: float = 60.0,
        connector_tps: float = 0.0,
        on_change: Callable[[], None] = lambda: None,
        receipt_query_after: float = 300.0,
        parked_receipt_expiry: float = 3600.0,
    ) -> None:
        self.ledger = ledger
        self.connector = connector
        self.node_id = node_id
        self.lease_seconds = lease_seconds
        self.on_change = on_change
        self.connector_bucket = TokenBucket(connector_tps or connector.tps)
        self._product_buckets: dict[str, TokenBucket] = {}
        self._products: list[Product] = []
        self._products_at = 0.0
        self._events: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._wake = threading.Event()
        # Held while leasing: by the feeder, or by the sink right after a write freed room.
        self._feeding = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # Leased messages whose answer is not in the ledger yet. Capped so that
        # a crash can only leave this many in doubt (re-sent after restart,
        # flagged possible duplicates): the window, plus one window being handed over.
        self.max_in_flight = 2 * connector.window
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self.connector_up = False
        self.connector_detail = "not started"
        self.unmatched_receipts = 0
        #: seconds at 003 after which a message's receipt is asked for with query_sm (0: never)
        self.receipt_query_after = receipt_query_after
        #: seconds a receipt matching no message stays parked before it counts as never matched
        self.parked_receipt_expiry = parked_receipt_expiry
        #: messages submitted before this moment (the previous process) are queried at once
        self.started_at = time.time()
        self._mo_listeners: list[MoListener] = []

    @property
    def in_flight(self) -> int:
        """Messages this node holds leased whose answer is not in the ledger yet."""
        return self._in_flight

    def add_mo_listener(self, listener: MoListener) -> None:
        """Call ``listener(messages)`` with every batch of MO messages, right after they are stored.

        Called on the sink thread: a listener must be quick (hand work off);
        one that raises is logged and does not stop the others. The messages
        carry their ledger id (``MoMessage.id``).
        """
        self._mo_listeners.append(listener)

    # --- ConnectorEvents -----------------------------------------------
    def submitted(self, results: Sequence[SubmitResult]) -> None:
        # a run of answers stays one (models.AcceptedRun): the ledger applies it in bulk
        self._events.put(("results", results if isinstance(results, AcceptedRun) else list(results)))

    def receipts(self, receipts: Sequence[Receipt], ack: Ack | None = None) -> None:
        self._events.put(("receipts", (receipts if isinstance(receipts, ReceiptRun) else list(receipts), ack)))

    def mo_messages(self, messages: Sequence[MoMessage], ack: Ack | None = None) -> None:
        self._events.put(("mo", (list(messages), ack)))

    def query_answers(self, outcomes: Sequence[QueryOutcome]) -> None:
        self._events.put(("queries", list(outcomes)))

    def connection_state(self, up: bool, detail: str) -> None:
        self.connector_up = up
        self.connector_detail = detail
        log.info("connector %s: %s", "up" if up else "down", detail)
        if up:
            self._wake.set()

    # --- lifecycle -----------------------------------------------------
    name = "dispatcher"

    @property
    def healthy(self) -> bool:
        """Both the feeder and the sink run (the connector's own state is reported apart)."""
        return all_alive(self._threads)

    def start(self) -> None:
        self.started_at = time.time()
        resumed = self.ledger.expire_leases_of(self.node_id)
        if resumed:
            log.warning("resuming %d message(s) in flight when this node last stopped; flagged possible duplicates", resumed)
        self.connector.start(self)
        for target, name in ((self._sink, "dispatch-sink"), (self._feed, "dispatch-feeder")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """New messages are in the ledger: look now rather than at the next tick."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop leasing, let the connector answer what is in flight, flush the sink."""
        self._stopping.set()
        self._wake.set()
        sink, feeder = self._threads or (None, None)
        if feeder is not None:
            feeder.join(timeout)
        self.connector.stop(timeout)
        self._events.put(("stop", None))
        if sink is not None:
            sink.join(timeout)

    # --- feeder --------------------------------------------------------
    def _feed(self) -> None:
        last_sweep = last_query = last_parked = 0.0
        while not self._stopping.is_set():
            try:
                now = time.time()
                if now - last_sweep >= _RECEIPT_SWEEP_SECONDS:
                    last_sweep = now
                    if self.ledger.time_out_receipts(now):
                        self.on_change()
                if now - last_query >= _QUERY_SWEEP_SECONDS:
                    last_query = now
                    self._query_overdue(now)
                if now - last_parked >= _PARKED_SWEEP_SECONDS:
                    last_parked = now
                    applied, expired = self.ledger.inbound.retry_parked(now, self.parked_receipt_expiry)
                    if expired:
                        log.warning("%d receipt(s) matched no message within %gs; counted as never matched",
                                    expired, self.parked_receipt_expiry)
                    if applied:
                        self.on_change()
                with self._feeding:
                    sent = self._feed_once(now) if self.connector.is_up else 0
            except Exception:  # keep dispatching whatever one round hit
                log.exception("dispatch round failed; retrying")
                sent = 0
            if not sent:
                self._wake.wait(self._idle_wait())
                self._wake.clear()

    def _query_overdue(self, now: float) -> None:
        """Hand the connector the messages whose receipt is overdue (query_sm)."""
        connector = self.connector
        if not connector.can_query or not self.receipt_query_after or not connector.is_up:
            return
        requests = self.ledger.inbound.due_queries(
            connector.account, now, max(now - self.receipt_query_after, self.started_at),
            self.ledger.receipt_timeout, self.receipt_query_after, _QUERY_BATCH)
        if requests:
            log.info("asking the SMSC about %d overdue receipt(s) with query_sm", len(requests))
            connector.query(requests)

    def _idle_wait(self) -> float:
        wait = 0.5
        if not self.connector_bucket.unlimited:
            wait = min(wait, max(0.01, self.connector_bucket.wait_time()))
        return wait

    def _feed_once(self, now: float) -> int:
        """Lease into all the room there is, a window at a time, the products taking turns.

        The room is two windows (``max_in_flight``): one on the wire and one
        handed over, ready to go the moment the first one's answers come. One
        lease per product per round left only one window in flight (each
        window's answers waited for the next lease: 6.9k msg/s at window 50
        against a fast SMSC, 5.7 ms a round trip of 50).

        A product whose lease took all the tokens its throughput limit had
        gets no other turn in this round: the tokens that trickle in while the
        round goes on are a message or two each time, and leasing them one
        turn after another kept this call going until the room was full (two
        seconds of room at 5,000 msg/s). When the sink refills, that held every
        answer and receipt in its queue, so a batch's counts moved in jumps.
        The feeder comes back when the next tokens are due (``_idle_wait``).
        """
        sent = 0
        turns = self._active_products(now)
        while turns:
            next_turn: list[Product] = []
            for product in turns:
                bucket = self._bucket_for(product)
                room = self.max_in_flight - self._in_flight
                if room <= 0:
                    return sent
                tokens = min(self.connector_bucket.available(), bucket.available())
                allowance = min(self.connector.window, room, tokens)
                if allowance <= 0:
                    continue
                messages = self.ledger.lease(self.node_id, product.name, allowance, now, self.lease_seconds)
                if not messages:
                    continue
                with self._in_flight_lock:
                    self._in_flight += len(messages)
                self.connector_bucket.take(len(messages))
                bucket.take(len(messages))
                self.connector.submit(messages)
                sent += len(messages)
                if self._stopping.is_set():
                    return sent
                if len(messages) == allowance and allowance < tokens:
                    next_turn.append(product)  # a whole window, and tokens for more
            turns = next_turn
        return sent

    def _active_products(self, now: float) -> list[Product]:
        if now - self._products_at > _PRODUCTS_REFRESH_SECONDS:
            self._products = self.ledger.list_products()
            self._products_at = now
        return self._products

    def _bucket_for(self, product: Product) -> TokenBucket:
        bucket = self._product_buckets.get(product.name)
        if bucket is None or bucket.rate != float(product.tps or 0.0):
            bucket = self._product_buckets[product.name] = TokenBucket(product.tps)
        return bucket

    # --- sink ----------------------------------------------------------
    def _sink(self) -> None:
        while True:
            kind, payload = self._events.get()
            batch: list[tuple[str, object]] = [(kind, payload)]
            deadline = time.monotonic() + _SINK_GATHER_SECONDS
            while len(batch) < _SINK_MAX_EVENTS:
                remaining = deadline - time.monotonic()
                try:
                    batch.append(self._events.get(timeout=max(0.0, remaining)) if remaining > 0 else self._events.get_nowait())
                except queue.Empty:
                    break
            stop = any(k == "stop" for k, _ in batch)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[tuple[str, object]]) -> None:
        results: list[SubmitResult] = []
        runs: list[AcceptedRun] = []
        receipts: list[Receipt] = []
        receipt_runs: list[ReceiptRun] = []
        mo: list[MoMessage] = []
        outcomes: list[QueryOutcome] = []
        acks: list[Ack] = []
        for kind, payload in batch:
            if kind == "results":
                if isinstance(payload, AcceptedRun):
                    runs.append(payload)
                else:
                    results.extend(cast("list[SubmitResult]", payload))
            elif kind in ("receipts", "mo"):
                items, ack = cast("tuple[list[Any], Ack | None]", payload)
                if isinstance(items, ReceiptRun):
                    receipt_runs.append(items)
                else:
                    (receipts if kind == "receipts" else mo).extend(items)
                if ack is not None:
                    acks.append(ack)
            elif kind == "queries":
                outcomes.extend(cast("list[QueryOutcome]", payload))
        # a final query answer is a receipt the SMSC did not send (or we lost)
        receipts += [Receipt(o.account, o.upstream_id, o.status, _now_utc(), None if o.status == "004" else o.detail)
                     for o in outcomes if o.status is not None]
        recorded = len(results) + sum(len(run) for run in runs)
        received = len(receipts) + sum(len(run) for run in receipt_runs)
        stored_mo = self._retrying("record %d result(s) and %d receipt(s)" % (recorded, received),
                                   lambda: self._record(results, runs, receipts, receipt_runs, mo, outcomes))
        # Only now, with everything committed, may the SMSC forget what it sent us.
        for ack in acks:
            try:
                ack()
            except Exception:
                log.exception("acknowledging stored receipts failed; the SMSC will deliver them again")
        if stored_mo:
            self._tell_mo_listeners(stored_mo)
        if recorded:
            with self._in_flight_lock:
                self._in_flight -= recorded
            self._refill()
        self.on_change()

    def _record(self, results: list[SubmitResult], runs: list[AcceptedRun], receipts: list[Receipt],
                receipt_runs: list[ReceiptRun], mo: list[MoMessage], outcomes: list[QueryOutcome]) -> list[MoMessage]:
        # one transaction, answers first: a receipt in the same gather finds its message
        parked = self.ledger.record_answers(self.connector.account, results, receipts, runs, receipt_runs)
        if parked:
            self.unmatched_receipts += parked
            log.info("%d receipt(s) arrived before their submit answer; parked in the ledger", parked)
        if outcomes:
            account = self.connector.account
            newly_refused = any(o.refused for o in outcomes) and not self.ledger.inbound.query_refused(account)
            self.ledger.inbound.note_query_outcomes(outcomes)
            if newly_refused:
                log.warning("the SMSC refuses query_sm: overdue receipts are no longer asked for; "
                            "they stay at 003 until receipt_timeout")
        return self.ledger.inbound.store_mo(mo) if mo else []

    def _retrying(self, what: str, write: Callable[[], list[MoMessage]]) -> list[MoMessage]:
        """Run ``write`` until it succeeds.

        Answers are only in memory here: keep trying rather than drop them (if
        the process dies meanwhile, leases expire and the messages are
        re-sent, flagged possible duplicates; receipts and MO, never
        acknowledged, are delivered again by the SMSC).
        """
        delay = 0.1
        while True:
            try:
                return write()
            except Exception:
                log.exception("could not %s; retrying", what)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _tell_mo_listeners(self, messages: list[MoMessage]) -> None:
        for listener in self._mo_listeners:
            try:
                listener(messages)
            except Exception:
                log.exception("MO listener %r failed for %d message(s)", listener, len(messages))

    def _refill(self) -> None:
        """Lease into the room the answers just freed, from this thread.

        Waking the feeder instead costs a thread switch, and the GIL trade
        with it, on every write, while the window waits for the next lease.
        If the feeder is leasing right now, it sees the room itself.
        """
        if not self._feeding.acquire(blocking=False):
            self._wake.set()
            return
        try:
            if self.connector.is_up and not self._stopping.is_set():
                self._feed_once(time.time())
        except Exception:
            log.exception("dispatch round after a write failed; the feeder retries")
            self._wake.set()
        finally:
            self._feeding.release()


def _now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
