"""A one-line progress display for ``ftpbatch process``: on a terminal only, quiet in pipes."""

from __future__ import annotations

import time
from typing import TextIO

from .files import Counts


#: Counting a batch's messages is a scan of the batch; the display waits at
#: least this many times the last count's cost before the next, so a
#: million-row batch is not slowed by watching it (a count every 0.2 s once
#: took a third of `process`'s time).
_COST_SPACING = 10.0


class Progress:
    def __init__(self, stream: TextIO, min_interval: float = 0.1) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.started = time.monotonic()
        self.min_interval = min_interval
        self._last = 0.0
        self._next_count = 0.0
        self._width = 0

    def wants_counts(self) -> bool:
        """Whether fresh counts would be shown now (never off a terminal; spaced by their cost)."""
        return self.enabled and time.monotonic() >= self._next_count

    def counted(self, cost: float) -> None:
        """Record what the last count cost, so the next waits in proportion."""
        self._next_count = time.monotonic() + max(self.min_interval, _COST_SPACING * cost)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def show(self, counts: Counts) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < self.min_interval:
            return
        self._last = now
        final = counts.delivered + counts.failed + counts.cancelled + counts.expired + counts.rejected
        sent = counts.submitted + final - counts.rejected - counts.cancelled
        total = max(counts.rows, 1)
        filled = int(30 * final / total)
        line = (
            f"\r[{'#' * filled}{'.' * (30 - filled)}] rows {counts.rows}  submitted {sent}  "
            f"final {final}/{counts.rows}  {self.elapsed:5.1f}s"
        )
        self._width = max(self._width, len(line))
        self.stream.write(line.ljust(self._width))
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self._last:
            self.stream.write("\n")
            self.stream.flush()
