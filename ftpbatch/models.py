"""Domain records shared by the stages: products, batches, and the records
that pass between the ledger and the connectors (leased messages, submit
answers, receipts). Plain records live here, at the bottom, so that the
ledger never imports a stage above it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass, field
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar, overload

from .errors import ProductError

# FTP user names double as folder names: keep them boring.
_PRODUCT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_Item = TypeVar("_Item")

#: Batch states, in the order a batch goes through them.
RECEIVED, PROCESSING, DISPATCHING, COMPLETE, REJECTED = (
    "received",
    "processing",
    "dispatching",
    "complete",
    "rejected",
)
#: A file uploaded to /check: taken in and checked, never sent (final, like complete).
CHECKED = "checked"
#: What a summary says of a dispatching batch whose sending is paused (/control, ``batch pause``).
PAUSED = "paused"


def check_product_name(name: str) -> str:
    if not _PRODUCT_NAME.match(name) or name in (".", ".."):
        raise ProductError(
            f"product name {name!r} is not allowed: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_allow_ip(spec: str | Iterable[str]) -> tuple[IpNetwork, ...]:
    """Parse ``"10.0.0.1, 192.168.0.0/24"`` into networks; empty means any address."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    networks = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ProductError(f"allow-ip entry {item!r} is neither an IP address nor a CIDR block") from None
    return tuple(networks)


@dataclass(frozen=True)
class Product:
    """A sending channel and its FTP virtual user (DESIGN.md §1)."""

    name: str
    password_hash: str = field(repr=False)
    allow_ip: tuple[IpNetwork, ...] = ()
    dial_prefix: str | None = None
    callback_url: str | None = None
    callback_user: str | None = None
    callback_password: str | None = field(default=None, repr=False)
    callback_level: int = 2
    sender: str | None = None
    tps: float | None = None
    require_tls: bool = False
    max_file_bytes: int | None = None
    max_parts: int = 6
    allow_duplicates: bool = False
    duplicate_window_hours: float = 24.0
    enabled: bool = True
    #: Bytes the product may keep in inbox/ + reports/ + archive/; None: no quota.
    quota_bytes: int | None = None
    #: Days archive/ originals and reports are kept; None: the server default.
    retention_days: int | None = None

    def allows_address(self, address: str) -> bool:
        if not self.allow_ip:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        # An IPv4 client reaching a dual-stack socket shows up as ::ffff:a.b.c.d.
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.allow_ip)

    def public_view(self) -> dict[str, object]:
        """What ``product show`` prints: everything but secrets."""
        return {
            "name": self.name,
            "enabled": self.enabled,
            "allow_ip": [str(n) for n in self.allow_ip],
            "dial_prefix": self.dial_prefix,
            "callback_url": self.callback_url,
            "callback_user": self.callback_user,
            "callback_level": self.callback_level,
            "sender": self.sender,
            "tps": self.tps,
            "require_tls": self.require_tls,
            "max_file_bytes": self.max_file_bytes,
            "max_parts": self.max_parts,
            "allow_duplicates": self.allow_duplicates,
            "duplicate_window_hours": self.duplicate_window_hours,
            "quota_bytes": self.quota_bytes,
            "retention_days": self.retention_days,
        }


@dataclass(frozen=True)
class Batch:
    """One claimed file, as the ledger knows it."""

    seq: int
    id: str
    product: str
    file_name: str
    spool_path: str
    source: str
    state: str
    received_at: float
    updated_at: float
    sha256: str | None = None
    size_bytes: int | None = None
    error_code: str | None = None
    error_text: str | None = None
    duplicate_of: str | None = None
    callback_level: int | None = None
    #: Recipients in the file; set once the whole file is in the ledger (0 until then:
    #: a dispatching batch may still be reading its later rows).
    rows: int = 0
    completed_at: float | None = None
    #: a dry run (/check): its rows are checked and reported, never stored as messages nor sent
    dry_run: bool = False
    #: leasing of its messages is paused (/control, ``batch pause``); in-flight ones finish
    paused: bool = False
    #: what the sender should know about the whole file (only the first sheet of a workbook read)
    notes: tuple[str, ...] = ()

    @property
    def intake_done(self) -> bool:
        """Every row of the file is in the ledger (a file without rows is rejected, never done)."""
        return self.rows > 0


# The three records below are made once per message, several times over (a
# million-row batch: a million of each). They are not frozen: a frozen
# dataclass sets each field through object.__setattr__, 1.7 µs a record of ten
# fields against 0.3 µs (python -m timeit, this machine). Nobody changes them
# once made; they are not hashed.
@dataclass(slots=True)
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


@dataclass(slots=True)
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


class _Run(Sequence[_Item]):
    """``size`` items made from their index (:meth:`_item`), message ``k`` known upstream as
    ``upstream_prefix`` followed by ``upstream_first + k``: what the runs below share."""

    __slots__ = ()
    # the fields every run has (its dataclass defines them)
    size: int
    upstream_prefix: str
    upstream_first: int

    def _item(self, index: int) -> _Item:
        raise NotImplementedError

    def upstream_ids(self) -> list[str]:
        prefix = self.upstream_prefix
        return [f"{prefix}{n}" for n in range(self.upstream_first, self.upstream_first + self.size)]

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, index: int) -> _Item: ...

    @overload
    def __getitem__(self, index: slice) -> list[_Item]: ...

    def __getitem__(self, index: int | slice) -> _Item | list[_Item]:
        if isinstance(index, slice):
            return [self._item(k) for k in range(*index.indices(self.size))]
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError("run index out of range")
        return self._item(index)


