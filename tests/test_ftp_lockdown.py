"""Lock-down with real clients: data connections, FTP bounce, passive range, connection limits, bans, disk floor."""

from __future__ import annotations

import contextlib
import ftplib
import io
import json
import re
import socket
import time
from pathlib import Path

import pytest

from ftpbatch.cli import main
from ftpbatch.ledger import Ledger

from .helpers import ServerProcess, add_product

BAN_FAILURES = 3
BAN_SECONDS = 3


def _free_port_range(size: int) -> range:
    """``size`` consecutive ports that are free right now (good enough on a test machine)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + size > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + size):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return range(base, base + size)
        except OSError:
            continue
    raise RuntimeError("no free port range")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("lockdown")
    ports = _free_port_range(3)
    accounts = {
        "acme": add_product(root, "acme", "acme-password"),
        "locked": add_product(root, "locked", "locked-password", allow_ip="127.0.0.1"),
    }
    env = {
        "FTPBATCH_FTP_BAN_FAILURES": str(BAN_FAILURES),
        "FTPBATCH_FTP_BAN_WINDOW": "60",
        "FTPBATCH_FTP_BAN_SECONDS": str(BAN_SECONDS),
        "FTPBATCH_FTP_MAX_CONS_PER_IP": "6",
        # this server's disk is always "full": uploads must be refused cleanly
        "FTPBATCH_FTP_MIN_FREE_MB": str(10**12),
    }
    server = ServerProcess(root, "--passive-ports", f"{ports.start}-{ports.stop - 1}", env=env).start()
    yield server, accounts, ports
    server.stop()
    log = server.log()
    assert "Traceback" not in log, log
    assert "acme-password" not in log and "locked-password" not in log


def _connect(server: ServerProcess, source_ip: str) -> ftplib.FTP:
    client = ftplib.FTP(timeout=10)
    try:
        client.connect(server.host, server.port, source_address=(source_ip, 0))
    except BaseException:
        client.close()  # ftplib keeps the socket of a refused greeting
        raise
    return client


def _wait_until_welcome(server: ServerProcess, source_ip: str, timeout: float) -> ftplib.FTP:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _connect(server, source_ip)
        except ftplib.error_temp:
            assert time.monotonic() < deadline, f"{source_ip} still refused after {timeout} s"
            time.sleep(0.1)


def _pasv_port(reply: str) -> int:
    numbers = [int(n) for n in re.search(r"\(([\d,]+)\)", reply).group(1).split(",")]  # type: ignore[union-attr]
    return numbers[4] * 256 + numbers[5]


def test_port_and_eprt_to_another_address_or_a_privileged_port_are_refused(site):
    server, accounts, _ = site
    with server.ftp(accounts["acme"]) as client:
        with pytest.raises(ftplib.error_perm, match=r"^501 .*own address \(127\.0\.0\.1\).*bounce"):
            client.sendcmd("PORT 127,0,0,2,195,80")
        with pytest.raises(ftplib.error_perm, match=r"^501 .*bounce"):
            client.sendcmd("EPRT |1|127.0.0.2|50000|")
        with pytest.raises(ftplib.error_perm, match=r"^501 .*privileged ports"):
            client.sendcmd("PORT 127,0,0,1,0,25")
        # active mode to the client's own address and an ordinary port still works
        client.set_pasv(False)
        assert sorted(client.nlst("/")) == ["archive", "check", "control", "inbox", "optout", "reports"]


def _pasv_listing(server: ServerProcess, client: ftplib.FTP, intruder_ip: str, refusal: str) -> list[bytes]:
    port = _pasv_port(client.sendcmd("PASV"))
    client.putcmd("NLST /")
    assert client.getresp().startswith("150")
    intruder = socket.create_connection((server.host, port), timeout=5, source_address=(intruder_ip, 0))
    with pytest.raises(ftplib.error_temp, match=refusal):
        client.getresp()
    intruder.close()
    # the rightful owner still gets its listing through the same passive port
    with socket.create_connection((server.host, port), timeout=5) as data:
        listing = b""
        while chunk := data.recv(4096):
            listing += chunk
    assert client.getresp().startswith("226")
    return listing.split()


def test_passive_data_connection_from_another_address_is_refused(site):
    server, accounts, ports = site
    with server.ftp(accounts["acme"]) as client:
        assert _pasv_port(client.sendcmd("PASV")) in ports  # from the configured range
        listing = _pasv_listing(server, client, "127.0.0.2", r"^425 Rejected data connection from foreign address 127\.0\.0\.2")
        assert listing == [b"archive", b"check", b"control", b"inbox", b"optout", b"reports"]
    # a product locked to one address: the data connection is checked against its list too
    with server.ftp(accounts["locked"]) as client:
        listing = _pasv_listing(server, client, "127.0.0.2", r"^425 Data connection from 127\.0\.0\.2 refused \(code 007\)")
        assert listing == [b"archive", b"check", b"control", b"inbox", b"optout", b"reports"]


def test_passive_mode_never_leaves_the_configured_range(site):
    server, accounts, ports = site
    clients = [server.ftp(accounts["acme"]) for _ in ports]
    try:
        taken = {_pasv_port(client.sendcmd("PASV")) for client in clients}
        assert taken == set(ports)  # every port of the range is now listening
        with server.ftp(accounts["acme"]) as late:
            with pytest.raises(ftplib.error_temp, match=r"^425 No free passive port"):
                late.sendcmd("PASV")
    finally:
        for client in clients:
            client.close()
    time.sleep(0.3)
    with server.ftp(accounts["acme"]) as client:
        assert _pasv_port(client.sendcmd("PASV")) in ports


def test_connections_per_address_are_limited(site):
    server, _, _ = site
    clients = [_connect(server, "127.0.0.5") for _ in range(6)]
    try:
        with pytest.raises(ftplib.error_temp, match=r"^421 Too many connections from the same IP"):
            _connect(server, "127.0.0.5")
        _connect(server, "127.0.0.7").quit()  # other addresses are not affected
    finally:
        for client in clients:
            client.close()


def _fail_until_banned(server: ServerProcess, address: str) -> None:
    client = _connect(server, address)
    for _ in range(BAN_FAILURES - 1):
        with pytest.raises(ftplib.error_perm, match=r"^530 Login incorrect \(code 001\)"):
            client.login("acme", "wrong-password")
    with pytest.raises(ftplib.error_temp, match=rf"^421 Too many failed logins from {re.escape(address)}: .*banned until"):
        client.login("nobody", "guess")  # unknown users count as much as wrong passwords
    client.close()


def test_repeated_failures_ban_the_address_until_the_ban_time_is_over(site, capsys):
    server, accounts, _ = site
    started = time.monotonic()
    _fail_until_banned(server, "127.0.0.3")
    with pytest.raises(ftplib.error_temp, match=r"^421 .*banned"):
        _connect(server, "127.0.0.3")  # even with the right password: refused at the greeting
    with _connect(server, "127.0.0.4") as other:  # other addresses are not banned
        other.login(accounts["acme"].name, accounts["acme"].password)

    assert main(["--root", str(server.root), "ban", "list", "--json"]) == 0
    bans = json.loads(capsys.readouterr().out)
    assert [b["address"] for b in bans] == ["127.0.0.3"]
    assert bans[0]["failures"] == BAN_FAILURES and "failed logins" in bans[0]["reason"]
    main(["--root", str(server.root), "status", "--json"])
    status = json.loads(capsys.readouterr().out)
    assert [b["address"] for b in status["bans"]] == ["127.0.0.3"]
    main(["--root", str(server.root), "status"])
    assert "127.0.0.3 until" in capsys.readouterr().out

    client = _wait_until_welcome(server, "127.0.0.3", timeout=BAN_SECONDS + 3)
    assert time.monotonic() - started >= BAN_SECONDS - 0.5  # not lifted early
    client.login(accounts["acme"].name, accounts["acme"].password)
    client.quit()
    assert "address 127.0.0.3 banned" in server.log()


def test_an_operator_lifts_a_ban_on_the_running_server(site, capsys):
    server, accounts, _ = site
    _fail_until_banned(server, "127.0.0.6")
    banned_at = time.monotonic()
    with pytest.raises(ftplib.error_temp, match=r"^421 .*banned"):
        _connect(server, "127.0.0.6")
    assert main(["--root", str(server.root), "ban", "lift", "127.0.0.6"]) == 0
    assert "lifted" in capsys.readouterr().out
    client = _wait_until_welcome(server, "127.0.0.6", timeout=2.5)
    assert time.monotonic() - banned_at < BAN_SECONDS  # lifted, not expired
    client.login(accounts["acme"].name, accounts["acme"].password)
    client.quit()
    assert main(["--root", str(server.root), "ban", "lift", "127.0.0.6"]) == 1
    assert "not banned" in capsys.readouterr().err

    ledger = Ledger(server.root / "ftpbatch.db")
    try:
        assert ledger.counter("ftp_bans") >= 1
        assert ledger.counter("ftp_login_failures") >= BAN_FAILURES
    finally:
        ledger.close()


def test_uploads_are_refused_while_the_disk_is_below_its_floor(site):
    server, accounts, _ = site
    with server.ftp(accounts["acme"]) as client:
        with pytest.raises(ftplib.error_temp, match=r"^452 Not enough free disk space"):
            client.storbinary("STOR /inbox/full.csv", io.BytesIO(b"to,text\n07700900001,hi\n"))
        assert client.nlst("/inbox") == []
    assert not list((Path(server.root) / "homes/acme/inbox").iterdir())
