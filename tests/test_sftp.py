"""SFTP beside FTP, with real clients: OpenSSH's ``sftp`` and asyncssh's client, against ``ftpbatch serve --sftp-port``."""

from __future__ import annotations

import asyncio
import ftplib
import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import asyncssh
import pytest

from ftpbatch.cli import main
from ftpbatch.ledger import Ledger

from .helpers import add_product, find_summary, wait_for_summary
from .sftp_clients import OpenSsh, SftpServerProcess, free_port, make_key

BAN_FAILURES = 5
# refusals come from addresses of their own, so that 127.0.0.1 is never banned by them
REFUSED_FROM = "127.0.0.3"


def rows(tag: str) -> bytes:
    """Two messages; the tag keeps files apart (an identical file would be refused as a duplicate, code 130)."""
    return f"to,text\n447700900001,Hello over SFTP {tag}\n447700900002,Second row {tag}\n".encode()


def _set_keys(root: Path, name: str, *flags: str) -> None:
    assert main(["--root", str(root), "product", "set", name, *flags]) == 0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sftp")
    work = tmp_path_factory.mktemp("sftp-client")
    assert main(["--root", str(root), "init", "--no-tls"]) == 0
    keys = {name: make_key(work, name) for name in ("sender", "stranger", "banker")}
    add_product(root, "acme", "acme-password")
    add_product(root, "other", "other-password")
    add_product(root, "locked", "locked-password", allow_ip="127.0.0.1")
    add_product(root, "small", "small-password", max_file_bytes=1000)
    _set_keys(root, "acme", "--ssh-key-file", f"{keys['sender']}.pub")
    _set_keys(root, "locked", "--ssh-key-file", f"{keys['sender']}.pub")
    assert main(["--root", str(root), "product", "add", "bank", "--ssh-key-file", f"{keys['banker']}.pub", "--ssh-keys-only"]) == 0
    (root / "homes" / "other" / "inbox" / "secret.csv").write_bytes(b"to,text\n447700900009,other's\n")
    metrics_port = free_port()
    env = {
        "FTPBATCH_FTP_BAN_FAILURES": str(BAN_FAILURES),
        "FTPBATCH_FTP_BAN_WINDOW": "60",
        "FTPBATCH_FTP_BAN_SECONDS": "30",
        "FTPBATCH_METRICS_STATUS_INTERVAL": "0.2",
    }
    server = SftpServerProcess(root, "--sftp-port", "0", "--metrics-port", str(metrics_port), env=env).start()
    server.metrics_url = f"http://127.0.0.1:{metrics_port}"  # type: ignore[attr-defined]
    yield server, OpenSsh(server, work), keys
    server.stop()
    log = server.log()
    assert "Traceback" not in log, log
    assert "acme-password" not in log and "small-password" not in log


def _batches(root: Path, file_name: str) -> list[str]:
    ledger = Ledger(root / "ftpbatch.db")
    try:
        return [b.id for b in ledger.list_batches(limit=1000) if b.file_name == file_name]
    finally:
        ledger.close()


def _asyncssh(server: SftpServerProcess, user: str, source: str = "127.0.0.1", **login: object) -> asyncssh.SSHClientConnection:
    return asyncssh.connect(  # type: ignore[return-value]
        "127.0.0.1", server.sftp_port, username=user, known_hosts=None, agent_path=None, local_addr=(source, 0), **login
    )


# --- logins and the pipeline ---------------------------------------------------
def test_key_login_uploads_a_batch_that_completes_and_reports_come_back(site, tmp_path):
    server, openssh, keys = site
    (openssh.workdir / "by-key.csv").write_bytes(rows("key"))
    done = openssh.with_key("acme", keys["sender"], "put by-key.csv /inbox/by-key.csv\n")
    assert done.returncode == 0, done.stderr
    summary = wait_for_summary(server.root, "acme", "by-key.csv", ("complete",))
    assert summary["counts"]["rows"] == 2
    report = f"by-key.csv.{summary['batch']}.report.csv"
    listed = openssh.with_key("acme", keys["sender"], f"ls /reports\nget /reports/{report} {tmp_path}/\n")
    assert listed.returncode == 0, listed.stderr
    assert report in listed.stdout
    assert (tmp_path / report).read_bytes() == (server.root / "homes" / "acme" / "reports" / report).read_bytes()


