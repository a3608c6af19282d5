"""The seam between the dispatcher and an upstream SMS centre (DESIGN.md §9).

A connector is handed messages the dispatcher has leased from the ledger and
reports back, asynchronously, through :class:`ConnectorEvents`:

* ``submitted`` once per handed message, with the upstream id or an error;
* ``receipts`` for delivery receipts, keyed by (``account``, upstream id) and
  *not* by anything the connector remembers: the ledger owns that map
  (DESIGN.md §12.3), so a receipt that overtakes its submit response, or
  arrives after a restart, still finds its message;
* ``mo_messages`` for messages sent by handsets to us (not receipts);
* ``query_answers`` for the outcomes of :meth:`Connector.query`.

``receipts`` and ``mo_messages`` may come with an ``ack``: the receiver calls
it once the batch is stored (committed in the ledger), and only then does the
connector acknowledge them upstream. Never calling it is safe (the upstream
delivers them again after a reconnect); calling it before they are stored
is how receipts get lost.

Connectors never touch the ledger. They may call the event methods from any
thread; the dispatcher queues the events and writes them in bulk.
"""

from __future__ import annotations

import abc
from typing import Callable, Protocol, Sequence

from ..models import MoMessage, OutboundMessage, QueryOutcome, QueryRequest, Receipt, SubmitResult

__all__ = ["Ack", "BindSlots", "Connector", "ConnectorEvents", "OutboundMessage", "Receipt", "SubmitResult"]

#: called by the receiver of a batch once it is stored; thread-safe
Ack = Callable[[], None]


class ConnectorEvents(Protocol):
    # ``results`` may be a models.AcceptedRun: a run of accepted answers, read as its results one by one
    def submitted(self, results: Sequence[SubmitResult]) -> None: ...

    def receipts(self, receipts: Sequence[Receipt], ack: Ack | None = None) -> None: ...

    def mo_messages(self, messages: Sequence[MoMessage], ack: Ack | None = None) -> None: ...

    def query_answers(self, outcomes: Sequence[QueryOutcome]) -> None: ...

    def connection_state(self, up: bool, detail: str) -> None: ...


class BindSlots(Protocol):
    """The binds an account may hold across every node (dispatch/bind_slots.py); called off the loop."""

    def take(self, binds: int) -> bool: ...
    def renew(self) -> bool: ...
    def release(self) -> None: ...
    def describe(self) -> str: ...


class Connector(abc.ABC):
    """An upstream route. Subclasses: ``SimConnector``, the SMPP connector."""

    #: Identifies the upstream account; upstream ids are unique per account.
    account: str
    #: How many submits may be outstanding (sent, not yet answered).
    window: int = 10
    #: Messages per second this connector may send; ``None``: unlimited.
    tps: float | None = None
    #: Seconds the ledger waits for a receipt on this route when the route's
    #: own settings name it (it wins over ``[dispatch] receipt_timeout``); ``None``: not named.
    receipt_timeout: float | None = None
    #: Total binds of this account across nodes (``max_binds``); None: no limit (and no slots taken).
    max_binds: int | None = None
    #: Set by the gateway when ``max_binds`` is: the connector binds only while it holds slots.
    bind_slots: BindSlots | None = None

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

    def query(self, requests: Sequence[QueryRequest]) -> None:
        """Ask the upstream about messages whose receipt is overdue.

        Each request gets one outcome through ``events.query_answers``.
        Called only when :attr:`can_query` is true.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot query the upstream")

    #: False: :meth:`query` is not supported and never called
    can_query: bool = False

    @property
    @abc.abstractmethod
    def is_up(self) -> bool:
        """True while the connector can accept submits."""

    @property
    def binds(self) -> int:
        """Upstream binds (sessions) open now, what an SMSC counts per account: one link while up."""
        return 1 if self.is_up else 0

    @abc.abstractmethod
    def stop(self, timeout: float = 5.0) -> None:
        """Stop sending, answer or retry what is outstanding, disconnect."""
