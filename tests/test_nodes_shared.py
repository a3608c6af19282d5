"""Two real ``serve`` nodes on one PostgreSQL ledger and one root: bans and credentials hold on both.

Bans live in the ledger (ledger/bans.py); each node's guard re-reads them
every second (security/bans.py), so a ban made on one node, or lifted with
``ftpbatch ban lift``, holds on the other within a second or two. A login
is checked against the product as the ledger has it now: the verified-
credentials cache (passwords.VerifiedCache) is keyed by the stored hash, so
a password changed on any node (or the CLI) refuses the old one everywhere
at once.
"""

from __future__ import annotations

import ftplib
import io
import re
import time
from pathlib import Path
from typing import Iterator

import pytest

from ftpbatch.cli import main
from ftpbatch.ledger import Ledger
from tests.helpers import Account, ServerProcess, add_product

BAN_FAILURES = 3
ENV = {
    "FTPBATCH_FTP_BAN_FAILURES": str(BAN_FAILURES),
    "FTPBATCH_FTP_BAN_WINDOW": "60",
    "FTPBATCH_FTP_BAN_SECONDS": "600",
}


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str) -> Iterator[tuple[ServerProcess, ServerProcess, Account]]:
    root = tmp_path / "root"
    account = add_product(root, "acme", "acme-password", ledger_url=pg_url)
    a = ServerProcess(root, env={**ENV, "FTPBATCH_NODE_ID": "node-a"}, ledger=pg_url).start()
    b = ServerProcess(root, env={**ENV, "FTPBATCH_NODE_ID": "node-b"}, ledger=pg_url)
    b.log_path = root / "server-b.log"
    b.start()
    yield a, b, account
    for node in (a, b):
        node.stop()
        assert "Traceback" not in node.log(), node.log()


def connect(node: ServerProcess, source_ip: str) -> ftplib.FTP:
    client = ftplib.FTP(timeout=10)
    try:
        client.connect(node.host, node.port, source_address=(source_ip, 0))
    except BaseException:
        client.close()
        raise
    return client


def refused_within(node: ServerProcess, source_ip: str, seconds: float) -> float:
    """Seconds until ``node`` greets ``source_ip`` with the ban's 421 (fails after ``seconds``)."""
    started = time.monotonic()
    while True:
        try:
            connect(node, source_ip).close()
        except ftplib.error_temp as exc:
            assert re.match(rf"^421 Too many failed logins from {re.escape(source_ip)}: .*banned until", str(exc))
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, f"{source_ip} still welcome on the other node after {seconds} s"
        time.sleep(0.05)


def welcomed_within(node: ServerProcess, source_ip: str, seconds: float) -> float:
    started = time.monotonic()
    while True:
        try:
            connect(node, source_ip).close()
            return time.monotonic() - started
        except ftplib.error_temp:
            assert time.monotonic() - started < seconds, f"{source_ip} still banned after {seconds} s"
            time.sleep(0.05)


def test_a_ban_made_on_one_node_holds_on_the_other_within_two_seconds(nodes, capsys, pg_url: str) -> None:
    a, b, account = nodes
    with connect(b, "127.0.0.7") as client:  # node-b welcomes the address before
        client.login(account.name, account.password)
    client = connect(a, "127.0.0.7")
    for _ in range(BAN_FAILURES - 1):
        with pytest.raises(ftplib.error_perm, match=r"^530 "):
            client.login("acme", "wrong-password")
    with pytest.raises(ftplib.error_temp, match=r"^421 Too many failed logins"):
        client.login("acme", "wrong-again")
    client.close()
    took = refused_within(b, "127.0.0.7", 2.5)
    with connect(b, "127.0.0.8") as other:  # other addresses are still welcome on node-b
        other.login(account.name, account.password)
    # lifted with the CLI against the shared ledger: welcome again on both
    assert main(["--root", str(a.root), "--ledger", pg_url, "ban", "lift", "127.0.0.7"]) == 0
    capsys.readouterr()
    lifted = max(welcomed_within(a, "127.0.0.7", 2.5), welcomed_within(b, "127.0.0.7", 2.5))
    print(f"ban on node-b after {took:.2f} s; lift on both after {lifted:.2f} s")


def test_a_password_changed_through_the_ledger_refuses_the_old_one_on_every_node(nodes, pg_url: str, monkeypatch) -> None:
    a, b, account = nodes
    for node in (a, b):  # both nodes have checked (and cached) the current password
        with node.ftp(account) as client:
            client.voidcmd("NOOP")
    monkeypatch.setattr("sys.stdin", io.StringIO("a-new-long-password\n"))
    assert main(["--root", str(a.root), "--ledger", pg_url, "product", "set", "acme", "--password-stdin"]) == 0
    for node in (a, b):
        client = connect(node, "127.0.0.1")
        with pytest.raises(ftplib.error_perm, match=r"^530 Login incorrect"):
            client.login(account.name, account.password)
        client.close()
        with node.ftp(Account("acme", "a-new-long-password")) as client:
            client.voidcmd("NOOP")


def test_each_run_once_job_is_held_by_one_node_and_shown_in_its_heartbeat(nodes, pg_url: str) -> None:
    a, b, _ = nodes
    ledger = Ledger(pg_url)
    try:
        deadline = time.monotonic() + 10
        while True:
            held = {n.node_id: n.detail.get("jobs", []) for n in ledger.list_nodes()}
            jobs = [job for names in held.values() for job in names]
            if {"reports", "usage-files", "rescan"} <= set(jobs) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert set(held) == {"node-a", "node-b"}
        for job in ("reports", "usage-files", "rescan"):
            assert jobs.count(job) == 1, held  # one node each, and the heartbeat says which
    finally:
        ledger.close()
