"""The one lifecycle every background part of a gateway has.

A :class:`Service` has a name, starts, stops, and says whether it is healthy
(for a thread-backed service: its threads are alive). The gateway keeps its
services in one ordered list, starts them front to back and stops them back
to front; ``/healthz`` and ``ftpbatch status`` report each by name. This
module sits at the bottom of the package and imports nothing from it.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable, Protocol, runtime_checkable


@runtime_checkable
class Service(Protocol):
    @property
    def name(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    @property
    def healthy(self) -> bool: ...


@runtime_checkable
class Describes(Protocol):
    """A service that has more to say about itself than up or down (sessions, address, ...)."""

    def details(self) -> dict[str, Any]: ...


def all_alive(threads: Iterable[threading.Thread | None]) -> bool:
    """True when there is at least one thread and every one is alive (a started, unbroken service)."""
    seen = False
    for thread in threads:
        if thread is None or not thread.is_alive():
            return False
        seen = True
    return seen
