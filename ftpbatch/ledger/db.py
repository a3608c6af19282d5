"""The one place that opens the ledger: WAL, busy timeout, transactions.

Each thread gets its own SQLite connection (connections must not cross
threads); all of them point at the same file, and SQLite's WAL lets readers
run while one writer commits.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

# Writers queue behind each other for at most this long before failing.
_BUSY_TIMEOUT_MS = 30_000


class Database:
    """Thread-local connections to one SQLite ledger file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            # WAL + NORMAL: a power cut may lose the last commits but never
            # corrupts; the spool and rescan recover anything not recorded.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            # 32 MiB of page cache: bulk inserts of big batches touch many index pages
            conn.execute("PRAGMA cache_size=-32768")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, committed on success and rolled back on error.

        ``BEGIN IMMEDIATE`` takes the write lock up front, so two writers
        never deadlock upgrading read locks. Inside another transaction of
        the same thread it joins that one: the outer one commits or rolls
        back the whole (how one command's changes to several stores become
        one change).
        """
        conn = self.connection()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the ledger as of one moment."""
        conn = self.connection()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()
