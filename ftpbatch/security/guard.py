"""The guard thread: keeps the FTP loop's snapshots fresh and runs retention."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..config import FtpSettings
from ..ledger import Ledger
from ..ledger.jobs import this_process
from ..lifecycle import all_alive
from ..storage import LocalStorage
from .bans import BanBook
from .storage_guard import StorageGuard, apply_retention, remove_orphan_uploads

log = logging.getLogger(__name__)

BAN_REFRESH_SECONDS = 1.0
USAGE_REFRESH_SECONDS = 5.0
RETENTION_SECONDS = 3600.0
RETENTION_LOOK_SECONDS = 60.0


class Guard:
    def __init__(self, ledger: Ledger, storage: LocalStorage, ftp: FtpSettings, retention_days: int = 30,
                 holder: str | None = None) -> None:
        self.ledger = ledger
        self.holder = holder or this_process()
        self.storage = storage
        #: Days archive/ and reports/ files are kept for products without their own retention.
        self.retention_days = retention_days
        self.bans = BanBook(ledger, ftp.ban_failures, ftp.ban_window, ftp.ban_seconds)
        self.disk = StorageGuard(storage, int(ftp.min_free_mb * 1_000_000))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Take the first snapshots now (the server must not start blind), then keep them fresh."""
        remove_orphan_uploads(self.storage)
        self.bans.refresh()
        self.disk.refresh_free()
        self._scan_usage()
        self._thread = threading.Thread(target=self._run, name="guard", daemon=True)
        self._thread.start()

    name = "guard"

    @property
    def healthy(self) -> bool:
        return all_alive([self._thread])

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _scan_usage(self) -> None:
        self.disk.scan_usage(p.name for p in self.ledger.list_products() if p.quota_bytes is not None)

    def _run(self) -> None:
        next_usage = time.monotonic() + USAGE_REFRESH_SECONDS
        next_retention = time.monotonic()  # at start, then every minute: runs when the hourly lease is free
        while not self._stop.wait(BAN_REFRESH_SECONDS):
            now = time.monotonic()
            self._safely(self.bans.refresh)
            self._safely(self.disk.refresh_free)
            if now >= next_usage:
                next_usage = now + USAGE_REFRESH_SECONDS
                self._safely(self._scan_usage)
            if now >= next_retention:
                next_retention = now + RETENTION_LOOK_SECONDS
                self._safely(self._retention)

    def _retention(self) -> None:
        # Once an hour across every node on the ledger: the job's lease, never released, is the
        # schedule (whoever finds it expired runs it and holds it for the next hour).
        if not self.ledger.take_job("retention", self.holder, RETENTION_SECONDS):
            return
        apply_retention(self.storage, self.ledger.list_products(), self.retention_days)
        self.ledger.prune_bans(time.time())

    @staticmethod
    def _safely(fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:  # a failed refresh must not end the guard
            log.exception("guard step %s failed", getattr(fn, "__name__", fn))
