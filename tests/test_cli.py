"""The operator's command line, driven through ``main`` on a real data root."""

from __future__ import annotations

import gc
import io
import json
from pathlib import Path

import pytest

from ftpbatch.cli import main
from ftpbatch.heap import YOUNG_COLLECTION_EVERY
from ftpbatch.ledger import Ledger
from ftpbatch.passwords import verify_password

from .helpers import SAMPLES


def run(capsys, *argv: str, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data root as ``init`` makes it (commands other than init refuse a root that does not exist)."""
    root = tmp_path / "data"
    assert main(["--root", str(root), "init", "--no-tls"]) == 0
    return root


@pytest.fixture
def fresh_root(tmp_path: Path) -> Path:
    return tmp_path / "fresh"


def test_init_demo_creates_layout_settings_and_a_product(fresh_root, capsys):
    root = fresh_root
    code, out, _ = run(capsys, "--root", str(root), "init", "--demo", "--no-tls")
    assert code == 0
    assert (root / "ftpbatch.toml").exists() and (root / "ftpbatch.db").exists()
    password = out.split("password: ")[1].split()[0]
    ledger = Ledger(root / "ftpbatch.db")
    try:
        assert verify_password(ledger.get_product("demo").password_hash, password)
    finally:
        ledger.close()
    for folder in ("inbox", "reports", "archive", "check", "optout", "control"):
        assert (root / "homes/demo" / folder).is_dir()


def test_product_add_set_list_show(root, capsys, monkeypatch):
    code, _, _ = run(capsys, "--root", str(root), "product", "add", "shop", "--password-stdin", "--dial-prefix", "44",
                     "--allow-ip", "127.0.0.1,10.0.0.0/8", "--sender", "MyShop", "--tps", "20",
                     stdin="a-long-password\n", monkeypatch=monkeypatch)
    assert code == 0
    code, out, _ = run(capsys, "--root", str(root), "product", "list", "--json")
    (shown,) = json.loads(out)
    assert shown["name"] == "shop" and shown["dial_prefix"] == "44" and shown["sender"] == "MyShop"
    assert shown["allow_ip"] == ["127.0.0.1/32", "10.0.0.0/8"]
    assert "password" not in out and "a-long-password" not in out

    code, _, _ = run(capsys, "--root", str(root), "product", "set", "shop", "--no-enabled", "--max-parts", "3",
                     "--password-stdin", stdin="another-password\n", monkeypatch=monkeypatch)
    assert code == 0
    code, out, _ = run(capsys, "--root", str(root), "product", "show", "shop")
    shown = json.loads(out)
    assert shown["enabled"] is False and shown["max_parts"] == 3
    ledger = Ledger(root / "ftpbatch.db")
    try:
        assert verify_password(ledger.get_product("shop").password_hash, "another-password")
    finally:
        ledger.close()


def test_errors_are_one_line_with_the_contract_exit_codes(root, capsys, monkeypatch):
    code, _, err = run(capsys, "--root", str(root), "product", "add", "shop", "--password-stdin", stdin="short\n",
                       monkeypatch=monkeypatch)
    assert code == 1 and err.count("\n") == 1 and "8 characters" in err
    code, _, err = run(capsys, "--root", str(root), "product", "add", "shop")
    assert code == 2 and "--password-stdin" in err
    code, _, err = run(capsys, "--root", str(root), "product", "frobnicate")
    assert code == 2 and err.count("\n") == 1
    code, _, err = run(capsys, "--root", str(root), "process", str(SAMPLES / "hello.csv"), "--product", "nobody")
    assert code == 1 and "no product named 'nobody'" in err


@pytest.fixture
def default_gc_pace():
    """CPython's own collector pace for the test, restored after it (commands change it: ftpbatch/heap.py)."""
    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])
    yield
    gc.set_threshold(*before)


def test_process_runs_one_file_to_its_final_report_and_batch_commands_show_it(root, capsys, monkeypatch, default_gc_pace):
    run(capsys, "--root", str(root), "product", "add", "shop", "--password-stdin", "--dial-prefix", "44",
        stdin="a-long-password\n", monkeypatch=monkeypatch)
    monkeypatch.setenv("FTPBATCH_REPORT_INTERVAL", "0.05")
    code, out, _ = run(capsys, "--root", str(root), "process", str(SAMPLES / "hello.csv"), "--product", "shop",
                       "--connector", "sim://?receipt_delay=0.01")
    assert code == 0
    summary = json.loads(out)
    assert summary["state"] == "complete" and summary["counts"]["delivered"] == summary["counts"]["rows"] > 0
    reports = root / "homes/shop/reports"
    assert (reports / f"hello.csv.{summary['batch']}.report.csv").exists()
    # what process prints is what the sender finds in summary.json
    assert json.loads((reports / f"hello.csv.{summary['batch']}.summary.json").read_text()) == summary
    assert (SAMPLES / "hello.csv").exists()  # the operator's original stays where it was
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_EVERY  # a long-running command: the gateway's collector pace

    code, out, _ = run(capsys, "--root", str(root), "batch", "list", "--json")
    assert [b["batch"] for b in json.loads(out)] == [summary["batch"]]
    code, out, _ = run(capsys, "--root", str(root), "batch", "show", summary["batch"])
    assert json.loads(out)["counts"] == summary["counts"]
    code, _, err = run(capsys, "--root", str(root), "batch", "show", "NOPE")
    assert code == 1 and "no batch" in err
