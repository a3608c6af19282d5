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


def null_columns(rows: Sequence[Sequence[Any]], width: int) -> tuple[bool, ...]:
    """For each of ``width`` columns: is it None in every row? (False for no rows.)

    Why it matters: Python 3.11's sqlite3 binds None through its adapter
    look-up, which raises and discards an AttributeError each time: 0.45 µs
    a value, three times an int's cost. A column that is None throughout is
    written as the literal ``NULL`` instead (a message's missing sender,
    client id, validity and error text were a tenth of the sink's CPU).
    ``all`` stops at the first value, so a filled column costs one look.
    """
    if not rows:
        return (False,) * width
    return tuple(all(row[i] is None for row in rows) for i in range(width))


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def in_lists(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[tuple[str, Sequence[T]]]:
    """``("?, ?, ?", part)`` per chunk of ``items``: the marks of an ``IN (...)`` list and the values to bind."""
    for part in chunks(items, size):
        yield ", ".join("?" * len(part)), part


def member_of(conn: Connection, column: str, items: Sequence[T], sql_type: str) -> Iterator[tuple[str, Sequence[Any]]]:
    """``(condition, parameters)``: ``column`` is one of ``items``, as few statements as the dialect allows.

    SQLite: ``column IN (?, ?, ...)``, a chunk of ``IN_CHUNK`` items per
    statement. PostgreSQL: ``column = ANY(?)`` with the whole list as one
    array parameter of ``sql_type``: the statement's text is the same for
    any number of items, so psycopg parses it once and the server plans it
    once (a 500-mark ``IN`` list was parsed anew by psycopg on every call).
    """
    if dialect_of(conn) == POSTGRESQL:
        if items:
            yield f"{column} = ANY(CAST(? AS {sql_type}[]))", (list(items),)
        return
    for marks, part in in_lists(items):
        yield f"{column} IN ({marks})", part


def keys_hint(conn: Connection, column: str, keys: Sequence[Any], sql_type: str) -> tuple[str, tuple[Any, ...]]:
    """PostgreSQL: `` AND column = ANY(?)`` for a join with a :func:`values_table`, to lead the planner to the index.

    Joined only on ``v.column1``, PostgreSQL's plan rests on its statistics
    of the messages table, and those lag behind a table that grows by
    thousands of rows a second: it then read every row of the account and
    compared each with every receipt (7.5 ms a statement instead of 0.9).
    Saying the keys outright makes it an index look-up whatever the
    statistics say. SQLite needs no hint (nothing is added).
    """
    if dialect_of(conn) == POSTGRESQL:
        return f" AND {column} = ANY(CAST(? AS {sql_type}[]))", (list(keys),)
    return "", ()


def values_table(conn: Connection, rows: Sequence[Sequence[Any]], sql_types: Sequence[str]) -> tuple[str, list[Any]]:
    """``(source, parameters)``: ``rows`` as a table ``v`` (columns ``v.column1`` ...) to join in a statement.

    SQLite: ``(VALUES (?, ?), ...) AS v``, a parameter per value. PostgreSQL:
    ``unnest(?, ?) AS v(column1, column2)``, one array parameter per column
    of ``sql_types``: one short statement text for any number of rows (a
    2,000-row VALUES list was 6,000 placeholders psycopg parsed every time).
    """
    width = len(sql_types)
    if dialect_of(conn) == POSTGRESQL:
        arrays = ", ".join(f"CAST(? AS {t}[])" for t in sql_types)
        names = ", ".join(f"column{i + 1}" for i in range(width))
        return f"unnest({arrays}) AS v({names})", [list(column) for column in zip(*rows)] if rows else [[]] * width
    nulls = null_columns(rows, width)
    if not any(nulls):
        return f"(VALUES {value_marks(len(rows), width)}) AS v", [value for row in rows for value in row]
    # a column None in every row: NULL in the statement, not a bound None each (see null_columns)
    row = "(" + ", ".join("NULL" if null else "?" for null in nulls) + ")"
    kept = [i for i, null in enumerate(nulls) if not null]
    return f"(VALUES {', '.join([row] * len(rows))}) AS v", [r[i] for r in rows for i in kept]


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
