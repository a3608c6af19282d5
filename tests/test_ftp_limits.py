"""Limits with real clients: file size cut while the upload runs, storage quota, retention."""

from __future__ import annotations

import ftplib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from ftpbatch.cli import main
from ftpbatch.ledger import Ledger
from ftpbatch.models import Product
from ftpbatch.security.storage_guard import apply_retention, remove_orphan_uploads
from ftpbatch.storage import LocalStorage

from .helpers import ServerProcess, add_product, find_summary, intake_barrier, upload, wait_for_summary

LIMIT = 100_000
BIG = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("limits")
    accounts = {
        "small": add_product(root, "small", "small-password", dial_prefix="44", max_file_bytes=LIMIT),
        "quota": add_product(root, "quota", "quota-password", dial_prefix="44", quota_bytes=30_000),
        "full": add_product(root, "full", "full-password", quota_bytes=10),
    }
    (root / "homes/full/archive/old.csv").write_bytes(b"x" * 100)  # over its quota before the server starts
    server = ServerProcess(root).start()
    yield server, accounts
    server.stop()
    log = server.log()
    assert "Traceback" not in log, log


def csv_of_size(size: int, tag: str) -> bytes:
    """A valid batch of exactly ``size`` bytes: distinct numbers, short texts."""
    out = bytearray(b"to,text\n")
    n = 0
    while size - len(out) > 200:
        out += f"0770{n:07d},{tag} {n}\n".encode()
        n += 1
    last = f"0770{n:07d},{tag} ".encode()
    return bytes(out + last + b"x" * (size - len(out) - len(last) - 1) + b"\n")


def batch_count(root: Path) -> int:
    ledger = Ledger(root / "ftpbatch.db")
    try:
        return len(ledger.list_batches(limit=100_000))
    finally:
        ledger.close()


def push_until_cut(client: ftplib.FTP, command: str, total: int) -> tuple[int, str]:
    """Send ``total`` bytes on a data connection; returns (bytes sent before the cut, the reply)."""
    conn = client.transfercmd(command)
    sent = 0
    block = b"0" * 65536
    try:
        while sent < total:
            conn.sendall(block)
            sent += len(block)
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        conn.close()
    try:
        reply = client.getresp()
    except ftplib.Error as exc:
        reply = str(exc)
    return sent, reply


def test_an_upload_over_max_file_bytes_is_cut_while_it_runs(site):
    server, accounts = site
    before = batch_count(server.root)
    with server.ftp(accounts["small"]) as client:
        sent, reply = push_until_cut(client, "STOR /inbox/huge.csv", BIG)
        assert reply.startswith("552 Transfer cut: the file is larger than the 100000 bytes allowed for this product (code 131)")
        assert sent < BIG // 2  # cut long before the client was done, not after
        assert client.nlst("/inbox") == []
        # the session is still usable, and a file right at the limit goes through
        upload(client, "at-limit.csv", csv_of_size(LIMIT, "at the limit"))
    summary = wait_for_summary(server.root, "small", "at-limit.csv", ("complete",))
    assert summary["size"] == LIMIT and summary["counts"]["rejected"] == 0
    # at-limit.csv came after huge.csv and uploads are claimed in order: a kept huge.csv would be in by now
    assert find_summary(server.root, "small", "huge.csv") is None
    assert batch_count(server.root) == before + 1  # only the one at the limit
    assert not [p for p in (server.root / "homes/small/inbox").iterdir()]


def test_curl_upload_over_the_limit_fails_and_leaves_nothing(site, tmp_path: Path):
    server, accounts = site
    big = tmp_path / "curl-huge.csv"
    big.write_bytes(csv_of_size(5 * LIMIT, "curl"))
    before = batch_count(server.root)
    result = subprocess.run(["curl", "-sS", "-T", str(big), server.url(accounts["small"], "/inbox/")], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0
    intake_barrier(server, accounts["small"])  # uploads are claimed in order: a kept one would be in by now
    assert batch_count(server.root) == before + 1
    assert find_summary(server.root, "small", "curl-huge.csv") is None
    assert not list((server.root / "homes/small/inbox").iterdir())


def test_appending_to_a_part_file_counts_what_it_already_holds(site):
    server, accounts = site
    with server.ftp(accounts["small"]) as client:
        upload(client, "grow.csv.part", b"x" * 60_000)
        _, reply = push_until_cut(client, "APPE /inbox/grow.csv.part", 60_000)
        assert reply.startswith("552 Transfer cut")
        assert client.nlst("/inbox") == []  # the over-size .part is gone too


def test_storage_quota_cuts_an_upload_and_refuses_a_full_product(site):
    server, accounts = site
    with server.ftp(accounts["quota"]) as client:
        upload(client, "first.csv", csv_of_size(25_000, "first"))
        wait_for_summary(server.root, "quota", "first.csv", ("complete",))
        _, reply = push_until_cut(client, "STOR /inbox/second.csv", 200_000)
        assert reply.startswith("552 Transfer cut: the storage quota of this product (30000 bytes")
        assert client.nlst("/inbox") == []
    with server.ftp(accounts["full"]) as client:
        with pytest.raises(ftplib.error_perm, match=r"^552 The storage quota of this product is full \(\d+ of 10 bytes"):
            upload(client, "any.csv", b"to,text\n07700900001,hi\n")


def test_quota_and_retention_are_product_options(tmp_path: Path, capsys):
    root = str(tmp_path)
    add_product(tmp_path, "shop", "shop-password")
    assert main(["--root", root, "product", "set", "shop", "--quota-mb", "2.5", "--retention-days", "7"]) == 0
    capsys.readouterr()
    assert main(["--root", root, "product", "show", "shop"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["quota_bytes"] == 2_500_000 and shown["retention_days"] == 7
    assert main(["--root", root, "product", "set", "shop", "--quota-mb", "0"]) == 0
    assert main(["--root", root, "product", "set", "shop", "--retention-days", "-1"]) == 1


def test_retention_deletes_old_archives_and_reports_only(tmp_path: Path):
    storage = LocalStorage(tmp_path)
    storage.prepare()
    now = time.time()
    old, recent = now - 10 * 86400, now - 3600

    def file(path: Path, mtime: float) -> Path:
        path.write_text("x")
        os.utime(path, (mtime, mtime))
        return path

    for name in ("short", "default", "forever"):
        storage.ensure_home(name)
    files = {
        "old archive": file(storage.archive_dir("short") / "a.csv", old),
        "recent archive": file(storage.archive_dir("short") / "b.csv", recent),
        "old report": file(storage.reports("short") / "a.csv.X.report.csv", old),
        "usage report": file(storage.reports("short") / "usage-2020-01.csv", old),
        "orphan upload": file(storage.inbox("short") / ".upload-abc-a.csv", now - 2 * 86400),
        "pending upload": file(storage.inbox("short") / "waiting.csv", old),
        "default keeps 30 days": file(storage.archive_dir("default") / "c.csv", old),
        "forever": file(storage.archive_dir("forever") / "d.csv", now - 1000 * 86400),
    }
    products = [Product("short", "h", retention_days=2), Product("default", "h"), Product("forever", "h", retention_days=0)]
    assert apply_retention(storage, products, default_days=30, now=now) == 3
    gone = {label for label, path in files.items() if not path.exists()}
    assert gone == {"old archive", "old report", "orphan upload"}

    running = file(storage.inbox("default") / ".upload-def-b.csv", now)
    assert remove_orphan_uploads(storage) == 1  # at start-up no upload can still be running
    assert not running.exists()