def test_password_login_uploads_a_batch_that_completes(site):
    server, openssh, _ = site
    (openssh.workdir / "by-password.csv").write_bytes(rows("password"))
    done = openssh.with_password("acme", "acme-password", "put by-password.csv /inbox/by-password.csv\nls /inbox\n")
    assert done.returncode == 0, done.stderr
    assert wait_for_summary(server.root, "acme", "by-password.csv", ("complete",))["counts"]["rows"] == 2


def test_python_client_uploads_with_a_password(site):
    server, _, _ = site

    async def run() -> None:
        async with _asyncssh(server, "acme", password="acme-password") as conn:
            async with conn.start_sftp_client() as sftp:
                async with sftp.open("/inbox/by-asyncssh.csv", "wb") as f:
                    await f.write(rows("asyncssh"))

    asyncio.run(run())
    assert wait_for_summary(server.root, "acme", "by-asyncssh.csv", ("complete",))["counts"]["rows"] == 2


def test_unregistered_key_unknown_user_and_wrong_password_are_refused_alike(site):
    server, openssh, keys = site
    stranger = openssh.with_key("acme", keys["stranger"], "ls /\n", source=REFUSED_FROM)
    unknown = openssh.with_key("nobody", keys["sender"], "ls /\n", source=REFUSED_FROM)
    assert stranger.returncode != 0 and unknown.returncode != 0
    assert "Permission denied (publickey" in stranger.stderr and "Permission denied (publickey" in unknown.stderr

    async def refused(user: str, password: str) -> str:
        try:
            async with _asyncssh(server, user, REFUSED_FROM, password=password, client_keys=None):
                return "logged in"
        except asyncssh.PermissionDenied as exc:
            return str(exc.reason).replace(user, "USER")  # asyncssh's client names the user it tried

    assert asyncio.run(refused("acme", "wrong-password")) == asyncio.run(refused("nobody", "wrong-password"))


def test_keys_only_product_refuses_its_password_and_takes_its_key(site):
    server, openssh, keys = site
    by_key = openssh.with_key("bank", keys["banker"], "ls /\n")
    assert by_key.returncode == 0, by_key.stderr
    show = json.loads(_cli_output(server.root, "product", "show", "bank"))
    assert show["ssh_keys_only"] is True and show["ssh_keys"][0].startswith("SHA256:")
    # it was made without a password (an unknown random one): every password is refused
    assert openssh.with_password("bank", "whatever-password", "ls /\n", source="127.0.0.4").returncode != 0


def test_locked_product_is_refused_from_another_address_and_told_why(site):
    server, openssh, keys = site
    allowed = openssh.with_key("locked", keys["sender"], "ls /\n", source="127.0.0.1")
    assert allowed.returncode == 0, allowed.stderr
    refused = openssh.with_key("locked", keys["sender"], "ls /\n", source="127.0.0.2")
    assert refused.returncode != 0
    assert "code 007" in refused.stderr and "127.0.0.2" in refused.stderr


def test_failed_sftp_logins_ban_the_address_for_ftp_too(site):
    server, openssh, _ = site
    for _ in range(BAN_FAILURES):
        assert openssh.with_password("acme", "not-the-password", "ls /\n", source="127.0.0.5").returncode != 0
    deadline = time.monotonic() + 10
    while True:
        client = ftplib.FTP(timeout=10)
        try:
            welcome = client.connect(server.host, server.port, source_address=("127.0.0.5", 0))
        except ftplib.error_temp as exc:
            assert "banned" in str(exc)
            break
        finally:
            client.close()
        assert time.monotonic() < deadline, f"FTP still open to a banned address: {welcome}"
        time.sleep(0.1)
    # and SFTP says so too, even to the right password
    banned = openssh.with_password("acme", "acme-password", "ls /\n", source="127.0.0.5")
    assert banned.returncode != 0 and "banned until" in banned.stderr
    assert main(["--root", str(server.root), "ban", "lift", "127.0.0.5"]) == 0


