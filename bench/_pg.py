"""The PostgreSQL ledger for the benchmarks: a given URL, or a throw-away server (``--pg``).

``--pg`` starts a cluster of its own (tests/pg_server.py: initdb into a temp
dir, a loopback port, fsync and synchronous_commit off, as the tests run it)
and removes it after the run; ``--ledger URL`` uses an existing server. Each
measurement gets a fresh, empty database of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import pg_server  # noqa: E402


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--ledger", metavar="URL", help="also measure on this PostgreSQL server (postgresql://...; "
                       "a database per measurement is created and dropped there)")
    group.add_argument("--pg", action="store_true", help="also measure on a throw-away local PostgreSQL server")


@contextlib.contextmanager
def databases(args: argparse.Namespace) -> Iterator[Callable[[], str] | None]:
    """A maker of fresh database URLs on the chosen server, or None when only SQLite is measured."""
    if args.pg:
        bindir = pg_server.bin_dir()
        if bindir is None:
            raise SystemExit("--pg: PostgreSQL is not installed (/usr/lib/postgresql/*/bin)")
        server = pg_server.PgServer(bindir).start()
        try:
            yield server.new_database
        finally:
            server.stop()
    elif args.ledger:
        base = args.ledger
        made: list[str] = []

        def new_database() -> str:
            name = f"ftpbatch_bench_{len(made) + 1}"
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                conn.execute(f"CREATE DATABASE {name}")
            url = base.rsplit("/", 1)[0] + "/" + name
            made.append(name)
            return url

        try:
            yield new_database
        finally:
            with psycopg.connect(base, autocommit=True) as conn:
                for name in made:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    else:
        yield None
