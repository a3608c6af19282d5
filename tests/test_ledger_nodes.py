"""The nodes contract (tests/ledger_contract_nodes.py) run against the SQLite ledger and the PostgreSQL one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ftpbatch.ledger import Ledger
from ftpbatch.ledger.protocol import LedgerProtocol
from tests.ledger_contract import OpenLedger
from tests.ledger_contract_nodes import NodesContract


def _opener(location: str | Path) -> Iterator[OpenLedger]:
    opened: list[Ledger] = []

    def open_ledger(receipt_timeout: float = 3600.0) -> LedgerProtocol:
        ledger = Ledger(location, receipt_timeout=receipt_timeout)
        opened.append(ledger)
        return ledger

    yield open_ledger
    for ledger in opened:
        ledger.close()


class TestSQLiteNodes(NodesContract):
    @pytest.fixture
    def open_ledger(self, tmp_path: Path) -> Iterator[OpenLedger]:
        yield from _opener(tmp_path / "ledger.db")


class TestPostgresNodes(NodesContract):
    """On a real PostgreSQL server (tests/pg_server.py), one database per test."""

    @pytest.fixture
    def open_ledger(self, pg_url: str) -> Iterator[OpenLedger]:
        yield from _opener(pg_url)
