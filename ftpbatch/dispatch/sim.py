"""The built-in simulated SMSC: the default connector, so ftpbatch runs with no upstream.

It accepts every submit at once, answers with a fresh upstream id, and sends
a delivery receipt after ``receipt_delay`` seconds: ``004`` delivered, or
``007`` undeliverable for a ``failure_ratio`` share of messages.
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
import secrets
import threading
import time
from typing import Sequence
from urllib.parse import parse_qs, urlsplit

from .. import codes
from ..errors import ConfigError
from ..models import AcceptedRun, ReceiptRun
from .connector import Connector, ConnectorEvents, OutboundMessage, Receipt, SubmitResult


#: submit calls of at least this many messages are answered on the simulator's thread
_ANSWER_ELSEWHERE = 1000


def _one_run(messages: Sequence[OutboundMessage]) -> bool:
    """Consecutive message ids, all at one attempt: what one lease from a block hands over."""
    first, attempt = messages[0].message_id, messages[0].attempt
    return all(m.message_id == first + k and m.attempt == attempt for k, m in enumerate(messages))


class SimConnector(Connector):
    def __init__(
        self,
        receipt_delay: float = 0.2,
        failure_ratio: float = 0.0,
        window: int = 5000,
        tps: float | None = None,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= failure_ratio <= 1.0:
            raise ConfigError(f"sim failure_ratio must be between 0 and 1, not {failure_ratio}")
        self.account = "sim"
        self.window = window
        self.tps = tps
        self.receipt_delay = receipt_delay
        self.failure_ratio = failure_ratio
        self._random = random.Random(seed)
        # Upstream ids must never repeat across restarts: the ledger keys
        # receipts by (account, upstream id).
        self._id_prefix = f"{int(time.time()):x}{secrets.token_hex(2)}"
        # Counted from 10**11, so every id has as many digits: a run of them is then a
        # range of the ledger's upstream-id index (models.ReceiptRun).
        self._next_id = 10**11
        self._events: ConnectorEvents | None = None
        self._pending: list[tuple[float, int, Sequence[Receipt]]] = []
        # submit calls not answered yet: (receipts due at, messages)
        self._submitted: list[tuple[float, Sequence[OutboundMessage]]] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @classmethod
    def from_url(cls, url: str) -> "SimConnector":
        """``sim`` or ``sim://?receipt_delay=0.2&failure_ratio=0.1&tps=100&window=5000&seed=1``.

        The window is a message block (ledger/blocks.py): nothing limits a
        simulated SMSC, and each lease, answer and receipt write costs per
        call as well as per message (a 1M-row ``process``: 50 -> 43 CPU s
        from window 200 to 5000)."""
        query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
        known = {"receipt_delay", "failure_ratio", "tps", "window", "seed"}
        unknown = set(query) - known
        if unknown:
            raise ConfigError(f"unknown sim connector option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        try:
            return cls(
                receipt_delay=float(query.get("receipt_delay", 0.2)),
                failure_ratio=float(query.get("failure_ratio", 0.0)),
                window=int(query.get("window", 5000)),
                tps=float(query["tps"]) if "tps" in query else None,
                seed=int(query["seed"]) if "seed" in query else None,
            )
        except ValueError as exc:
            raise ConfigError(f"bad sim connector option in {url!r}: {exc}") from None

    def start(self, events: ConnectorEvents) -> None:
        self._events = events
        self._thread = threading.Thread(target=self._deliver_receipts, name="sim-receipts", daemon=True)
        self._thread.start()
        events.connection_state(True, "simulated SMSC ready")

    @property
    def is_up(self) -> bool:
        return self._events is not None and not self._stopping

    def submit(self, messages: Sequence[OutboundMessage]) -> None:
        assert self._events is not None, "start() first"
        if self._stopping:  # the contract: after stop, everything comes straight back for retry
            self._events.submitted([SubmitResult(m.message_id, m.attempt, error_text="connector stopped", retry=True)
                                    for m in messages])
            return
        if not messages:
            return
        due = time.monotonic() + self.receipt_delay
        if len(messages) < _ANSWER_ELSEWHERE:
            self._answer(due, messages)  # a few: at once, no thread hop before the first answer
            with self._cond:
                self._cond.notify()
            return
        # Many are answered on the simulator's own thread, not the caller's: the
        # caller is the dispatcher's sink, the one thread every ledger write waits
        # for, and making a million answers and receipts there kept it from
        # writing (a million-row process: 4.6 of its 35 busy seconds).
        with self._cond:
            self._submitted.append((due, messages))
            self._cond.notify()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _answer(self, due: float, messages: Sequence[OutboundMessage]) -> None:
        """Accept a submit call's messages: their answers now, their receipts at ``due`` (in bulk:
        one clock reading, one id prefix and one heap entry per call, not per message)."""
        assert self._events is not None
        with self._cond:  # answered on two threads (see submit): the ids of a call are one block
            first = self._next_id
            self._next_id += len(messages)
        prefix = f"{self._id_prefix}-"
        size = len(messages)
        results: Sequence[SubmitResult]
        if _one_run(messages):  # one lease's window: answered as one run, applied in bulk (models.AcceptedRun)
            results = AcceptedRun(messages[0].message_id, size, messages[0].attempt, prefix, first)
        else:
            results = [SubmitResult(m.message_id, m.attempt, f"{prefix}{n}") for n, m in enumerate(messages, first)]
        now = dt.datetime.now(dt.timezone.utc)
        account = self.account
        receipts: Sequence[Receipt]
        if self.failure_ratio > 0:
            draws = [self._random.random() < self.failure_ratio for _ in range(size)]
            receipts = [
                Receipt(account, f"{prefix}{n}", codes.UNDELIVERABLE, now, "simulated failure") if failed
                else Receipt(account, f"{prefix}{n}", codes.DELIVERED, now)
                for n, failed in enumerate(draws, first)
            ]
        elif ReceiptRun.can_number(first, size):  # all delivered: one run (models.ReceiptRun)
            receipts = ReceiptRun(account, prefix, first, size, codes.DELIVERED, now)
        else:
            receipts = [Receipt(account, f"{prefix}{n}", codes.DELIVERED, now) for n in range(first, first + size)]
        self._events.submitted(results)
        with self._cond:
            heapq.heappush(self._pending, (due, first, receipts))

    def _deliver_receipts(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._submitted and (
                        not self._pending or self._pending[0][0] > time.monotonic()):
                    wait = self._pending[0][0] - time.monotonic() if self._pending else None
                    self._cond.wait(wait)
                submitted, self._submitted = self._submitted, []
            if self._stopping:
                # handed over but not answered: back for retry, as the contract says
                if self._events is not None:
                    for _, messages in submitted:
                        self._events.submitted([SubmitResult(m.message_id, m.attempt, error_text="connector stopped",
                                                             retry=True) for m in messages])
                return  # undelivered receipts: the receipt timeout covers them
            for due, messages in submitted:
                self._answer(due, messages)
            with self._cond:
                now = time.monotonic()
                ripe: list[Sequence[Receipt]] = []
                while self._pending and self._pending[0][0] <= now:
                    ripe.append(heapq.heappop(self._pending)[2])
            if ripe and self._events is not None:
                for run in ripe:
                    if isinstance(run, ReceiptRun):
                        self._events.receipts(run)  # whole: the ledger applies it in bulk
                singles = [r for part in ripe if not isinstance(part, ReceiptRun) for r in part]
                if singles:
                    self._events.receipts(singles)
