"""Run a producer one step ahead on a thread of its own.

Parsing and the rules (pandas, mostly GIL-free) overlap with the ledger
insert of the previous chunk (SQLite, GIL-free while it steps), so a big
file costs about the slower of the two instead of their sum. At most
``depth`` items wait in between, which keeps memory bounded.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(items: Iterable[T], depth: int = 2, name: str = "read-ahead") -> Iterator[T]:
    """Yield ``items`` in order while a thread produces the next ones.

    An exception in the producer is raised here, at the point its item
    would have come. Abandoning the iterator stops the producer at its next
    item.
    """
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    abandoned = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not abandoned.is_set():
                    try:
                        handoff.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if abandoned.is_set():
                    return
            handoff.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            handoff.put(_Failure(exc))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]  # neither sentinel nor failure here, so a chunk
    finally:
        abandoned.set()
        thread.join(timeout=5)
