"""A ConnectorEvents that collects everything, for driving connectors in tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from ftpbatch.dispatch.connector import Ack
from ftpbatch.models import MoMessage, QueryOutcome, Receipt, SubmitResult


class CollectingEvents:
    """Thread-safe; ``wait_until`` polls a predicate on the collected state.

    Receipts and MO messages are acknowledged at once (``auto_ack``), as if
    stored; with ``auto_ack=False`` their acks wait in :attr:`acks`.
    """

    def __init__(self, auto_ack: bool = True) -> None:
        self._cond = threading.Condition()
        self.auto_ack = auto_ack
        self.acks: list[Ack] = []
        self.results: list[SubmitResult] = []
        self.receipt_list: list[Receipt] = []
        self.mo_list: list[MoMessage] = []
        self.outcomes: list[QueryOutcome] = []
        self.states: list[tuple[bool, str]] = []
        self.calls = 0  # how many submitted() calls: results should arrive in batches

    # ConnectorEvents
    def submitted(self, results: Sequence[SubmitResult]) -> None:
        with self._cond:
            self.calls += 1
            self.results.extend(results)
            self._cond.notify_all()

    def receipts(self, receipts: Sequence[Receipt], ack: Ack | None = None) -> None:
        with self._cond:
            self.receipt_list.extend(receipts)
            self._took(ack)

    def mo_messages(self, messages: Sequence[MoMessage], ack: Ack | None = None) -> None:
        with self._cond:
            self.mo_list.extend(messages)
            self._took(ack)

    def query_answers(self, outcomes: Sequence[QueryOutcome]) -> None:
        with self._cond:
            self.outcomes.extend(outcomes)
            self._cond.notify_all()

    def _took(self, ack: Ack | None) -> None:
        if ack is not None:
            if self.auto_ack:
                ack()
            else:
                self.acks.append(ack)
        self._cond.notify_all()

    def connection_state(self, up: bool, detail: str) -> None:
        with self._cond:
            self.states.append((up, detail))
            self._cond.notify_all()

    # helpers
    def wait_until(self, predicate: Callable[[CollectingEvents], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def by_message(self) -> dict[int, list[SubmitResult]]:
        with self._cond:
            out: dict[int, list[SubmitResult]] = {}
            for r in self.results:
                out.setdefault(r.message_id, []).append(r)
            return out

    def ok(self) -> list[SubmitResult]:
        with self._cond:
            return [r for r in self.results if r.upstream_id and not r.retry]

    def ups(self) -> list[bool]:
        with self._cond:
            return [up for up, _ in self.states]
