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
import datetime as dt
from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One leased message, as the connector needs it."""

    message_id: int  # ledger id
    attempt: int  # lease attempt; echoed back so stale answers are ignored
    product: str
    destination: str  # E.164 digits, no '+'
    sender: str | None  # None: the SMSC's default
    text: str
    encoding: str  # "gsm7" or "ucs2" (decided by the rules stage)
    parts: int  # as counted by the rules stage
    validity_minutes: int | None = None
    reference: str | None = None  # the sender's climsgid


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The upstream's answer to one submit.

    Exactly one of ``upstream_id`` and ``error_code`` is set, unless
    ``retry`` is true: then the message goes back to the queue untouched
    (throttled, connection lost before an answer, ...).
    """

    message_id: int
    attempt: int
    upstream_id: str | None = None
    error_code: str | None = None  # a §6 code: "005", "009", "105", ...
    error_text: str | None = None
    retry: bool = False


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery receipt, correlated by the ledger, not by the connector."""

    account: str
    upstream_id: str
    status: str  # "004", "007", "010" or "005"
    at: dt.datetime
    error_text: str | None = None


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
