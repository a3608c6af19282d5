"""Disk and quota limits enforced while uploads run, and retention of old files.

The FTP loop asks :class:`StorageGuard` before an upload starts
(:meth:`~StorageGuard.upload_refusal`) and for every received chunk
(:meth:`UploadBudget.add`); both are arithmetic on numbers the guard thread
refreshes (free disk every second, per-product usage every few seconds), so
the loop never walks a folder or calls ``statvfs``.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .. import codes
from ..models import Product
from ..storage import HOME_FOLDERS, UPLOAD_TEMP_PREFIX, LocalStorage

log = logging.getLogger(__name__)

_DAY = 86400.0
#: Usage reports are the product's accounting history: retention keeps them.
_KEPT_REPORT_PREFIX = "usage-"


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (symlinks are not followed)."""
    total = 0
    stack = [folder]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(Path(entry.path))
                    elif stat.S_ISREG(st.st_mode):
                        total += st.st_size
        except (FileNotFoundError, NotADirectoryError):
            continue
    return total


class StorageGuard:
    def __init__(self, storage: LocalStorage, min_free_bytes: int) -> None:
        self.storage = storage
        self.min_free_bytes = min_free_bytes
        self._lock = threading.Lock()
        self._free: int | None = None
        self._written_since_free = 0  # bytes received since _free was measured
        self._usage: dict[str, int] = {}  # product -> bytes at the last scan + uploads since
        self._inflight: dict[str, int] = {}  # product -> bytes of uploads still running

    # --- refreshed by the guard thread -------------------------------------
    def refresh_free(self) -> None:
        free = shutil.disk_usage(self.storage.root).free
        with self._lock:
            self._free = free
            self._written_since_free = 0

    def scan_usage(self, products: Iterable[str]) -> None:
        for name in products:
            used = sum(folder_bytes(self.storage.home(name) / folder) for folder in HOME_FOLDERS)
            with self._lock:
                self._usage[name] = used

    # --- the loop's view -----------------------------------------------------
    def free_bytes(self) -> int | None:
        with self._lock:
            return None if self._free is None else self._free - self._written_since_free

    def low_disk(self) -> bool:
        free = self.free_bytes()
        return free is not None and free < self.min_free_bytes

    def used(self, product: str) -> int:
        with self._lock:
            return self._usage.get(product, 0) + self._inflight.get(product, 0)

    def upload_refusal(self, product: Product) -> str | None:
        """The FTP reply refusing a new upload, or None when it may start."""
        if self.low_disk():
            log.warning("upload by %r refused: less than %d bytes free on the data disk", product.name, self.min_free_bytes)
            return "452 Not enough free disk space on the server: uploads are paused; try again later."
        if product.quota_bytes is not None and self.used(product.name) >= product.quota_bytes:
            return (
                f"552 The storage quota of this product is full ({self.used(product.name)} of {product.quota_bytes} "
                f"bytes used in /inbox, /reports and /archive; code {codes.E_FILE_TOO_LARGE}): delete old files "
                "from /reports, or ask the operator for more space."
            )
        return None

    def budget(self, product: Product, offset: int = 0) -> "UploadBudget":
        return UploadBudget(self, product, offset)

    # --- called by UploadBudget (on the loop) --------------------------------
    def _received(self, product: str, n: int) -> None:
        with self._lock:
            self._inflight[product] = self._inflight.get(product, 0) + n
            self._written_since_free += n

    def _finished(self, product: str, received: int, kept: bool) -> None:
        with self._lock:
            left = self._inflight.get(product, 0) - received
            if left > 0:
                self._inflight[product] = left
            else:
                self._inflight.pop(product, None)
            if kept:
                self._usage[product] = self._usage.get(product, 0) + received
            else:
                self._written_since_free = max(0, self._written_since_free - received)


@dataclass
class UploadBudget:
    """What one running upload may still write; :meth:`add` says when to cut it."""

    guard: StorageGuard
    product: Product
    offset: int = 0  # bytes already in the file (APPE, REST)
    received: int = 0
    cut: str | None = field(default=None)
    _closed: bool = False

    def add(self, n: int) -> str | None:
        """Count ``n`` received bytes; returns the reply to cut the transfer with, or None."""
        self.received += n
        self.guard._received(self.product.name, n)
        limit = self.product.max_file_bytes
        if limit is not None and self.offset + self.received > limit:
            self.cut = (
                f"552 Transfer cut: the file is larger than the {limit} bytes allowed for this product "
                f"(code {codes.E_FILE_TOO_LARGE}); split it into smaller files."
            )
        elif self.product.quota_bytes is not None and self.guard.used(self.product.name) > self.product.quota_bytes:
            self.cut = (
                f"552 Transfer cut: the storage quota of this product ({self.product.quota_bytes} bytes for /inbox, "
                f"/reports and /archive) is full (code {codes.E_FILE_TOO_LARGE}); delete old files from /reports "
                "or ask the operator for more space."
            )
        elif self.guard.low_disk():
            self.cut = "452 Transfer cut: the server is short of disk space; nothing was kept, try again later."
        return self.cut

    def close(self, kept: bool) -> None:
        if not self._closed:
            self._closed = True
            self.guard._finished(self.product.name, self.received, kept)


def apply_retention(storage: LocalStorage, products: Iterable[Product], default_days: int, now: float | None = None) -> int:
    """Delete archived originals and reports older than each product's retention.

    ``retention_days`` 0 keeps files forever; usage reports are always kept.
    Returns the number of files deleted.
    """
    now = time.time() if now is None else now
    removed = 0
    for product in products:
        days = product.retention_days if product.retention_days is not None else default_days
        if days <= 0:
            continue
        cutoff = now - days * _DAY
        for folder in (storage.archive_dir(product.name), storage.reports(product.name)):
            removed += _remove_older(folder, cutoff, keep_prefix=_KEPT_REPORT_PREFIX)
        # uploads a crash interrupted: their session is long gone
        removed += _remove_older(storage.inbox(product.name), now - _DAY, only_prefix=UPLOAD_TEMP_PREFIX)
    if removed:
        log.info("retention: %d old file(s) deleted", removed)
    return removed


def remove_orphan_uploads(storage: LocalStorage) -> int:
    """At start-up no upload is running: every hidden upload file is a leftover."""
    removed = 0
    for inbox in storage.homes.glob("*/inbox"):
        removed += _remove_older(inbox, time.time() + _DAY, only_prefix=UPLOAD_TEMP_PREFIX)
    if removed:
        log.info("removed %d upload(s) left unfinished by the previous run", removed)
    return removed


def _remove_older(folder: Path, cutoff: float, keep_prefix: str = "", only_prefix: str = "") -> int:
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        name = entry.name
        if (keep_prefix and name.startswith(keep_prefix)) or (only_prefix and not name.startswith(only_prefix)):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
    return removed
