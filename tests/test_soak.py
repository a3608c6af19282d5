"""Soak: many FTP clients uploading at once; every file ends in a final summary, none lost.

Marked ``soak`` (``pytest -m soak`` runs only it, ``-m 'not soak'`` skips it).
``FTPBATCH_SOAK_CLIENTS`` and ``FTPBATCH_SOAK_FILES`` scale it (defaults 50 x 10).
"""

from __future__ import annotations

import concurrent.futures
import ftplib
import io
import json
import os
import time
from pathlib import Path

import pytest

from ftpbatch.ledger import Ledger

from .helpers import ServerProcess, add_product

pytestmark = pytest.mark.soak

CLIENTS = int(os.environ.get("FTPBATCH_SOAK_CLIENTS", "50"))
FILES = int(os.environ.get("FTPBATCH_SOAK_FILES", "10"))


def _batch(client: int, n: int) -> bytes:
    if n % 5 == 4:
        return f"this is not a batch {client}-{n}\x00\x01\x02".encode()  # rejected, never lost
    rows = "".join(f"0770{client:03d}{n:02d}{r:02d},soak {client}-{n}-{r}\n" for r in range(3))
    return f"to,text\n{rows}".encode()


def _client(server: ServerProcess, account_name: str, password: str, client: int) -> list[str]:
    names = []
    ftp = ftplib.FTP(timeout=30)
    ftp.connect(server.host, server.port)
    ftp.login(account_name, password)
    try:
        for n in range(FILES):
            name = f"soak-{client:03d}-{n:02d}.csv"
            reply = ftp.storbinary(f"STOR /inbox/{name}", io.BytesIO(_batch(client, n)))
            assert reply.startswith("226"), reply
            names.append(name)
    finally:
        ftp.quit()
    return names


def test_many_clients_upload_at_once_and_every_file_gets_a_final_summary(tmp_path: Path):
    root = tmp_path / "soak"
    products = [add_product(root, f"soak{p}", f"soak-password-{p}", dial_prefix="44") for p in range(5)]
    env = {"FTPBATCH_INTAKE_RESCAN_SECONDS": "5"}
    with ServerProcess(root, "--connector", "sim://?receipt_delay=0.01", env=env) as server:
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            futures = [
                pool.submit(_client, server, products[c % len(products)].name, products[c % len(products)].password, c)
                for c in range(CLIENTS)
            ]
            uploaded = {(products[c % len(products)].name, name) for c, f in enumerate(futures) for name in f.result()}
        upload_seconds = time.monotonic() - started
        assert len(uploaded) == CLIENTS * FILES

        deadline = time.monotonic() + 60
        while True:
            summaries = {}
            for product in products:
                for path in (root / "homes" / product.name / "reports").glob("*.summary.json"):
                    document = json.loads(path.read_text())
                    summaries[(product.name, document["file"])] = document["state"]
            final = {key for key, state in summaries.items() if state in ("complete", "rejected")}
            if final >= uploaded or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        log = server.log()

    missing = uploaded - final
    assert not missing, f"{len(missing)} file(s) without a final summary, e.g. {sorted(missing)[:5]}"
    assert len(summaries) == len(uploaded)  # nothing processed twice
    rejected = [key for key in uploaded if summaries[key] == "rejected"]
    assert len(rejected) == CLIENTS * (FILES // 5)  # exactly the garbage ones
    for product in products:
        assert not list((root / "homes" / product.name / "inbox").iterdir())
    assert not [p for p in (root / "spool").rglob("*") if p.is_file()]
    ledger = Ledger(root / "ftpbatch.db")
    try:
        assert len(ledger.list_batches(limit=100_000)) == len(uploaded)
    finally:
        ledger.close()
    assert "Traceback" not in log and " ERROR " not in log, log[-5000:]
    print(f"{len(uploaded)} uploads by {CLIENTS} clients in {upload_seconds:.1f} s; all final after {time.monotonic() - started:.1f} s")
