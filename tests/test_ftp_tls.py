"""Explicit FTPS with real clients: ftplib FTP_TLS, curl --ssl-reqd, lftp."""

from __future__ import annotations

import ftplib
import io
import os
import ssl
import stat
import subprocess
import tomllib
import warnings
from pathlib import Path

import pytest

from ftpbatch.cli import main
from ftpbatch.security.tls import make_self_signed, server_context

from .helpers import ServerProcess, add_product, wait_for_summary

CSV = b"to,text\n07700900001,Hello over TLS\n07700900002,Hello again\n"


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tls-site")
    certs = tmp_path_factory.mktemp("certs")
    cert, key = certs / "cert.pem", certs / "key.pem"
    make_self_signed(cert, key)
    secure = add_product(root, "secure", "secure-password", dial_prefix="44", require_tls=True)
    plain = add_product(root, "plain", "plain-password", dial_prefix="44")
    add_product(root, "tiny", "tiny-password", max_file_bytes=50_000)
    server = ServerProcess(root, "--tls-cert", str(cert), "--tls-key", str(key)).start()
    yield server, secure, plain
    server.stop()
    log = server.log()
    assert "Traceback" not in log, log
    for password in ("secure-password", "plain-password"):
        assert password not in log


def _client_context(**versions: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's self-signed certificate
    for name, version in versions.items():
        setattr(context, name, version)
    return context


def _tls_client(server: ServerProcess, context: ssl.SSLContext | None = None) -> ftplib.FTP_TLS:
    client = ftplib.FTP_TLS(context=context or _client_context(), timeout=10)
    client.connect(server.host, server.port)
    client.auth()
    return client


def test_init_writes_a_self_signed_pair_the_settings_point_at(tmp_path: Path):
    root = tmp_path / "root"
    assert main(["--root", str(root), "init"]) == 0
    settings = tomllib.loads((root / "ftpbatch.toml").read_text())["ftp"]
    cert, key = root / settings["tls_cert"], root / settings["tls_key"]
    assert cert.is_file() and key.is_file()
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600  # the private key is the owner's only
    server_context(cert, key)  # a usable pair
    # a second init keeps the pair (an operator may have replaced it)
    before = cert.read_bytes()
    assert main(["--root", str(root), "init"]) == 0
    assert cert.read_bytes() == before

    bare = tmp_path / "bare"
    assert main(["--root", str(bare), "init", "--no-tls"]) == 0
    assert not (bare / "tls").exists()
    assert tomllib.loads((bare / "ftpbatch.toml").read_text())["ftp"]["tls_cert"] == ""


def test_ftplib_tls_upload_for_a_product_requiring_tls(tls_site):
    server, secure, _ = tls_site
    client = _tls_client(server)
    assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
    client.login(secure.name, secure.password)
    client.prot_p()
    assert client.storbinary("STOR /inbox/tls.csv", io.BytesIO(CSV)).startswith("226")
    summary = wait_for_summary(server.root, "secure", "tls.csv", ("complete",))
    assert summary["counts"]["delivered"] == 2
    assert any(name.endswith(".report.csv") for name in client.nlst("/reports"))
    client.quit()


def test_plain_login_to_a_product_requiring_tls_gets_a_clear_530(tls_site):
    server, secure, plain = tls_site
    client = ftplib.FTP(timeout=10)
    client.connect(server.host, server.port)
    with pytest.raises(ftplib.error_perm, match=r"^530 .*requires TLS.*AUTH TLS"):
        client.login(secure.name, secure.password)
    # a wrong password learns nothing, not even that the product needs TLS
    with pytest.raises(ftplib.error_perm, match=r"^530 Login incorrect \(code 001\)\.$"):
        client.login(secure.name, "wrong-password")
    client.close()
    # products without require_tls may still use plain FTP
    with server.ftp(plain) as client:
        assert sorted(client.nlst("/")) == ["archive", "check", "control", "inbox", "optout", "reports"]


def test_data_channel_must_be_protected_once_the_control_channel_is(tls_site):
    server, _, plain = tls_site
    client = _tls_client(server)
    client.login(plain.name, plain.password)
    with pytest.raises(ftplib.error_perm, match=r"^522 .*PROT P"):
        client.nlst("/inbox")
    client.sendcmd("PBSZ 0")
    with pytest.raises(ftplib.error_perm, match=r"^534 "):
        client.sendcmd("PROT C")
    client.prot_p()
    assert client.nlst("/inbox") == []
    client.quit()


def test_curl_with_ssl_reqd_uploads_and_plain_curl_is_refused(tls_site, tmp_path: Path):
    server, secure, _ = tls_site
    batch = tmp_path / "curl-tls.csv"
    batch.write_bytes(CSV.replace(b"Hello", b"Curl"))
    subprocess.run(["curl", "-sS", "--ssl-reqd", "-k", "-T", str(batch), server.url(secure, "/inbox/")], check=True, timeout=20)
    assert wait_for_summary(server.root, "secure", "curl-tls.csv", ("complete",))["counts"]["accepted"] == 2

    refused = subprocess.run(
        ["curl", "-sS", "-T", str(batch), server.url(secure, "/inbox/again.csv")], capture_output=True, text=True, timeout=20, check=False
    )
    assert refused.returncode != 0
    assert "530" in refused.stderr


def test_lftp_with_ssl_force_uploads(tls_site, tmp_path: Path):
    server, secure, _ = tls_site
    batch = tmp_path / "lftp-tls.csv"
    batch.write_bytes(CSV.replace(b"Hello", b"Hi"))
    script = (
        "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:verify-certificate no; "
        "set net:max-retries 1; "
        f"put {batch} -o /inbox/lftp-tls.csv; bye"
    )
    subprocess.run(
        ["lftp", "-u", f"{secure.name},{secure.password}", "-p", str(server.port), "-e", script, server.host],
        check=True, timeout=30, capture_output=True,
    )
    assert wait_for_summary(server.root, "secure", "lftp-tls.csv", ("complete",))["counts"]["accepted"] == 2


def test_only_tls_1_2_and_newer_are_accepted(tls_site):
    server, _, plain = tls_site
    client = _tls_client(server, _client_context(maximum_version=ssl.TLSVersion.TLSv1_2))
    assert client.sock.version() == "TLSv1.2"
    client.login(plain.name, plain.password)
    client.quit()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the test asks for TLS 1.1 on purpose
        old = _client_context(minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer it: the server must say no
    client = ftplib.FTP(timeout=10)
    client.connect(server.host, server.port)
    client.sendcmd("AUTH TLS")
    with pytest.raises(ssl.SSLError, match="(?i)protocol version|unsupported protocol"):
        old.wrap_socket(client.sock, server_hostname=server.host)
    client.close()


def test_an_encrypted_upload_over_max_file_bytes_is_cut_too(tls_site):
    server, _, _ = tls_site
    client = _tls_client(server)
    client.login("tiny", "tiny-password")
    client.prot_p()
    conn = client.transfercmd("STOR /inbox/too-big.csv")
    sent = 0
    try:
        while sent < 20 * 1024 * 1024:
            conn.sendall(b"0" * 65536)
            sent += 65536
    except OSError:  # reset, broken pipe or a TLS error: the server hung up
        pass
    finally:
        conn.close()
    assert sent < 10 * 1024 * 1024
    with pytest.raises(ftplib.error_perm, match=r"^552 Transfer cut: .*50000 bytes.*code 131"):
        client.voidresp()
    assert client.nlst("/inbox") == []
    client.quit()
    assert not list((server.root / "homes/tiny/inbox").iterdir())


def test_tls_required_without_a_certificate_is_a_configuration_error(tmp_path: Path):
    from ftpbatch.config import FtpSettings
    from ftpbatch.errors import ConfigError
    from ftpbatch.ftp.server import GatewayFTPServer
    from ftpbatch.ledger import Ledger
    from ftpbatch.storage import LocalStorage

    ledger = Ledger(tmp_path / "ftpbatch.db")
    try:
        with pytest.raises(ConfigError, match="tls_required needs a certificate"):
            GatewayFTPServer(FtpSettings(port=0, tls_required=True), ledger, LocalStorage(tmp_path), lambda path, product: None)
        with pytest.raises(ConfigError, match="does not exist"):
            GatewayFTPServer(FtpSettings(port=0, tls_cert="nope.pem", tls_key="nope.key"), ledger, LocalStorage(tmp_path), lambda path, product: None)
    finally:
        ledger.close()
