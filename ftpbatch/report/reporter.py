"""Keeps every batch's report files in step with the ledger, throttled.

The ledger bumps a batch's ``version`` on every change; this thread rewrites
the files of batches whose reported version lags, at most once per
``interval`` for small batches and less often for big ones (rewriting a
million-row CSV takes seconds), and moves a batch to ``complete`` once no
message has an outcome still to come.

A batch that is dispatching changes hundreds of times a second. Its files
are rewritten at most every ``cost / _REWRITE_SHARE`` seconds (the measured
cost of its last rewrite), so the reporter never takes more than a small share
of the machine from the dispatch it reports on; in between, the ledger is
asked every ``interval`` whether any of its messages is still open (a look at
small indexes, the same cost for any batch size), and only when none is are
its counts taken, to notice completion without waiting for the next rewrite.

Senders poll ``summary.json`` to know where they stand, and it is small (a
few hundred bytes, from one grouped count): while a batch changes, it is
rewritten at least every ``SUMMARY_EVERY`` seconds on its own, whatever the
report's throttle, so a 200,000-row batch shows its counts move during the
twenty seconds it is sent rather than jump to complete at the end. It may
then run ahead of ``report.csv``, never behind it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable

from .. import logs
from ..ledger import Ledger
from ..ledger.jobs import JobLease, this_process
from ..lifecycle import all_alive
from ..models import COMPLETE, DISPATCHING, REJECTED, Batch
from ..storage import LocalStorage
from .files import Counts, ReportWriter, next_state
from .render_process import ReportProcess
from .usage import MonthlyUsageFiles

log = logging.getLogger(__name__)

# The share of the time one batch's report rewrites may take while it changes:
# a rewrite that took 0.3 s waits 6 s. Chunks of 5,000 rows (files.py) make a
# rewrite during dispatch format only the rows that moved, so a 20,000-message
# batch is rewritten about as often as at a tenth with 100,000-row chunks, for
# two thirds of the CPU (0.41-0.60 -> 0.29-0.34 s in a 20,000-message `process`).
_REWRITE_SHARE = 0.05
# ... counting a rewrite done by the helper process (render_process.py) at this
# share of its time: the helper has a core of its own, and the batch's last
# rewrite only formats what moved since the one before: a helper rewrite is
# followed by a wait as long as itself, and the last one stays short.
_OFFLOADED_WEIGHT = 0.05
# ... but by a wait of at most this many seconds. A rewrite that formats most of
# the batch (a million rows, once the whole file is read: 7 s) is followed by short
# ones, which format only what moved meanwhile; waiting as long as it took left the
# helper idle for the last seconds of sending, and the last rewrite, after the last
# receipt, then formatted half the batch (1M-row `process`: 2.1-4.8 s after completion).
_OFFLOADED_WAIT_MAX = 1.0
# Rounds are at least this far apart: the dispatcher wakes the reporter on
# every ledger write, hundreds of times a second, and one look a few dozen
# times a second sees the same.
_MIN_ROUND_GAP = 0.02
# Batches with at least this many rows are rendered in the report process
# (render_process.py). Below it a rewrite costs less here (Arrow: ~3 ms a thousand
# rows, at most a tenth of the batch's time) than starting the helper, whose
# imports alone are 0.7 s of CPU: 5,000 made a 20,000-message `process` start it.
OFFLOAD_ROWS = 50_000
# ... and so are files of at least this many bytes still being read (OFFLOAD_ROWS
# rows of CSV are 2-5 MB).
OFFLOAD_BYTES = 4 * 1024 * 1024
# A changing batch's summary.json is rewritten at least this often (seconds),
# however long its report.csv waits: senders poll it for progress.
SUMMARY_EVERY = 1.0
# ... unless counting the batch takes more than this share of that time. (A
# tenth saved ~2 of a million-row `process`'s 30 CPU seconds, but a 100,000-row
# batch counted in 0.56 s on a loaded machine then showed no progress for 5.6 s.)
_SUMMARY_SHARE = 0.25


class Reporter:
    def __init__(
        self,
        ledger: Ledger,
        storage: LocalStorage,
        interval: float = 0.25,
        usage: MonthlyUsageFiles | None = None,
        offload_rows: int | None = OFFLOAD_ROWS,
        holder: str | None = None,
    ) -> None:
        self.ledger = ledger
        # Several nodes on one ledger and root: one of them writes the report
        # files and one the usage files at a time (jobs 'reports', 'usage-files').
        holder = holder or this_process()
        self.reports_lease = JobLease(ledger, "reports", holder)
        self.usage_lease = JobLease(ledger, "usage-files", holder)
        self.writer = ReportWriter(ledger, storage)
        #: Batches of at least this many rows are written by the report process; None: never.
        self.offload_rows = offload_rows
        self.process = ReportProcess(ledger.db.location, storage.root, self.writer)
        self.interval = interval
        #: Each product's reports/usage-YYYY-MM.csv, refreshed from this thread.
        self.usage = usage
        # per batch seq: (when, seconds it took) of the last rewrite and of the last count
        self._last_written: dict[int, tuple[float, float]] = {}
        self._last_counted: dict[int, tuple[float, float]] = {}
        # ... and of the last cheap look for completion (may_be_finished)
        self._last_checked: dict[int, tuple[float, float]] = {}
        # batches whose look said "maybe finished" and whose count then said not
        # (a message cancelled in flight still holds its lease): counted at the count's pace
        self._looked_in_vain: set[int] = set()
        # batches whose rewrite in the helper was given up for a "maybe finished" look (see report)
        self._given_up: set[int] = set()
        # per batch seq: when its summary.json was last written (with or without the CSV)
        self._last_summary: dict[int, float] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    name = "reporter"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reporter", daemon=True)
        self._thread.start()

    @property
    def healthy(self) -> bool:
        return all_alive([self._thread])

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after writing every report that is behind (a last, unthrottled pass)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.process.close()
        self.reports_lease.release()
        self.usage_lease.release()

    def _run(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            try:
                if self.reports_lease.held():
                    self.catch_up(throttle=not stopping)
            except Exception:
                log.exception("report round failed; retrying")
            if self.usage is not None and self.usage_lease.held():
                try:
                    self.usage.tick(force=stopping)
                except Exception:
                    log.exception("usage report refresh failed; retrying")
            if stopping:
                return
            if self._stopping.wait(_MIN_ROUND_GAP):
                continue
            self._wake.wait(self.interval)
            self._wake.clear()

    def _while_rewriting(self, batch: Batch) -> tuple[Callable[[], bool], list[bool]]:
        """What the reporter does while the helper rewrites ``batch``: (the call, [whether it wrote a summary]).

        It keeps the batch's summary.json fresh at its usual pace (a helper's
        rewrite may take seconds, the first one, with the helper's start-up,
        the longest), and says "give it up" once a batch sending its last
        messages may be finished: once a batch, so a wrong look (a message
        cancelled in flight still holds its lease) does not repeat.
        """
        wrote = [False]
        may_give_up = batch.state == DISPATCHING and batch.intake_done and batch.seq not in self._given_up

        def look() -> bool:
            if batch.state == DISPATCHING and (
                    time.monotonic() - self._last_summary.get(batch.seq, -math.inf) >= self._summary_gap(batch.seq)):
                wrote[0] = self._write_fresh_summary(batch) or wrote[0]
            return may_give_up and self.ledger.may_be_finished(batch.seq, batch.product)

        return look, wrote

    def _write_fresh_summary(self, batch: Batch) -> bool:
        """Write the batch's summary.json from a fresh count (and its ``updated_at`` as of now), if its
        state is still ``batch``'s; True if written."""
        current = self.ledger.get_batch_by_seq(batch.seq)
        if current.state != batch.state or current.paused != batch.paused:
            return False  # its next round reports the new state, the CSV first
        self.writer.write_summary(current, self._count(batch.seq))
        self._last_summary[batch.seq] = time.monotonic()
        return True

    def _refresh_usage(self) -> None:
        if self.usage is not None and self.usage_lease.held():
            self.usage.tick()

    def catch_up(self, throttle: bool = True) -> int:
        """Rewrite the reports that lag the ledger. Returns how many batches were written."""
        written = 0
        now = time.monotonic()
        for seq, version in self.ledger.unreported_batches():
            batch = self.ledger.get_batch_by_seq(seq)
            if batch.dry_run and batch.state != REJECTED:
                # a dry run (/check) has no messages here: intake writes its files from the checked rows
                self.ledger.mark_reported(seq, version)
                continue
            counts = None
            if throttle and not self._due(self._last_written, seq, now):
                # Not yet time to rewrite the report; but a batch that is complete is
                # reported at once, and its summary is kept fresh meanwhile.
                summary_due = now - self._last_summary.get(seq, -math.inf) >= self._summary_gap(seq)
                # Only a batch whose file is read whole can finish. Its look is paced
                # by the look's own cost, not by a count's: a summary's count of a
                # million rows (0.4-0.9 s) silenced it for 9-18 s, and a batch whose
                # last receipt had come waited that long to be complete.
                look_due = (batch.state == DISPATCHING and batch.intake_done
                            and self._due(self._last_checked, seq, now))
                if not (summary_due or look_due):
                    continue
                if not summary_due:
                    if not self._may_be_finished(batch):
                        continue  # a message is still open: a count would only say so
                    if seq in self._looked_in_vain and not self._due(self._last_counted, seq, now):
                        continue
                counts = self._count(seq)
                if next_state(batch, counts) is None:
                    if not summary_due:
                        self._looked_in_vain.add(seq)
                    else:
                        self.writer.write_summary(batch, counts)
                        self._last_summary[seq] = time.monotonic()
                    continue
            self.report(batch, version, counts)
            written += 1
        return written

    def report(self, batch: Batch, version: int, counts: Counts | None = None) -> None:
        started = time.monotonic()
        if counts is None:
            counts = self._count(batch.seq)
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
        # A big file still being read goes to the helper too: its rows so far may be
        # few when counted, but the rewrite renders every row stored by then (a
        # million-row file, 1 s into its intake: 1.9 s of rendering in this process).
        offloaded = self.offload_rows is not None and (
            counts.rows >= self.offload_rows or (not batch.intake_done and (batch.size_bytes or 0) >= OFFLOAD_BYTES))
        if offloaded:
            # A batch just complete has its month's usage file due: it is counted here
            # while the helper renders (a million rows: ~1 s each, one after the other
            # before, both after the last receipt).
            meanwhile = self._refresh_usage if batch.state == COMPLETE else None
            look, wrote_summary = self._while_rewriting(batch)
            if not self.process.write_csv(batch, meanwhile, look):
                # Its last message may have settled meanwhile: the last rewrite comes at
                # once, from the chunks rendered so far (a million rows: it waited up to
                # 7 s for a rewrite of half of them, of which it redid most).
                self._given_up.add(batch.seq)
                self._last_written.pop(batch.seq, None)
                return
            # summary.json is written here, after the CSV: the counts of the request, or a
            # fresh count if one was shown meanwhile (the request's are older by then; if the
            # batch was paused meanwhile, its next round writes both files)
            if wrote_summary[0]:
                self._write_fresh_summary(batch)
            else:
                self.writer.write_summary(batch, counts)
        else:
            self.writer.write(batch, counts)
        self.ledger.mark_reported(batch.seq, version)
        done = time.monotonic()
        # Time the helper process took is not this process's: it weighs less in when
        # the next rewrite is due. A big batch's report is then rewritten every few
        # seconds while it is sent, each time only the chunks that moved (files.py),
        # and its last rewrite is short (a million rows: 7 s of rendering after the
        # last receipt, when the first rewrite's cost had put the second after the end).
        took = done - started
        cost = min(took * _OFFLOADED_WEIGHT, _OFFLOADED_WAIT_MAX * _REWRITE_SHARE) if offloaded else took
        self._last_written[batch.seq] = (done, cost)
        self._last_summary[batch.seq] = done
        if batch.state == COMPLETE:
            self._last_counted.pop(batch.seq, None)
            self._last_checked.pop(batch.seq, None)
            self._looked_in_vain.discard(batch.seq)
            self._given_up.discard(batch.seq)
            self._last_summary.pop(batch.seq, None)

    def _count(self, seq: int) -> Counts:
        started = time.monotonic()
        counts = Counts.tally(self.ledger.status_counts(seq))
        done = time.monotonic()
        self._last_counted[seq] = (done, done - started)
        return counts

    def _may_be_finished(self, batch: Batch) -> bool:
        """The ledger's quick look for an open message, instead of counting the whole batch.

        Counting a million-row batch takes ~0.4 s, so it was done every 4 s
        (its cost / _REWRITE_SHARE) and a big batch's completion was seen up to
        that late; a 20,000-message run counted two dozen times. The look
        costs the same for any size, so completion is seen within ``interval``.
        """
        started = time.monotonic()
        maybe = self.ledger.may_be_finished(batch.seq, batch.product)
        done = time.monotonic()
        self._last_checked[batch.seq] = (done, done - started)
        return maybe

    def _summary_gap(self, seq: int) -> float:
        """Seconds between two summary-only writes: SUMMARY_EVERY, longer only if counting is slow."""
        cost = self._last_counted.get(seq, (0.0, 0.0))[1]
        return max(SUMMARY_EVERY, cost / _SUMMARY_SHARE)

    def _due(self, last: dict[int, tuple[float, float]], seq: int, now: float) -> bool:
        if seq not in last:
            return True
        at, cost = last[seq]
        return now - at >= max(self.interval, cost / _REWRITE_SHARE)
