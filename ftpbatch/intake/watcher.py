"""Intake: notice complete files in every upload folder and claim them into the spool.

A product's upload folders are /inbox (batches), /check (dry runs: batches
that are checked and reported, never sent), /optout and /control (applied
at once by :class:`~ftpbatch.intake.sender_folders.SenderFolders`).

Three ways in, one claim (DESIGN.md §3, §12.4):

* the FTP upload hook calls :meth:`Intake.uploaded` once a transfer has
  completed and been renamed into place: claimed at once, no settling;
* watchdog events for files closed after writing or moved into an inbox
  (local drops): claimed once size and mtime were stable for the settle time;
* a rescan at start-up and every ``rescan_seconds`` catches anything whose
  event was lost; such files must have been quiet for longer, because no
  close event vouches for them.

The claim is an atomic rename into ``spool/``; two claimers racing for one
file cannot both win. The ledger records the claim right after, and a
start-up pass over the spool records any claim a crash cut short.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from watchdog.events import (
    DirCreatedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from ..config import IntakeSettings
from ..ledger.jobs import JOB_LEASE_SECONDS, this_process
from ..ledger.protocol import IntakeLedger
from ..models import CHECKED, COMPLETE, DISPATCHING, PROCESSING, RECEIVED, REJECTED, Batch
from ..storage import LocalStorage, is_temporary_name
from .sender_folders import SenderFolders

log = logging.getLogger(__name__)

# Files found by a rescan (no close event seen) must be quiet this long.
_UNVOUCHED_QUIET_SECONDS = 5.0
_TICK_SECONDS = 0.05
# How often every /reports/optout.csv is compared with the ledger's list (changed by the CLI or a STOP reply).
_OPTOUT_REFRESH_SECONDS = 1.0


@dataclass
class _Candidate:
    signature: tuple[int, int] | None  # (size, mtime_ns) at the last look
    changed_at: float
    quiet_needed: float


class Intake:
    def __init__(
        self,
        storage: LocalStorage,
        ledger: IntakeLedger,
        settings: IntakeSettings,
        submit: Callable[[Batch], None],
        holder: str | None = None,
    ) -> None:
        self.holder = holder or this_process()
        self.storage = storage
        self.ledger = ledger
        self.settings = settings
        self.submit = submit
        self._uploads: queue.SimpleQueue[tuple[Path, str, str]] = queue.SimpleQueue()
        self._candidates: dict[Path, _Candidate] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._observer: Observer | None = None  # type: ignore[valid-type]  # watchdog picks its Observer class at import
        self._thread: threading.Thread | None = None
        self.claimed = 0
        self.folders = SenderFolders(storage, ledger)

    # --- lifecycle -----------------------------------------------------
    def start(self) -> None:
        self.storage.prepare()
        self.resume_spool()
        observer = Observer()
        # Only closes, moves and creations: asking inotify for IN_MODIFY too
        # would wake this process for every block written by every upload.
        observer.schedule(
            _InboxEvents(self),
            str(self.storage.homes),
            recursive=True,
            event_filter=[FileClosedEvent, FileMovedEvent, FileCreatedEvent, DirCreatedEvent],
        )
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._run, name="intake", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    name = "intake"

    @property
    def is_up(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def healthy(self) -> bool:
        return self.is_up

    # --- ways in -------------------------------------------------------
    def uploaded(self, path: Path, product: str, source: str = "ftp") -> None:
        """Called by the FTP or SFTP server (any thread) for a completed upload; ``source`` is the protocol."""
        self._uploads.put((path, product, source))

    def seen(self, path: Path, closed: bool) -> None:
        """A watchdog event touched ``path``."""
        if is_temporary_name(path.name) or self.storage.upload_owner(path) is None:
            return
        quiet = self.settings.settle_seconds if closed else _UNVOUCHED_QUIET_SECONDS
        with self._lock:
            current = self._candidates.get(path)
            if current is None:
                self._candidates[path] = _Candidate(None, time.monotonic(), quiet)
            else:
                current.changed_at = time.monotonic()
                current.quiet_needed = min(current.quiet_needed, quiet)

    def rescan_job(self) -> None:
        """The periodic rescan, done by one node per ``rescan_seconds`` (job 'rescan'; its
        lease, never released, is the schedule); it also resumes batches whose node died."""
        if not self.ledger.take_job("rescan", self.holder, max(1.0, self.settings.rescan_seconds - 1.0)):
            return
        self.rescan()
        self.resume_orphans()

    def resume_orphans(self, now: float | None = None) -> int:
        """Submit batches whose intake stopped half-way on a node that is gone: no live ingest
        lease (ingest.py), claimed more than a lease's length ago. Returns how many."""
        now = time.time() if now is None else now
        live = {j.name for j in self.ledger.job_holders("ingest:") if j.expires > now}
        resumed = 0
        for batch in self.ledger.batches_in_states((RECEIVED, PROCESSING, DISPATCHING)):
            if batch.state == DISPATCHING and batch.intake_done:
                continue
            if f"ingest:{batch.seq}" in live or batch.received_at > now - JOB_LEASE_SECONDS:
                continue
            log.warning("batch %s: its intake stopped (%s) with no node holding it; resuming here", batch.id, batch.state)
            self.submit(batch)
            resumed += 1
        return resumed

    def rescan(self) -> None:
        for path in self.storage.pending_files():
            with self._lock:
                if path not in self._candidates:
                    self._candidates[path] = _Candidate(None, time.monotonic(), _UNVOUCHED_QUIET_SECONDS)

    # --- claiming ------------------------------------------------------
    def claim(self, path: Path, product: str, source: str) -> Batch | None:
        owner = self.ledger.get_product(product)
        if owner is None:
            log.warning("ignoring %s: no product named %r owns that inbox", path, product)
            return None
        where = self.storage.upload_owner(path)
        folder = where[1] if where is not None else "inbox"
        if folder == "optout":
            self.folders.optout_file(path, owner, "ftp")
            return None
        if folder == "control":
            self.folders.control_file(path, owner, "ftp")
            return None
        dry_run = folder == "check"
        claimed = self.storage.claim(path, product, dry_run=dry_run)
        if claimed is None:
            return None  # somebody else claimed it, or it was deleted
        batch_id, spooled = claimed
        batch = self.ledger.record_claim(batch_id, product, path.name, str(spooled), source, time.time(), dry_run=dry_run)
        self.claimed += 1
        log.debug("batch %s claimed: product=%s file=%r source=%s", batch_id, product, path.name, source)
        self.submit(batch)
        return batch

    def resume_spool(self) -> None:
        """Record and resume whatever a previous run left in the spool."""
        for batch_id, product, name, path, dry_run in self.storage.spooled_files():
            batch = self.ledger.get_batch(batch_id)
            if batch is None:
                batch = self.ledger.record_claim(batch_id, product, name, str(path), "spool", os.path.getmtime(path),
                                                 dry_run=dry_run)
                log.warning("batch %s: claim found in the spool without a ledger record; recorded now", batch_id)
            if batch.state in (RECEIVED, PROCESSING) or (batch.state == DISPATCHING and not batch.intake_done):
                log.info("batch %s: resuming (%s)", batch_id, batch.state)
                self.submit(batch)
            elif batch.state in (DISPATCHING, COMPLETE, REJECTED, CHECKED):
                # processed, but the crash came before the original was archived
                self.storage.archive(path, product, name, batch_id)

    def _run(self) -> None:
        self.rescan()
        next_rescan = time.monotonic() + self.settings.rescan_seconds
        next_optouts = 0.0
        while not self._stopping.is_set():
            if time.monotonic() >= next_optouts:
                next_optouts = time.monotonic() + _OPTOUT_REFRESH_SECONDS
                self._safely(self.folders.refresh_optout_files)
            try:
                uploaded, uploader, source = self._uploads.get(timeout=_TICK_SECONDS)
                self._safely(self.claim, uploaded, uploader, source)
                continue
            except queue.Empty:
                pass
            if time.monotonic() >= next_rescan:
                next_rescan = time.monotonic() + self.settings.rescan_seconds
                self._safely(self.rescan_job)
            for path in self._settled():
                owner = self.storage.upload_owner(path)
                if owner is not None:
                    self._safely(self.claim, path, owner[0], "drop")

    def _settled(self) -> list[Path]:
        ready = []
        now = time.monotonic()
        with self._lock:
            for path, cand in list(self._candidates.items()):
                try:
                    st = os.stat(path, follow_symlinks=False)
                except FileNotFoundError:
                    del self._candidates[path]
                    continue
                signature = (st.st_size, st.st_mtime_ns)
                if signature != cand.signature:
                    cand.signature = signature
                    cand.changed_at = now
                elif now - cand.changed_at >= cand.quiet_needed:
                    del self._candidates[path]
                    ready.append(path)
        return ready

    @staticmethod
    def _safely(fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # one bad file must not stop intake
            log.exception("intake step %s%r failed", getattr(fn, "__name__", fn), args)


class _InboxEvents(FileSystemEventHandler):
    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    def on_closed(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.intake.seen(Path(os.fsdecode(event.src_path)), closed=True)

    def on_moved(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.intake.seen(Path(os.fsdecode(event.dest_path)), closed=True)

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.intake.seen(Path(os.fsdecode(event.src_path)), closed=False)
