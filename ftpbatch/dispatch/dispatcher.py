"""The dispatcher: leases due messages from the ledger and feeds the connector.

Two threads:

* the *feeder* leases up to a window of messages per product (within the
  product's and the connector's throughput limits) and hands them to the
  connector;
* the *sink* receives the connector's events (from any thread) through a
  queue and writes them to the ledger in bulk, so that thousands of answers
  a second cost a few transactions, not thousands.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Sequence

from ..ledger import Ledger
from ..models import Product
from ..throttle import TokenBucket
from ..models import Receipt, SubmitResult
from .connector import Connector

log = logging.getLogger(__name__)

# How long the sink gathers events before one ledger write: a flood of
# answers becomes one transaction. Answers hold in-flight slots until they
# are written, so shorter is faster while each write stays cheap (a
# statement per 2,000 rows): 2 ms beat 5 ms by ~3 % in bench/dispatch.py.
_SINK_GATHER_SECONDS = 0.002
_SINK_MAX_EVENTS = 5000
_PRODUCTS_REFRESH_SECONDS = 1.0
_RECEIPT_SWEEP_SECONDS = 1.0


class Dispatcher:
    def __init__(
        self,
        ledger: Ledger,
        connector: Connector,
        node_id: str,
        *,
        lease_seconds: float = 60.0,
        connector_tps: float = 0.0,
        on_change: Callable[[], None] = lambda: None,
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

    # --- ConnectorEvents -----------------------------------------------
    def submitted(self, results: Sequence[SubmitResult]) -> None:
        self._events.put(("results", list(results)))

    def receipts(self, receipts: Sequence[Receipt]) -> None:
        self._events.put(("receipts", list(receipts)))

    def connection_state(self, up: bool, detail: str) -> None:
        self.connector_up = up
        self.connector_detail = detail
        log.info("connector %s: %s", "up" if up else "down", detail)
        if up:
            self._wake.set()

    # --- lifecycle -----------------------------------------------------
    def start(self) -> None:
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
        last_sweep = 0.0
        while not self._stopping.is_set():
            try:
                now = time.time()
                if now - last_sweep >= _RECEIPT_SWEEP_SECONDS:
                    last_sweep = now
                    if self.ledger.time_out_receipts(now):
                        self.on_change()
                with self._feeding:
                    sent = self._feed_once(now) if self.connector.is_up else 0
            except Exception:  # keep dispatching whatever one round hit
                log.exception("dispatch round failed; retrying")
                sent = 0
            if not sent:
                self._wake.wait(self._idle_wait())
                self._wake.clear()

    def _idle_wait(self) -> float:
        wait = 0.5
        if not self.connector_bucket.unlimited:
            wait = min(wait, max(0.01, self.connector_bucket.wait_time()))
        return wait

    def _feed_once(self, now: float) -> int:
        sent = 0
        for product in self._active_products(now):
            bucket = self._bucket_for(product)
            room = self.max_in_flight - self._in_flight
            if room <= 0:
                break
            allowance = min(self.connector.window, room, self.connector_bucket.available(), bucket.available())
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
                break
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
        receipts: list[Receipt] = []
        for kind, payload in batch:
            if kind == "results":
                results.extend(payload)  # type: ignore[arg-type]
            elif kind == "receipts":
                receipts.extend(payload)  # type: ignore[arg-type]
        recorded = len(results)
        delay = 0.1
        while True:
            try:
                # one transaction, answers first: a receipt in the same gather finds its message
                parked = self.ledger.record_answers(self.connector.account, results, receipts)
                if parked:
                    self.unmatched_receipts += parked
                    log.info("%d receipt(s) arrived before their submit answer; parked in the ledger", parked)
                break
            except Exception:
                # Answers are only in memory here: keep trying rather than drop
                # them (if the process dies meanwhile, leases expire and the
                # messages are re-sent, flagged possible duplicates).
                log.exception("could not record %d result(s) and %d receipt(s); retrying", len(results), len(receipts))
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        if recorded:
            with self._in_flight_lock:
                self._in_flight -= recorded
            self._refill()
        self.on_change()

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
