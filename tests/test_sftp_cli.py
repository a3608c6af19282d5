"""The operator's SFTP commands, run as a subprocess: host key at init, product keys, serve's SFTP flags."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import asyncssh
import pytest

from .helpers import ServerProcess
from .sftp_clients import SftpServerProcess, make_key
from .test_cli_first_use import ftpbatch


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    init = ftpbatch(root, "init", "--no-tls")
    assert init.returncode == 0, init.stderr
    assert "SFTP host key created" in init.stdout
    return root


def _fingerprint(public_key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


def test_init_makes_an_ed25519_host_key_and_prints_the_fingerprint_ssh_keygen_shows(tmp_path):
    root = tmp_path / "data"
    init = ftpbatch(root, "init", "--no-tls")
    key = root / "ssh" / "host_ed25519_key"
    assert key.stat().st_mode & 0o077 == 0  # the private key is the owner's alone
    fingerprint = _fingerprint(key.with_name("host_ed25519_key.pub"))
    assert fingerprint in init.stdout and "ssh-ed25519" in key.with_name("host_ed25519_key.pub").read_text()
    again = ftpbatch(root, "init", "--no-tls")  # a second init keeps the key
    assert fingerprint in again.stdout and "created" not in again.stdout


def test_product_keys_are_added_shown_and_cleared(root, tmp_path):
    key = make_key(tmp_path, "ops")
    second = make_key(tmp_path, "backup")
    both = tmp_path / "authorized_keys"
    both.write_text(f"# our two keys\n{key.with_suffix('.pub').read_text()}\n{second.with_suffix('.pub').read_text()}")
    added = ftpbatch(root, "product", "add", "shop", "--password-stdin", "--ssh-key-file", str(both), stdin="a-long-password\n")
    assert added.returncode == 0, added.stderr
    shown = json.loads(ftpbatch(root, "product", "show", "shop").stdout)
    assert [f.split()[0] for f in shown["ssh_keys"]] == [_fingerprint(key.with_suffix(".pub")), _fingerprint(second.with_suffix(".pub"))]
    assert shown["ssh_keys_only"] is False
    cleared = ftpbatch(root, "product", "set", "shop", "--ssh-key-file", "")
    assert cleared.returncode == 0 and "no SSH keys" in cleared.stdout
    assert json.loads(ftpbatch(root, "product", "show", "shop").stdout)["ssh_keys"] == []


def test_a_bad_key_file_is_refused_in_one_line_and_nothing_changes(root, tmp_path):
    key = make_key(tmp_path, "ops")
    assert ftpbatch(root, "product", "add", "shop", "--password-stdin", "--ssh-key-file", f"{key}.pub", stdin="a-long-password\n").returncode == 0
    private = ftpbatch(root, "product", "set", "shop", "--ssh-key-file", str(key), "--sender", "Other")
    assert private.returncode != 0 and "is not an SSH public key" in private.stderr and "Traceback" not in private.stderr
    assert len(private.stderr.strip().splitlines()) == 1
    with_options = tmp_path / "options.pub"
    with_options.write_text(f'from="10.0.0.1" {key.with_suffix(".pub").read_text()}')
    refused = ftpbatch(root, "product", "set", "shop", "--ssh-key-file", str(with_options))
    assert refused.returncode != 0 and "--allow-ip" in refused.stderr
    shown = json.loads(ftpbatch(root, "product", "show", "shop").stdout)
    assert len(shown["ssh_keys"]) == 1 and shown["sender"] is None


def test_product_add_without_password_needs_keys_only(root, tmp_path):
    key = make_key(tmp_path, "ops")
    refused = ftpbatch(root, "product", "add", "shop", "--ssh-key-file", f"{key}.pub")
    assert refused.returncode != 0 and "--ssh-keys-only" in refused.stderr
    assert ftpbatch(root, "product", "add", "shop", "--ssh-key-file", f"{key}.pub", "--ssh-keys-only").returncode == 0


def _host_key_accepted(port: int, public_key: Path) -> bool:
    """Connect trusting only ``public_key``: True when the server proved it holds that key (the login itself fails)."""
    trusted = asyncssh.import_known_hosts(f"[127.0.0.1]:{port} {public_key.read_text()}")

    async def attempt() -> bool:
        try:
            async with asyncssh.connect("127.0.0.1", port, known_hosts=trusted, username="x", password="y",
                                        client_keys=None, agent_path=None):
                return True
        except asyncssh.PermissionDenied:
            return True  # past the host key check
        except asyncssh.HostKeyNotVerifiable:
            return False

    return asyncio.run(attempt())


def test_serve_uses_another_host_key_given_and_refuses_a_missing_one(root, tmp_path):
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    server = SftpServerProcess(root, "--sftp-port", "0", "--sftp-host-key", str(other)).start()
    try:
        assert _host_key_accepted(server.sftp_port, other.with_suffix(".pub"))
        assert not _host_key_accepted(server.sftp_port, root / "ssh" / "host_ed25519_key.pub")
    finally:
        server.stop()
    missing = ftpbatch(root, "serve", "--ftp-port", "0", "--sftp-port", "0", "--sftp-host-key", str(tmp_path / "nope"))
    assert missing.returncode != 0 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_sftp_is_off_unless_a_port_is_set(root):
    server = ServerProcess(root, "--log-json", env={"FTPBATCH_METRICS_STATUS_INTERVAL": "0.2"})
    with server:
        deadline = time.monotonic() + 10
        while "ftp" not in (components := json.loads(ftpbatch(root, "status", "--json").stdout).get("components") or {}):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert "sftp" not in components and "SFTP" not in server.log()


@pytest.mark.parametrize("action", ["add", "set"])
def test_a_product_change_and_its_keys_are_one_transaction(root, tmp_path, monkeypatch, capsys, action):
    """If storing the keys fails, the settings given with them are not kept either (nothing half-done)."""
    from ftpbatch.cli import main
    from ftpbatch.ledger import Ledger
    from ftpbatch.ledger.ssh_keys import SshKeyStore

    import io

    if action == "set":
        assert ftpbatch(root, "product", "add", "shop", "--password-stdin", "--sender", "Before", stdin="a-long-password\n").returncode == 0
    key = make_key(tmp_path, "ops")

    def broken_update(self, product, keys=None, keys_only=None):
        raise OSError("disk full while storing the keys")  # the provoked failure

    monkeypatch.setattr(SshKeyStore, "update", broken_update)
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    argv = ["--root", str(root), "product", action, "shop", "--sender", "After", "--ssh-key-file", f"{key}.pub"]
    if action == "add":
        argv.append("--password-stdin")
    with pytest.raises(OSError):
        main(argv)
    ledger = Ledger(root / "ftpbatch.db")
    try:
        product = ledger.get_product("shop")
        if action == "add":
            assert product is None
        else:
            assert product is not None and product.sender == "Before"
    finally:
        ledger.close()