@dataclass(frozen=True, slots=True)
class AcceptedRun(_Run[SubmitResult]):
    """The answers to one submit call of consecutive messages, all accepted: the results, in bulk.

    Messages ``first_id`` .. ``first_id + size - 1`` (consecutive ledger
    ids, as one lease makes them), all leased at ``attempt``; the upstream
    id of message ``first_id + k`` is ``upstream_prefix`` followed by
    ``upstream_first + k``. It is a sequence of the same SubmitResults one
    by one, so whoever reads answers one by one reads these too; the ledger
    applies it with one ranged statement instead of joining a result per
    message (the simulated SMSC answers this way).
    """

    first_id: int
    size: int
    attempt: int
    upstream_prefix: str
    upstream_first: int

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("a run of answers holds at least one message")

    @property
    def last_id(self) -> int:
        return self.first_id + self.size - 1

    def _item(self, index: int) -> SubmitResult:
        return SubmitResult(self.first_id + index, self.attempt, f"{self.upstream_prefix}{self.upstream_first + index}")

    def __iter__(self) -> Iterator[SubmitResult]:  # not through __getitem__, index by index
        prefix, attempt, delta = self.upstream_prefix, self.attempt, self.upstream_first - self.first_id
        return (SubmitResult(i, attempt, f"{prefix}{i + delta}") for i in range(self.first_id, self.last_id + 1))


@dataclass(slots=True)
class Receipt:
    """A delivery receipt, correlated by the ledger, not by the connector."""

    account: str
    upstream_id: str
    status: str  # "004", "007", "010" or "005"
    at: dt.datetime
    error_text: str | None = None


@dataclass(frozen=True, slots=True)
class ReceiptRun(_Run[Receipt]):
    """Delivery receipts in bulk: one for each upstream id ``upstream_prefix`` + n, n from ``upstream_first``
    on, ``size`` of them, all with one status (and error text), as one receipt each.

    Every n has as many digits (the simulated SMSC counts from 10**11), so
    the run's ids are the account's ids of their length from the first to
    the last, in the upstream-id index's order: the ledger applies the run
    as one range of that index, not a look-up per receipt. It is meant for
    ids of one producer's own prefix (the simulator's, time and random):
    nothing else of the account may sort among them.
    """

    account: str
    upstream_prefix: str
    upstream_first: int
    size: int
    status: str
    at: dt.datetime
    error_text: str | None = None

    def __post_init__(self) -> None:
        if not self.can_number(self.upstream_first, self.size):
            raise ValueError("a run of receipts holds at least one id, all numbered with as many digits")

    @staticmethod
    def can_number(first: int, size: int) -> bool:
        """Whether ids numbered ``first`` .. ``first + size - 1`` can be one run: as many digits each."""
        return size >= 1 and first >= 0 and len(str(first)) == len(str(first + size - 1))

    @property
    def first_upstream_id(self) -> str:
        return f"{self.upstream_prefix}{self.upstream_first}"

    @property
    def last_upstream_id(self) -> str:
        return f"{self.upstream_prefix}{self.upstream_first + self.size - 1}"

    def _item(self, index: int) -> Receipt:
        return Receipt(self.account, f"{self.upstream_prefix}{self.upstream_first + index}", self.status, self.at,
                       self.error_text)

    def __iter__(self) -> Iterator[Receipt]:
        account, status, at, error_text = self.account, self.status, self.at, self.error_text
        return (Receipt(account, u, status, at, error_text) for u in self.upstream_ids())


@dataclass(frozen=True, slots=True)
class MoMessage:
    """A mobile-originated message: a deliver_sm that is not a delivery receipt.

    ``source`` is the handset that sent it, ``destination`` the number or
    short code it was sent to (one of ours). ``text`` is decoded from
    ``data_coding`` (GSM 03.38, Latin-1, UCS-2); ``raw`` is the short_message
    as received, UDH included, for anything the decoding could not say.
    """

    account: str
    source: str
    destination: str
    text: str
    data_coding: int
    received_at: dt.datetime
    raw: bytes = b""
    #: concatenation (reference, total, sequence) when the MO is one part of several, else None
    concat: tuple[int, int, int] | None = None
    #: the ledger's id (mo_messages.id) once stored; None before
    id: int | None = None


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """A message whose receipt is overdue, to be asked about with query_sm."""

    message_id: int
    upstream_id: str
    sender: str | None  # the source address it was submitted with (query_sm needs it)


@dataclass(frozen=True, slots=True)
class QueryOutcome:
    """The SMSC's answer to a query_sm.

    ``status`` is the contract code of a final state (applied like a
    receipt), None when the message is not final yet or the answer was an
    error (``detail`` says which); ``refused``: the SMSC does not support
    query_sm at all (generic_nack, ESME_RINVCMDID).
    """

    account: str
    message_id: int
    upstream_id: str
    status: str | None
    detail: str = ""
    refused: bool = False
