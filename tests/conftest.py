from collections.abc import Iterator
from pathlib import Path

import pytest

from ftpbatch.ledger import Ledger
from ftpbatch.models import Product
from tests.smsc.fixtures import smsc, smsc_factory  # noqa: F401


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A ledger with one product, ``acme``."""
    ledger = Ledger(tmp_path / "ledger.db", receipt_timeout=3600)
    ledger.add_product(Product("acme", "x"))
    yield ledger
    ledger.close()
