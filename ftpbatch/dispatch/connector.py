"""The seam between the dispatcher and an upstream SMS centre (DESIGN.md §9).

A connector is handed messages the dispatcher has leased from the ledger and
reports back, asynchronously, through :class:`ConnectorEvents`:

* ``submitted`` once per handed message, with the upstream id or an error;
* ``receipts`` for delivery receipts, keyed by (``account``, upstream id) and
  *not* by anything the connector remembers: the ledger owns that map
  (DESIGN.md §12.3), so a receipt that overtakes its submit response, or
  arrives after a restart, still finds its message.

Connectors never touch the ledger. They may call the event methods from any
thread; the dispatcher queues the events and writes them in bulk.
"""

from __future__ import annotations

import abc
from typing import Protocol, Sequence

from ..models import OutboundMessage, Receipt, SubmitResult

__all__ = ["Connector", "ConnectorEvents", "OutboundMessage", "Receipt", "SubmitResult"]


class ConnectorEvents(Protocol):
    def submitted(self, results: Sequence[SubmitResult]) -> None: ...

    def receipts(self, receipts: Sequence[Receipt]) -> None: ...

    def connection_state(self, up: bool, detail: str) -> None: ...


class Connector(abc.ABC):
    """An upstream route. Subclasses: ``SimConnector``, the SMPP connector."""

    #: Identifies the upstream account; upstream ids are unique per account.
    account: str
    #: How many submits may be outstanding (sent, not yet answered).
    window: int = 10
    #: Messages per second this connector may send; ``None``: unlimited.
    tps: float | None = None

    @abc.abstractmethod
    def start(self, events: ConnectorEvents) -> None:
        """Connect (in the background) and start reporting to ``events``."""

    @abc.abstractmethod
    def submit(self, messages: Sequence[OutboundMessage]) -> None:
        """Hand messages over for sending.

        May block while the window is full, never for longer than it takes
        outstanding submits to be answered or time out. Every message handed
        over gets exactly one ``SubmitResult`` through ``events.submitted``
        (possibly ``retry=True``).
        """

    @property
    @abc.abstractmethod
    def is_up(self) -> bool:
        """True while the connector can accept submits."""

    @abc.abstractmethod
    def stop(self, timeout: float = 5.0) -> None:
        """Stop sending, answer or retry what is outstanding, disconnect."""
