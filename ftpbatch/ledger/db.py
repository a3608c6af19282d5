"""The one place that opens the ledger: which backend, its connections, transactions.

A ledger lives in SQLite (a file in the data root, one machine) or in
PostgreSQL (a ``postgresql://`` URL, several machines: DESIGN.md §12).
:func:`open_database` picks by location. Both hand the stores connections
with the same small surface (:class:`Connection`: ``execute`` and
``executemany`` with ``?`` placeholders, rows indexable by position and by
column name), so the stores' SQL is written once; what differs between the
two dialects is said here, in ledger/pg.py (the PostgreSQL connection and
its SQL translation) and in ledger/sql.py (the few helpers that branch on
``dialect``).

SQLite: each thread gets its own connection (connections must not cross
threads); all of them point at the same file, and SQLite's WAL lets readers
run while one writer commits. Writers of one process queue for the file on a
lock of their own before SQLite's (see ``_writers_of``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

# Writers queue behind each other for at most this long before failing.
_BUSY_TIMEOUT_MS = 30_000

# One lock per SQLite file for the writers of this process (_writers_of).
_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_LOCK = threading.Lock()


def _writers_of(path: Path) -> threading.RLock:
    """The lock this process's writers of ``path`` take before SQLite's write lock.

    Without it they wait in SQLite's busy handler, which sleeps in steps of up
    to 100 ms and is then often beaten to the lock by a writer that has just
    come: with the dispatcher's sink, its feeder, the reporter, the callbacks
    and intake each writing for a few milliseconds, the sink waited 0.1-1.2 s
    at a time for a lock that was free most of that time, and a batch's counts
    stood still for seconds. A lock wakes its next waiter at once. Re-entrant:
    a thread that writes through a second ledger object on the same file
    inside a transaction fails on SQLite's timeout as before, not on itself.
    Other processes (a second ``ftpbatch`` command) still meet SQLite's.
    """
    key = str(path.resolve())
    with _WRITERS_LOCK:
        return _WRITERS.setdefault(key, threading.RLock())

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

#: A result row: indexable by position and by column name (``sqlite3.Row``
#: for SQLite, ``ledger.pg.Row`` for PostgreSQL).
Row = Any


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the stores use of a connection: ``sqlite3.Connection`` is one, ``ledger.pg.PgConnection`` another."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...
    @property
    def in_transaction(self) -> bool: ...


class IntegrityViolation(Exception):
    """A constraint of the PostgreSQL ledger refused a write (SQLite raises ``sqlite3.IntegrityError``)."""


#: What a store catches to tell "already exists" from other failures, whichever the backend.
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, IntegrityViolation)


class Database:
    """A ledger's connections; the stores use only what this class declares."""

    #: ``SQLITE`` or ``POSTGRESQL``
    dialect: str = SQLITE
    #: where the ledger is: a file path, or the URL (its password removed)
    location: str

    def connection(self) -> Connection:
        raise NotImplementedError

    def transaction(self) -> contextlib.AbstractContextManager[Connection]:
        """A write transaction, committed on success and rolled back on error.

        Inside another transaction of the same thread it joins that one:
        the outer one commits or rolls back the whole (how one command's
        changes to several stores become one change).
        """
        raise NotImplementedError

    def snapshot(self) -> contextlib.AbstractContextManager[Connection]:
        """A read transaction: every query inside sees the ledger as of one moment."""
        raise NotImplementedError

    def ddl(self, statement: str) -> str:
        """A migration statement in this dialect (migrations are written in SQLite's types)."""
        return statement

    def lock_schema(self, tx: Connection) -> None:
        """Make concurrent migrations (several nodes starting at once) wait for each other."""

    def close(self) -> None:
        raise NotImplementedError


class SQLiteDatabase(Database):
    """Thread-local connections to one SQLite ledger file."""

    dialect = SQLITE

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writers = _writers_of(path)

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
        """``BEGIN IMMEDIATE`` takes the write lock up front, so two writers
        never deadlock upgrading read locks; a nested one joins the outer."""
        conn = self.connection()
        if conn.in_transaction:
            yield conn
            return
        if not self._writers.acquire(timeout=_BUSY_TIMEOUT_MS / 1000):
            raise sqlite3.OperationalError("database is locked (by this process's other writers)")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")
        finally:
            self._writers.release()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
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


def is_url(location: str | Path) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) ledger URL."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def open_database(location: str | Path) -> Database:
    """The ledger at ``location``: a PostgreSQL URL, or else the path of a SQLite file."""
    if is_url(location):
        from .pg import PostgresDatabase  # psycopg is imported only by PostgreSQL ledgers

        return PostgresDatabase(str(location))
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    return SQLiteDatabase(path)