# --- the home ----------------------------------------------------------------------
def test_root_shows_only_the_products_folders_and_nothing_else_is_in_reach(site):
    server, openssh, keys = site
    other_inbox = server.root / "homes" / "other" / "inbox"
    os.symlink(other_inbox / "secret.csv", server.root / "homes" / "acme" / "reports" / "planted-link.csv")
    (server.root / "homes" / "acme" / "reports" / "beside-the-link.csv").write_bytes(b"a report\n")
    commands = "\n".join([
        "ls -a /",
        "cd ..", "pwd",
        "-get /../other/inbox/secret.csv",
        "-get ../../other/inbox/secret.csv",
        f"-get {other_inbox}/secret.csv",
        "-get /reports/planted-link.csv",
        "-ls /reports",
        "-symlink /reports /inbox/escape",
        "-ln /reports/x /inbox/hard",
        "-mkdir /inbox/sub",
        "-put by-key.csv /reports/not-here.csv",
        "-rename /reports/planted-link.csv /inbox/planted.csv",
        "-rm /archive/anything",
    ]) + "\n"
    (openssh.workdir / "by-key.csv").write_bytes(rows("not-here"))
    done = openssh.with_key("acme", keys["sender"], commands)
    assert done.returncode == 0, done.stderr
    root_listing = done.stdout.split("sftp> ls -a /", 1)[1].split("sftp>", 1)[0].split()
    assert sorted(n.lstrip("/") for n in root_listing if n.strip("/.")) == ["archive", "check", "control", "inbox", "optout", "reports"]
    assert "Remote working directory: /\n" in done.stdout
    assert not list(openssh.workdir.glob("secret.csv")) and not (openssh.workdir / "planted-link.csv").exists()
    reports_listing = done.stdout.split("sftp> -ls /reports", 1)[1].split("sftp>", 1)[0]
    # the listing works and hides the link (rather than failing on it)
    assert "beside-the-link.csv" in reports_listing and "planted-link" not in reports_listing
    for refusal in ('remote symlink', 'remote link', 'remote mkdir', 'dest open "/reports/not-here.csv"'):
        assert refusal in done.stderr, done.stderr
    assert not (server.root / "homes" / "acme" / "inbox" / "escape").exists()
    assert (other_inbox / "secret.csv").exists()

    async def open_the_link() -> str:
        # straight to open (OpenSSH's get asks stat first, which already hides the link)
        async with _asyncssh(server, "acme", password="acme-password") as conn:
            async with conn.start_sftp_client() as sftp:
                try:
                    async with sftp.open("/reports/planted-link.csv", "rb") as f:
                        return str(await f.read())
                except asyncssh.SFTPError as exc:
                    return f"refused: {exc.reason}"

    assert asyncio.run(open_the_link()).startswith("refused")


def test_names_with_control_characters_are_refused(site):
    server, _, _ = site

    async def run() -> str:
        async with _asyncssh(server, "acme", password="acme-password") as conn:
            async with conn.start_sftp_client() as sftp:
                try:
                    async with sftp.open("/inbox/bad\x07name.csv", "wb") as f:
                        await f.write(rows("control"))
                except asyncssh.SFTPError as exc:
                    return exc.reason
        return "accepted"

    assert "control characters" in asyncio.run(run())
    assert not [n for n in os.listdir(server.root / "homes" / "acme" / "inbox") if "\x07" in n]


# --- uploads --------------------------------------------------------------------------
def test_part_upload_waits_until_renamed(site):
    server, openssh, keys = site
    (openssh.workdir / "slow.csv").write_bytes(rows("slow"))
    (openssh.workdir / "marker.csv").write_bytes(rows("marker"))
    done = openssh.with_key("acme", keys["sender"], "put slow.csv /inbox/slow.csv.part\nput marker.csv /inbox/marker.csv\n")
    assert done.returncode == 0, done.stderr
    # the marker, uploaded after the .part, is complete: the .part was seen and left alone
    wait_for_summary(server.root, "acme", "marker.csv", ("complete",))
    assert _batches(server.root, "slow.csv.part") == [] and find_summary(server.root, "acme", "slow.csv") is None
    renamed = openssh.with_key("acme", keys["sender"], "rename /inbox/slow.csv.part /inbox/slow.csv\n")
    assert renamed.returncode == 0, renamed.stderr
    assert wait_for_summary(server.root, "acme", "slow.csv", ("complete",))["counts"]["rows"] == 2


