"""Plain records the ledger hands out: no SQL, no behaviour, safe to import from any room."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


class OptOut(NamedTuple):
    """A number a product must not send to: since when, and how it got on the list."""

    number: str  # E.164 digits, no '+'
    since: float
    source: str  # ftp | cli | stop-reply


class AddressBan(NamedTuple):
    address: str
    banned_until: float
    failures: int
    reason: str
    created_at: float


@dataclass(frozen=True)
class StatusTally:
    status: str
    sent: bool  # leased for sending at least once (so not rejected at intake)
    messages: int
    parts: int
    receipt_timeouts: int
    possible_duplicates: int


@dataclass(frozen=True)
class CallbackJob:
    """One claimed callback, with everything needed to POST it."""

    id: int
    attempt: int
    tries: int  # POSTs made before this one
    product: str
    url: str | None  # None: the product's callback URL was removed meanwhile
    user: str | None
    password: str | None
    lease_until: float
    fields: dict[str, str]


@dataclass(frozen=True)
class CallbackOutcome:
    """What became of one claimed callback.

    ``kind`` is ``delivered``, ``retry`` (again at ``next_at``), ``failed``
    (given up) or ``released`` (not posted: back to the queue untouched).
    """

    id: int
    attempt: int
    kind: str
    next_at: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class CallbackBacklog:
    pending: int  # waiting for a first try or a retry
    due: int  # of those, due now
    delivered: int  # since the ledger was created
    given_up: int


@dataclass(frozen=True)
class UsageCount:
    day: int | None  # days since 1970-01-01 (UTC), when grouped by day
    product: str | None  # when grouped by product
    messages: int
    parts: int
    delivered: int
    failed: int
    rejected: int


@dataclass(frozen=True)
class NodeState:
    """One gateway node as the ledger knows it (table ``nodes``, ledger/nodes.py)."""

    node_id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    #: the node's [dispatch] lease_seconds: a heartbeat older than this, and the node is down
    lease_seconds: float
    ftp_address: str
    binds: int
    leases: int
    stopped_at: float | None
    #: more of what the node holds (other leases, jobs), as its heartbeat last said
    detail: dict[str, Any] = field(default_factory=dict)

    def heartbeat_age(self, now: float) -> float:
        return max(0.0, now - self.heartbeat_at)

    def state(self, now: float) -> str:
        """``up``; ``stopped`` (stopped cleanly); ``down``: no heartbeat for longer than its leases last."""
        if self.stopped_at is not None:
            return "stopped"
        return "down" if self.heartbeat_age(now) > self.lease_seconds else "up"
