"""Usage reports (DESIGN.md §7, §10): by day or by product, as a table, CSV, JSON or chart.

* :func:`usage_report` builds the rows ``ftpbatch report usage`` prints;
* :class:`MonthlyUsageFiles` keeps each product's ``reports/usage-YYYY-MM.csv``
  (one row per day of the month so far) fresh: at start, at least every
  ``refresh`` seconds, when the UTC day ends, and soon after one of the
  product's batches completes (within ``min_interval`` seconds, 2 by
  default; longer only for a product whose month takes long to count).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Iterable

from ..ledger import Ledger
from ..ledger.records import UsageCount
from ..storage import LocalStorage

log = logging.getLogger(__name__)

COLUMNS = ("messages", "parts", "delivered", "failed", "rejected")
_EPOCH = dt.date(1970, 1, 1)


def day_of(number: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=number)


def day_start(day: dt.date) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()


def month_bounds(year: int, month: int) -> tuple[dt.date, dt.date]:
    """First day of the month and first day of the next one."""
    first = dt.date(year, month, 1)
    following = dt.date(year + (month == 12), month % 12 + 1, 1)
    return first, following


@dataclass(frozen=True)
class UsageRow:
    key: str  # "2025-06-01" or a product name, or "total"
    messages: int
    parts: int
    delivered: int
    failed: int
    rejected: int

    @classmethod
    def of(cls, key: str, count: UsageCount) -> "UsageRow":
        return cls(key, count.messages, count.parts, count.delivered, count.failed, count.rejected)

    @classmethod
    def total(cls, rows: Iterable["UsageRow"]) -> "UsageRow":
        rows = list(rows)
        return cls("total", *(sum(getattr(r, c) for r in rows) for c in COLUMNS))


def usage_report(
    ledger: Ledger, by: str, product: str | None = None, since: dt.date | None = None, until: dt.date | None = None
) -> list[UsageRow]:
    """Rows grouped ``by`` day or product; ``since`` and ``until`` are inclusive UTC dates."""
    counts = ledger.usage(
        by,
        product=product,
        since=day_start(since) if since else None,
        until=day_start(until + dt.timedelta(days=1)) if until else None,
    )
    if by == "day":
        return [UsageRow.of(day_of(c.day).isoformat(), c) for c in counts if c.day is not None]
    return [UsageRow.of(c.product or "", c) for c in counts]


def daily_by_product(
    ledger: Ledger, product: str | None = None, since: dt.date | None = None, until: dt.date | None = None
) -> dict[str, dict[dt.date, int]]:
    """product -> day -> messages (what ``--plot`` draws)."""
    counts = ledger.usage(
        "day_product",
        product=product,
        since=day_start(since) if since else None,
        until=day_start(until + dt.timedelta(days=1)) if until else None,
    )
    series: dict[str, dict[dt.date, int]] = {}
    for c in counts:
        if c.day is not None and c.product is not None:
            series.setdefault(c.product, {})[day_of(c.day)] = c.messages
    return series


# --- output formats -------------------------------------------------------------
def as_table(rows: list[UsageRow], key_title: str) -> str:
    if not rows:
        return "no messages in this period\n"
    lines = [rows[:], [UsageRow.total(rows)]]
    width = max(len(key_title), *(len(r.key) for r in rows), len("total"))
    numbers = [max(len(c), *(len(f"{getattr(r, c):,}") for r in lines[0] + lines[1])) for c in COLUMNS]
    out = io.StringIO()
    out.write(f"{key_title:<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(COLUMNS, numbers)) + "\n")
    rule = "-" * width + "  " + "  ".join("-" * w for w in numbers) + "\n"
    out.write(rule)
    for group in lines:
        for r in group:
            out.write(f"{r.key:<{width}}  " + "  ".join(f"{getattr(r, c):>{w},}" for c, w in zip(COLUMNS, numbers)) + "\n")
        if group is lines[0]:
            out.write(rule)
    return out.getvalue()


def as_csv(rows: list[UsageRow], key_title: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow((key_title, *COLUMNS))
    for r in rows:
        writer.writerow((r.key, *(getattr(r, c) for c in COLUMNS)))
    return out.getvalue()


def as_json(rows: list[UsageRow], key_title: str) -> str:
    return json.dumps([{key_title: r.key, **{c: getattr(r, c) for c in COLUMNS}} for r in rows], indent=2) + "\n"


# --- reports/usage-YYYY-MM.csv ----------------------------------------------------
def month_csv(ledger: Ledger, product: str, year: int, month: int, today: dt.date) -> str:
    """One product's month, a row per day from the 1st to today (or the month's end)."""
    first, following = month_bounds(year, month)
    last = min(following - dt.timedelta(days=1), today)
    found = {
        r.key: r for r in usage_report(ledger, "day", product=product, since=first, until=following - dt.timedelta(days=1))
    }
    rows = []
    day = first
    while day <= last:
        rows.append(found.get(day.isoformat(), UsageRow(day.isoformat(), 0, 0, 0, 0, 0)))
        day += dt.timedelta(days=1)
    return as_csv(rows, "day")


class MonthlyUsageFiles:
    """Keeps ``reports/usage-YYYY-MM.csv`` of every product in step with the ledger (called from the reporter thread)."""

    def __init__(self, ledger: Ledger, storage: LocalStorage, refresh: float = 3600.0, min_interval: float = 2.0) -> None:
        self.ledger = ledger
        self.storage = storage
        self.refresh = refresh
        self.min_interval = min_interval
        self._last_full: float | None = None  # monotonic
        self._last_day: dt.date | None = None
        self._written: dict[str, float] = {}
        self._cost: dict[str, float] = {}  # seconds the last write of each product's file took
        self._dirty: set[str] = set()
        self._lock = threading.Lock()

    def touch(self, product: str) -> None:
        """A batch of ``product`` completed: its file is refreshed soon."""
        with self._lock:
            self._dirty.add(product)

    def tick(self, force: bool = False) -> int:
        """Write what is due (``force``: every touched product now). Returns the number of files written."""
        now = time.monotonic()
        today = dt.datetime.now(dt.timezone.utc).date()
        written = 0
        day_ended = self._last_day is not None and today != self._last_day
        if self._last_full is None or now - self._last_full >= self.refresh or day_ended:
            for product in self._products():
                if day_ended and self._last_day is not None:
                    written += self.write(product, self._last_day, today)  # close the day (and maybe the month)
                written += self.write(product, today, today)
            self._last_full = now
            with self._lock:
                self._dirty.clear()
        self._last_day = today
        with self._lock:
            due = [p for p in self._dirty if force or now - self._written.get(p, -math.inf) >= self._gap(p)]
            self._dirty.difference_update(due)
        for product in due:
            written += self.write(product, today, today)
        return written

    def _gap(self, product: str) -> float:
        """Seconds between two refreshes after completions: ``min_interval``, more if counting the month is slow
        (a month of millions of messages is a scan; it must not take the reporter's time from the batches)."""
        return max(self.min_interval, self._cost.get(product, 0.0) * 10)

    def write(self, product: str, day: dt.date, today: dt.date) -> int:
        """Rewrite the file of ``day``'s month for one product."""
        folder = self.storage.reports(product)
        if not folder.parent.exists():
            return 0  # a product without a home (removed): nothing to write
        started = time.monotonic()
        text = month_csv(self.ledger, product, day.year, day.month, today)
        with self.storage.atomic_writer(folder / f"usage-{day.year:04d}-{day.month:02d}.csv") as fh:
            fh.write(text)
        self._written[product] = done = time.monotonic()
        self._cost[product] = done - started
        return 1

    def _products(self) -> list[str]:
        return [p.name for p in self.ledger.list_products()]
