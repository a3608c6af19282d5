"""Nodes of one ledger, as real ``ftpbatch serve`` processes see each other: ``status``, ``/status``, node ids."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ftpbatch.cli import main
from ftpbatch.ledger import Ledger

from .helpers import ServerProcess, add_product


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(capsys: pytest.CaptureFixture[str], root: Path, ledger: str | None, *extra: str) -> str:
    capsys.readouterr()
    main(["--root", str(root), *(("--ledger", ledger) if ledger else ()), "status", *extra])
    return capsys.readouterr().out


def nodes_of(capsys: pytest.CaptureFixture[str], root: Path, ledger: str | None) -> dict[str, dict[str, Any]]:
    return {n["node_id"]: n for n in json.loads(status(capsys, root, ledger, "--json"))["nodes"]}


def wait_until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_two_nodes_on_one_postgresql_ledger_see_each_other_and_a_dead_one_is_shown_down(
        tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    add_product(tmp_path, "acme", "acme-password", ledger_url=pg_url)
    env = {"FTPBATCH_DISPATCH_LEASE_SECONDS": "2"}
    port_b = free_port()
    a = ServerProcess(tmp_path, "--node-id", "node-a", ledger=pg_url, env=env, group=True).start()
    b = ServerProcess(tmp_path, "--node-id", "node-b", "--metrics-port", str(port_b), ledger=pg_url, env=env).start()
    try:
        # the first heartbeat after the start says what each node holds
        def beaten() -> dict[str, dict[str, Any]] | None:
            found = nodes_of(capsys, tmp_path, pg_url)
            return found if len(found) == 2 and all(n["binds"] == 1 for n in found.values()) else None

        nodes = wait_until(beaten, 5)
        assert nodes and sorted(nodes) == ["node-a", "node-b"]
        assert nodes["node-a"]["ftp_address"] == f"127.0.0.1:{a.port}"
        assert nodes["node-b"]["ftp_address"] == f"127.0.0.1:{b.port}"
        assert all(n["state"] == "up" and n["heartbeat_age"] < 3 and n["lease_seconds"] == 2 for n in nodes.values())
        assert all(n["binds"] == 1 and n["leases"] == 0 for n in nodes.values())  # the simulator: one link each
        # node b's /status shows node a too (the ledger's view, not its own)
        with urllib.request.urlopen(f"http://127.0.0.1:{port_b}/status", timeout=5) as answer:
            served = json.loads(answer.read())
        assert served["server"]["node_id"] == "node-b"
        assert sorted(n["node_id"] for n in served["nodes"]) == ["node-a", "node-b"]
        before = nodes["node-a"]["heartbeat_at"]
        assert wait_until(lambda: nodes_of(capsys, tmp_path, pg_url)["node-a"]["heartbeat_at"] > before, 5)

        # a second process calling itself node-a while node-a lives is refused (it would take node-a's leases)
        twin = ServerProcess(tmp_path / "twin", "--node-id", "node-a", ledger=pg_url)
        with pytest.raises(RuntimeError, match="node id 'node-a' is in use by a running node"):
            twin.start()
        twin.stop()

        a.kill_group()  # no clean stop: only its heartbeat stops
        down = wait_until(lambda: nodes_of(capsys, tmp_path, pg_url)["node-a"]["state"] == "down", 10)
        assert down
        text = status(capsys, tmp_path, pg_url)
        line_a = next(line for line in text.splitlines() if line.strip().startswith("node-a"))
        line_b = next(line for line in text.splitlines() if line.strip().startswith("node-b"))
        assert "DOWN" in line_a and "over its 2s lease" in line_a and f"127.0.0.1:{a.port}" in line_a
        assert " up " in line_b and "1 bind(s)" in line_b
        assert "nodes (2):" in text
    finally:
        b.stop()
        a.kill_group()
    nodes = nodes_of(capsys, tmp_path, pg_url)
    assert nodes["node-b"]["state"] == "stopped" and nodes["node-b"]["binds"] == 0
    assert "Traceback" not in b.log(), b.log()


def test_node_id_by_flag_environment_or_host_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_product(tmp_path, "acme", "acme-password")
    with ServerProcess(tmp_path, env={"FTPBATCH_NODE_ID": "from-env"}):
        assert wait_until(lambda: "from-env" in nodes_of(capsys, tmp_path, None))
    with ServerProcess(tmp_path, "--node-id", "from-flag", env={"FTPBATCH_NODE_ID": "from-env"}):
        assert wait_until(lambda: nodes_of(capsys, tmp_path, None).get("from-flag", {}).get("state") == "up")
    host = socket.gethostname()
    with ServerProcess(tmp_path):
        assert wait_until(lambda: nodes_of(capsys, tmp_path, None).get(host, {}).get("state") == "up")
    ledger = Ledger(tmp_path / "ftpbatch.db")
    try:
        assert {n.node_id: n.state(time.time()) for n in ledger.list_nodes()} == {
            "from-env": "stopped", "from-flag": "stopped", host: "stopped"}
    finally:
        ledger.close()
