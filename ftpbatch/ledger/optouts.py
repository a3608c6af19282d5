"""Opt-out lists: numbers a product must not send to (DESIGN.md §6, code 122).

Numbers are stored as E.164 digits (no ``+``), as the rules stage normalises
destinations; whoever adds them normalises them first (the product's dial
prefix applies to national numbers). Adding a number already on the list
keeps its first ``since`` and ``source``.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Iterable

from ..errors import NotFound
from .db import Database
from .records import OptOut
from .sql import bump_counter, chunks, read_counter

#: where an opt-out came from
SOURCES = ("ftp", "cli", "stop-reply")


class OptOutStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add_optouts(self, product: str, numbers: Iterable[str], source: str, now: float | None = None) -> int:
        """Put ``numbers`` on the product's list; returns how many were not on it yet."""
        if source not in SOURCES:
            raise ValueError(f"opt-out source {source!r} is not one of {', '.join(SOURCES)}")
        now = time.time() if now is None else now
        wanted = sorted(set(numbers))
        added = 0
        with self.db.transaction() as tx:
            if tx.execute("SELECT 1 FROM products WHERE name = ?", (product,)).fetchone() is None:
                raise NotFound(f"no product named {product!r}")
            for part in chunks(wanted, 2000):
                cur = tx.executemany(
                    "INSERT INTO optouts (product, number, since, source) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (product, number) DO NOTHING",
                    [(product, number, now, source) for number in part],
                )
                added += cur.rowcount
            if added:
                bump_counter(tx, _counter(product), added)
        return added

    def remove_optouts(self, product: str, numbers: Iterable[str]) -> int:
        """Take ``numbers`` off the product's list; returns how many were on it."""
        removed = 0
        with self.db.transaction() as tx:
            for part in chunks(sorted(set(numbers)), 2000):
                cur = tx.executemany(
                    "DELETE FROM optouts WHERE product = ? AND number = ?", [(product, number) for number in part]
                )
                removed += cur.rowcount
            if removed:
                bump_counter(tx, _counter(product), removed)
        return removed

    def list_optouts(self, product: str) -> list[OptOut]:
        """The product's list, oldest first."""
        rows = self.db.connection().execute(
            "SELECT number, since, source FROM optouts WHERE product = ? ORDER BY since, number", (product,)
        ).fetchall()
        return [OptOut(*row) for row in rows]

    def optout_numbers(self, product: str) -> list[str]:
        """Only the numbers (what intake checks a batch against, 100,000 in a few hundredths of a second)."""
        sql, conn = "SELECT number FROM optouts WHERE product = ?", self.db.connection()
        if isinstance(conn, sqlite3.Connection):
            cursor = conn.cursor()
            cursor.row_factory = None  # plain tuples: a third of the time of sqlite3.Row for a long list
            return [row[0] for row in cursor.execute(sql, (product,))]
        return [row[0] for row in conn.execute(sql, (product,))]

    def optouts_version(self, product: str) -> int:
        """A number that grows with every change of the product's list (to tell whether /reports/optout.csv is behind)."""
        return read_counter(self.db.connection(), _counter(product))


def _counter(product: str) -> str:
    return f"optouts:{product}"