def test_upload_cut_mid_file_leaves_no_batch(site):
    server, openssh, keys = site
    inbox = server.root / "homes" / "acme" / "inbox"

    async def dropped() -> None:
        conn = await _asyncssh(server, "acme", password="acme-password")
        sftp = await conn.start_sftp_client()
        f = await sftp.open("/inbox/dropped.csv", "wb")
        await f.write(rows("dropped"))
        await f.write(b"447700900003,third row\n")
        # the bytes are on the server, under a hidden name only
        assert [n for n in os.listdir(inbox) if n.endswith("-dropped.csv")]
        conn.abort()  # the connection goes without the client's close of the file
        await conn.wait_closed()

    asyncio.run(dropped())
    deadline = time.monotonic() + 10
    while [n for n in os.listdir(inbox) if n.endswith("-dropped.csv")]:
        assert time.monotonic() < deadline, os.listdir(inbox)
        time.sleep(0.05)
    (openssh.workdir / "after-drop.csv").write_bytes(rows("after-drop"))
    assert openssh.with_key("acme", keys["sender"], "put after-drop.csv /inbox/after-drop.csv\n").returncode == 0
    wait_for_summary(server.root, "acme", "after-drop.csv", ("complete",))
    assert _batches(server.root, "dropped.csv") == []
    assert not (inbox / "dropped.csv").exists()


def test_openssh_client_killed_mid_upload_leaves_no_batch(site):
    server, openssh, keys = site
    inbox = server.root / "homes" / "acme" / "inbox"
    big = openssh.workdir / "killed.csv"
    big.write_bytes(b"to,text\n" + b"447700900001,killed mid-upload\n" * 100_000)  # 3 MB
    # -l: 4000 kbit/s, so the upload takes seconds and is killed while it runs
    client = openssh.start_with_key("acme", keys["sender"], "put killed.csv /inbox/killed.csv\n", "-l", "4000")
    deadline = time.monotonic() + 20
    while not [n for n in os.listdir(inbox) if n.endswith("-killed.csv") and (inbox / n).stat().st_size > 0]:
        assert client.poll() is None and time.monotonic() < deadline, os.listdir(inbox)
        time.sleep(0.02)
    os.killpg(client.pid, signal.SIGKILL)  # sftp and its ssh child: nothing closes the file
    client.wait(10)
    deadline = time.monotonic() + 10
    while [n for n in os.listdir(inbox) if n.endswith("-killed.csv")]:
        assert time.monotonic() < deadline, os.listdir(inbox)
        time.sleep(0.05)
    (openssh.workdir / "after-kill.csv").write_bytes(rows("after-kill"))
    assert openssh.with_key("acme", keys["sender"], "put after-kill.csv /inbox/after-kill.csv\n").returncode == 0
    wait_for_summary(server.root, "acme", "after-kill.csv", ("complete",))
    assert _batches(server.root, "killed.csv") == [] and not (inbox / "killed.csv").exists()


