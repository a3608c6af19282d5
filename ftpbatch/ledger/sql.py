"""SQL helpers every store shares: chunked IN-lists, VALUES lists, counters, and the dialect's words.

SQLite binds at most 32,766 parameters per statement (PostgreSQL 65,535):
long id lists are cut into chunks so any ledger size stays within both.

The stores' SQL is written once for both backends; the few expressions the
two engines spell differently come from the functions below that take a
dialect (``SQLITE`` or ``POSTGRESQL``, see ledger/db.py), and the rest of
the translation (placeholders, types) is ledger/pg.py's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence, TypeVar

from ..lazy import lazy_module
from .db import POSTGRESQL, SQLITE, Connection

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_module("pandas")

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


def bump_counter(tx: Connection, name: str, by: int = 1) -> None:
    """Add ``by`` to the counter ``name`` (table ``counters``), in the caller's transaction."""
    tx.execute(
        "INSERT INTO counters (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
        (name, by),
    )


def read_counter(conn: Connection, name: str) -> int:
    row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


def dialect_of(conn: Connection) -> str:
    """``POSTGRESQL`` for a connection of the PostgreSQL ledger, else ``SQLITE``."""
    return str(getattr(conn, "dialect", SQLITE))


def skip_locked(dialect: str) -> str:
    """The clause that makes a ``SELECT`` of queue rows pass over rows another node is taking right now.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` (DESIGN.md §12): two nodes leasing
    at once each lock and take different rows, neither waits for the other,
    and a row changed by a transaction that committed meanwhile is checked
    again against the query's conditions. SQLite needs nothing: its write
    transactions (``BEGIN IMMEDIATE``) run one at a time.
    """
    return " FOR UPDATE SKIP LOCKED" if dialect == POSTGRESQL else ""


def greatest(dialect: str) -> str:
    """The SQL function giving the largest of its arguments (SQLite's multi-argument MAX)."""
    return "GREATEST" if dialect == POSTGRESQL else "MAX"


def whole_quotient(expr: str, divisor: int, dialect: str) -> str:
    """``expr / divisor`` rounded down to an integer, for ``expr >= 0`` (SQLite's CAST truncates, PostgreSQL's rounds)."""
    if dialect == POSTGRESQL:
        return f"CAST(FLOOR(({expr}) / {divisor}) AS BIGINT)"
    return f"CAST(({expr}) / {divisor} AS INTEGER)"


def read_frame(conn: Connection, sql: str, params: Sequence[Any]) -> pd.DataFrame:
    """A query's rows as a DataFrame, as ``pandas.read_sql_query`` makes it from SQLite."""
    if dialect_of(conn) == SQLITE:
        return pd.read_sql_query(sql, conn, params=params)
    cur: Any = conn.execute(sql, params)
    columns = [c.name for c in cur.description]
    return pd.DataFrame.from_records([tuple(r) for r in cur.fetchall()], columns=columns, coerce_float=True)
