"""The command line against a PostgreSQL ledger (``--ledger URL``, ``FTPBATCH_LEDGER``, ``[ledger] url``)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ftpbatch.cli import main
from ftpbatch.config import load_settings
from ftpbatch.errors import ConfigError
from ftpbatch.ledger import Ledger

from .helpers import SAMPLES, ServerProcess, add_product, download, read_report, upload, wait_for_summary


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_of_a_batch_works_against_postgresql(tmp_path: Path, pg_url: str, capsys, monkeypatch):
    root = tmp_path / "data"
    base = ("--root", str(root), "--ledger", pg_url)
    assert run(capsys, *base, "init", "--no-tls")[0] == 0
    assert not (root / "ftpbatch.db").exists()  # the ledger is the server's, not a file in the root
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert run(capsys, *base, "product", "add", "shop", "--password-stdin", "--dial-prefix", "44")[0] == 0
    monkeypatch.setenv("FTPBATCH_REPORT_INTERVAL", "0.05")
    code, out, _ = run(capsys, *base, "process", str(SAMPLES / "hello.csv"), "--product", "shop",
                       "--connector", "sim://?receipt_delay=0.01")
    assert code == 0
    summary = json.loads(out)
    assert summary["state"] == "complete" and summary["counts"]["delivered"] == summary["counts"]["rows"] > 0
    assert (root / f"homes/shop/reports/hello.csv.{summary['batch']}.report.csv").exists()

    # the same ledger found through the environment instead of the flag
    monkeypatch.setenv("FTPBATCH_LEDGER", pg_url)
    code, out, _ = run(capsys, "--root", str(root), "batch", "show", summary["batch"])
    assert code == 0 and json.loads(out)["counts"] == summary["counts"]
    code, out, _ = run(capsys, "--root", str(root), "product", "list", "--json")
    assert [p["name"] for p in json.loads(out)] == ["shop"]
    code, out, _ = run(capsys, "--root", str(root), "report", "usage", "--json")
    assert code == 0 and sum(r["delivered"] for r in json.loads(out)) == summary["counts"]["delivered"]
    code, out, _ = run(capsys, "--root", str(root), "status", "--json")
    assert [p["name"] for p in json.loads(out)["products"]] == ["shop"], out
    assert code == 1 and json.loads(out)["server"]["running"] is False  # 1: no server runs (as with SQLite)
    # ...and not the SQLite file: without the URL the root's own (empty) ledger is used
    monkeypatch.delenv("FTPBATCH_LEDGER")
    code, out, _ = run(capsys, "--root", str(root), "batch", "list", "--json")
    assert code == 0 and json.loads(out) == []


def test_the_ledger_url_comes_from_the_settings_file_and_must_be_postgresql(tmp_path: Path):
    (tmp_path / "ftpbatch.toml").write_text('[ledger]\nurl = "postgresql://u@h:5432/d"\n')
    assert load_settings(tmp_path, environ={}).ledger_location == "postgresql://u@h:5432/d"
    assert load_settings(tmp_path, environ={"FTPBATCH_LEDGER": "postgresql://x@y/z"}).ledger_location == "postgresql://x@y/z"
    (tmp_path / "ftpbatch.toml").write_text('[ledger]\nurl = "mysql://u@h/d"\n')
    with pytest.raises(ConfigError, match="postgresql://"):
        load_settings(tmp_path, environ={})


def test_serve_on_a_postgresql_ledger_completes_an_ftp_upload(tmp_path: Path, pg_url: str):
    root = tmp_path / "data"
    account = add_product(root, "shop", "shop-password", ledger_url=pg_url, dial_prefix="44")
    with ServerProcess(root, "--connector", "sim://?receipt_delay=0.01", ledger=pg_url) as server:
        client = server.ftp(account)
        try:
            upload(client, "campaign.csv", b"to,text\n07700900001,Hi Ann\n07700900002,Hi Bob\n12,short\n")
            summary = wait_for_summary(root, "shop", "campaign.csv")
            assert summary["state"] == "complete", summary
            report = read_report(root, "shop", summary)
            assert [r["status"] for r in report] == ["004", "004", "005"]
            # the report files come from the PostgreSQL ledger, through the same FTP session
            assert b"447700900001" in download(client, f"/reports/campaign.csv.{summary['batch']}.report.csv")
        finally:
            client.quit()
    assert "Traceback" not in server.log(), server.log()
    ledger = Ledger(pg_url)
    try:
        batch = ledger.get_batch(summary["batch"])
        assert batch is not None and batch.state == "complete"
    finally:
        ledger.close()
    assert not (root / "ftpbatch.db").exists()