def test_file_over_max_file_bytes_is_cut_with_a_clear_status(site):
    server, openssh, _ = site
    inbox = server.root / "homes" / "small" / "inbox"
    big = b"to,text\n" + b"447700900001,hello there\n" * 100  # 2.5 kB over the 1000 bytes allowed

    async def run() -> str:
        async with _asyncssh(server, "small", password="small-password") as conn:
            async with conn.start_sftp_client() as sftp:
                f = await sftp.open("/inbox/too-big.csv", "wb")
                try:
                    for start in range(0, len(big), 500):
                        await f.write(big[start:start + 500], start)
                except asyncssh.SFTPError as exc:
                    return exc.reason
                finally:
                    try:
                        await f.close()
                    except asyncssh.SFTPError:
                        pass
        return "accepted"

    reason = asyncio.run(run())
    assert "larger than the 1000 bytes allowed" in reason and "code 131" in reason

    async def far_write() -> str:
        # a few bytes written far past the limit (a sparse file): cut by where they land, not by their count
        async with _asyncssh(server, "small", password="small-password") as conn:
            async with conn.start_sftp_client() as sftp:
                f = await sftp.open("/inbox/far.csv", "wb")
                try:
                    await f.write(b"to,text\n", 0)
                    await f.write(b"447700900001,far\n", 5000)
                except asyncssh.SFTPError as exc:
                    return exc.reason
                finally:
                    try:
                        await f.close()
                    except asyncssh.SFTPError:
                        pass
        return "accepted"

    assert "larger than the 1000 bytes allowed" in asyncio.run(far_write())
    assert _batches(server.root, "far.csv") == []
    (openssh.workdir / "too-big.csv").write_bytes(big)
    cut = openssh.with_password("small", "small-password", "put too-big.csv /inbox/too-big.csv\n")
    assert "too-big.csv" in cut.stderr  # OpenSSH reports the failed write
    assert not [n for n in os.listdir(inbox) if "too-big" in n]
    assert _batches(server.root, "too-big.csv") == []


# --- what the operator sees ---------------------------------------------------
def _cli_output(root: Path, *args: str) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["--root", str(root), *args])
    return out.getvalue()


def test_metrics_count_sftp_logins_and_uploads_and_status_shows_the_listener(site):
    server, openssh, keys = site
    (openssh.workdir / "counted.csv").write_bytes(rows("counted"))
    assert openssh.with_key("acme", keys["sender"], "put counted.csv /inbox/counted.csv\n").returncode == 0
    wait_for_summary(server.root, "acme", "counted.csv", ("complete",))
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(f"{server.metrics_url}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        if 'ftpbatch_uploads_total{product="acme",source="sftp"}' in text:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    assert 'ftpbatch_logins_total{protocol="sftp",result="ok"}' in text
    assert 'ftpbatch_up{component="sftp"} 1.0' in text
    status = _cli_output(server.root, "status")
    assert f"sftp       up    127.0.0.1:{server.sftp_port}" in status
    fingerprint = json.loads(_cli_output(server.root, "status", "--json"))["components"]["sftp"]["host_key"]
    assert fingerprint.startswith("SHA256:") and fingerprint in status


def test_check_optout_and_control_uploads_over_sftp_reach_intake(site):
    server, openssh, keys = site
    work = openssh.workdir
    (work / "dry.csv").write_bytes(rows("dry-run"))
    (work / "numbers.txt").write_bytes(b"447700900123\n447700900124\n")
    (work / "01NOSUCHBATCH0000000000000.pause").write_bytes(b"")
    done = openssh.with_key("acme", keys["sender"], "put dry.csv /check/dry.csv\nput numbers.txt /optout/numbers.txt\n"
                            "put 01NOSUCHBATCH0000000000000.pause /control/01NOSUCHBATCH0000000000000.pause\n")
    assert done.returncode == 0, done.stderr
    summary = wait_for_summary(server.root, "acme", "dry.csv", ("checked",))
    assert summary["counts"]["rows"] == 2 and summary["dry_run"] is True
    reports = server.root / "homes" / "acme" / "reports"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (
        (reports / "01NOSUCHBATCH0000000000000.pause.error.txt").exists()
        and "447700900124" in (reports / "optout.csv").read_text()
    ):
        time.sleep(0.05)
    assert "There is no batch" in (reports / "01NOSUCHBATCH0000000000000.pause.error.txt").read_text()
    assert [line.split(",")[::2] for line in (reports / "optout.csv").read_text().splitlines()[1:]] == [
        ["447700900123", "ftp"], ["447700900124", "ftp"]]
    # a pending file renamed from /check into /inbox is a batch that is sent (as with FTP)
    (work / "later.csv.part").write_bytes(rows("later"))
    moved = openssh.with_key("acme", keys["sender"], "put later.csv.part /check/later.csv.part\n"
                             "rename /check/later.csv.part /inbox/later.csv\n")
    assert moved.returncode == 0, moved.stderr
    assert wait_for_summary(server.root, "acme", "later.csv", ("complete",))["counts"]["delivered"] == 2
