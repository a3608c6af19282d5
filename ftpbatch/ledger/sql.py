"""SQL helpers every store shares: chunked IN-lists, VALUES lists, counters.

SQLite binds at most 32,766 parameters per statement (PostgreSQL 65,535):
long id lists are cut into chunks so any ledger size stays within both.
"""

from __future__ import annotations

import sqlite3
from typing import Iterator, Sequence, TypeVar

T = TypeVar("T")

#: ids per ``IN (...)`` list
IN_CHUNK = 500
#: rows per ``UPDATE ... FROM (VALUES ...)``
VALUES_CHUNK = 2000


def value_marks(rows: int, width: int) -> str:
    """``(?, ?), (?, ?)``: placeholders for ``rows`` tuples of ``width`` values."""
    row = "(" + ", ".join("?" * width) + ")"
    return ", ".join([row] * rows)


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def in_lists(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[tuple[str, Sequence[T]]]:
    """``("?, ?, ?", part)`` per chunk of ``items``: the marks of an ``IN (...)`` list and the values to bind."""
    for part in chunks(items, size):
        yield ", ".join("?" * len(part)), part


def bump_counter(tx: sqlite3.Connection, name: str, by: int = 1) -> None:
    """Add ``by`` to the counter ``name`` (table ``counters``), in the caller's transaction."""
    tx.execute(
        "INSERT INTO counters (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
        (name, by),
    )


def read_counter(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0
