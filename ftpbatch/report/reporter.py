"""Keeps every batch's report files in step with the ledger, throttled.

The ledger bumps a batch's ``version`` on every change; this thread rewrites
the files of batches whose reported version lags, at most once per
``interval`` for small batches and less often for big ones (rewriting a
million-row CSV takes seconds), and moves a batch to ``complete`` once no
message has an outcome still to come.
"""

from __future__ import annotations

import logging
import threading
import time

from .. import logs
from ..ledger import Ledger
from ..models import Batch
from ..storage import LocalStorage
from .files import Counts, ReportWriter, next_state
from .usage import MonthlyUsageFiles

log = logging.getLogger(__name__)

# Rows a second that a report rewrite costs, roughly: spaces out rewrites of
# big batches so the reporter never spends most of its time rewriting.
_REWRITE_ROWS_PER_SECOND = 100_000


class Reporter:
    def __init__(
        self, ledger: Ledger, storage: LocalStorage, interval: float = 0.25, usage: MonthlyUsageFiles | None = None
    ) -> None:
        self.ledger = ledger
        self.writer = ReportWriter(ledger, storage)
        self.interval = interval
        #: Each product's reports/usage-YYYY-MM.csv, refreshed from this thread.
        self.usage = usage
        self._last_written: dict[int, float] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reporter", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after writing every report that is behind (a last, unthrottled pass)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            try:
                self.catch_up(throttle=not stopping)
            except Exception:
                log.exception("report round failed; retrying")
            if self.usage is not None:
                try:
                    self.usage.tick(force=stopping)
                except Exception:
                    log.exception("usage report refresh failed; retrying")
            if stopping:
                return
            self._wake.wait(self.interval)
            self._wake.clear()

    def catch_up(self, throttle: bool = True) -> int:
        """Rewrite the reports that lag the ledger. Returns how many batches were written."""
        written = 0
        now = time.monotonic()
        for seq, version in self.ledger.unreported_batches():
            batch = self.ledger.get_batch_by_seq(seq)
            if throttle and not self._due(batch, now):
                continue
            self.report(batch, version)
            written += 1
        return written

    def report(self, batch: Batch, version: int) -> None:
        counts = Counts.tally(self.ledger.status_counts(batch.seq))
        state = next_state(batch, counts)
        if state is not None and self.ledger.complete_batch(batch.seq):
            logs.batch_event(
                logs.COMPLETE, batch.id, batch.product, rows=counts.rows, delivered=counts.delivered,
                failed=counts.failed, rejected=counts.rejected, cancelled=counts.cancelled,
                receipt_timeouts=counts.receipt_timeouts, parts=counts.parts,
            )
            if self.usage is not None:
                self.usage.touch(batch.product)
            batch = self.ledger.get_batch_by_seq(batch.seq)
            version += 1  # complete_batch bumped it; these files show it
        self.writer.write(batch, counts)
        self.ledger.mark_reported(batch.seq, version)
        self._last_written[batch.seq] = time.monotonic()

    def _due(self, batch: Batch, now: float) -> bool:
        last = self._last_written.get(batch.seq)
        if last is None:
            return True
        spacing = max(self.interval, batch.rows / _REWRITE_ROWS_PER_SECOND)
        return now - last >= spacing
