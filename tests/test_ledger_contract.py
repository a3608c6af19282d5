"""The ledger contract (tests/ledger_contract.py) run against the SQLite ledger and the PostgreSQL one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ftpbatch.ledger import Ledger
from ftpbatch.ledger.protocol import LedgerProtocol
from tests.ledger_contract import LedgerContract, OpenLedger


class TestSQLiteLedger(LedgerContract):
    @pytest.fixture
    def open_ledger(self, tmp_path: Path) -> Iterator[OpenLedger]:
        opened: list[Ledger] = []

        def open_ledger(receipt_timeout: float = 3600.0) -> LedgerProtocol:
            ledger = Ledger(tmp_path / "ledger.db", receipt_timeout=receipt_timeout)
            opened.append(ledger)
            return ledger

        yield open_ledger
        for ledger in opened:
            ledger.close()


class TestPostgresLedger(LedgerContract):
    """The same suite on a real PostgreSQL server (tests/pg_server.py), one database per test."""

    @pytest.fixture
    def open_ledger(self, pg_url: str) -> Iterator[OpenLedger]:
        opened: list[Ledger] = []

        def open_ledger(receipt_timeout: float = 3600.0) -> LedgerProtocol:
            ledger = Ledger(pg_url, receipt_timeout=receipt_timeout)
            opened.append(ledger)
            return ledger

        yield open_ledger
        for ledger in opened:
            ledger.close()
