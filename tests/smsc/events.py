"""A ConnectorEvents that collects everything, for driving connectors in tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from ftpbatch.models import Receipt, SubmitResult


class CollectingEvents:
    """Thread-safe; ``wait_until`` polls a predicate on the collected state."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.results: list[SubmitResult] = []
        self.receipt_list: list[Receipt] = []
        self.states: list[tuple[bool, str]] = []
        self.calls = 0  # how many submitted() calls: results should arrive in batches

    # ConnectorEvents
    def submitted(self, results: Sequence[SubmitResult]) -> None:
        with self._cond:
            self.calls += 1
            self.results.extend(results)
            self._cond.notify_all()

    def receipts(self, receipts: Sequence[Receipt]) -> None:
        with self._cond:
            self.receipt_list.extend(receipts)
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
