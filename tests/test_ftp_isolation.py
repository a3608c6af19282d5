"""Isolation with a real server: no way out of a home, no writes outside /inbox, no bad names."""

from __future__ import annotations

import ftplib
import io
import os
import time
from pathlib import Path

import pytest

from .helpers import ServerProcess, add_product, download, upload, wait_for_summary

CSV = b"to,text\n07700900001,Hello\n"
SECRET = b"to,text\n07700900999,other product's secret\n"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("isolation")
    acme = add_product(root, "acme", "acme-password", dial_prefix="44")
    add_product(root, "other", "other-password")
    secret = root / "homes/other/reports/secret.csv"
    secret.write_bytes(SECRET)
    home = root / "homes/acme"
    # What an operator might leave in a home: links out of it, and odd files.
    os.symlink(secret, home / "reports/abs-link.csv")
    os.symlink("../../other/reports/secret.csv", home / "archive/rel-link.csv")
    os.symlink("/etc", home / "reports/etc")
    os.symlink(root / "ftpbatch.db", home / "reports/ledger.db")
    os.symlink("../reports", home / "archive/inner-dir")
    (home / "reports/mine.report.csv").write_bytes(b"row,to\n1,447700900001\n")
    os.symlink("../reports/mine.report.csv", home / "archive/inner-link.csv")
    os.link(secret, home / "archive/hard-link.csv")
    os.mkfifo(home / "archive/pipe.csv")
    server = ServerProcess(root).start()
    # a symlink dropped into the inbox itself: never claimed, never served
    os.symlink(secret, home / "inbox/evil.csv")
    yield server, acme, secret
    server.stop()
    log = server.log()
    assert "Traceback" not in log, log
    assert secret.read_bytes() == SECRET  # nothing wrote through a link


def _refused(client: ftplib.FTP, command: str, pattern: str = r"^5\d\d ") -> str:
    with pytest.raises(ftplib.error_perm, match=pattern) as refused:
        client.sendcmd(command)
    return str(refused.value)


def test_dot_dot_and_absolute_paths_stay_in_the_home(site):
    server, acme, _ = site
    with server.ftp(acme) as client:
        for path in ("../other/reports/secret.csv", "/../other/reports/secret.csv", "/inbox/../../other/reports/secret.csv",
                     "../../ftpbatch.db", "/etc/passwd", "//etc/passwd", "\\..\\..\\ftpbatch.db"):
            with pytest.raises(ftplib.error_perm, match=r"^550 "):
                download(client, path)
            _refused(client, f"SIZE {path}")
        client.cwd("/../../..")
        assert client.pwd() == "/"
        assert sorted(client.nlst("../..")) == ["archive", "check", "control", "inbox", "optout", "reports"]


def test_symlinks_made_by_an_operator_lead_nowhere(site):
    server, acme, secret = site
    with server.ftp(acme) as client:
        for path in ("/reports/abs-link.csv", "/archive/rel-link.csv", "/reports/etc/passwd", "/reports/ledger.db", "/inbox/evil.csv"):
            with pytest.raises(ftplib.error_perm, match=r"^550 "):
                download(client, path)
            _refused(client, f"MDTM {path}")
        # even a link that stays inside the home is not followed
        with pytest.raises(ftplib.error_perm, match=r"^550 Symbolic links are not followed"):
            download(client, "/archive/inner-link.csv")
        for command in ("CWD /reports/etc", "CWD /archive/inner-dir/../../reports/etc", "DELE /inbox/evil.csv",
                        "RNFR /inbox/evil.csv", "STAT /reports/etc"):
            _refused(client, command)
        with pytest.raises(ftplib.error_perm, match=r"^550 "):
            client.nlst("/reports/etc")
        with pytest.raises(ftplib.error_perm, match=r"^550 "):
            upload(client, "evil.csv", CSV)  # STOR through the link in /inbox
        # listings neither show links nor disclose where they point
        listing: list[str] = []
        for folder in ("/inbox", "/reports", "/archive"):
            client.retrlines(f"LIST {folder}", listing.append)
            client.retrlines(f"MLSD {folder}", listing.append)
        text = "\n".join(listing)
        assert "link" not in text and "evil" not in text and "etc" not in text and "->" not in text
        assert str(server.root) not in text
    assert (server.root / "homes/acme/inbox/evil.csv").is_symlink()
    assert not list((server.root / "spool").glob("*/*evil*"))
    assert secret.read_bytes() == SECRET


def test_hard_links_and_pipes_are_not_served(site):
    server, acme, _ = site
    with server.ftp(acme) as client:
        with pytest.raises(ftplib.error_perm, match=r"^550 Hard-linked files are not served"):
            download(client, "/archive/hard-link.csv")
        started = time.monotonic()
        with pytest.raises(ftplib.error_perm, match=r"^550 Only regular files"):
            download(client, "/archive/pipe.csv")  # must not block the server on a FIFO
        assert time.monotonic() - started < 2
        names = client.nlst("/archive")
        assert "hard-link.csv" not in names


def test_writes_outside_the_inbox_are_refused(site):
    server, acme, _ = site
    with server.ftp(acme) as client:
        for folder in ("/reports", "/archive", "", "/inbox/../archive"):
            with pytest.raises(ftplib.error_perm, match=r"^550 .*/inbox"):
                upload(client, "x.csv", CSV, folder=folder)
        with pytest.raises(ftplib.error_perm, match=r"^550 .*/inbox"):
            client.storbinary("APPE /reports/mine.report.csv", io.BytesIO(b"forged"))
        upload(client, "moving.csv.part", CSV)
        for target in ("/reports/moving.csv", "/archive/moving.csv", "/moving.csv", "/../other/inbox/moving.csv"):
            client.sendcmd("RNFR /inbox/moving.csv.part")
            _refused(client, f"RNTO {target}", r"^550 ")
        client.delete("/inbox/moving.csv.part")  # its own pending file: allowed
        for command in ("MKD /inbox/sub", "MKD /sub", "RMD /inbox", "RMD /reports", "RMD /archive", "DELE /inbox",
                        "DELE /archive/pipe.csv", "SITE CHMOD 777 /inbox", "MFMT 20200101000000 /reports/mine.report.csv"):
            _refused(client, command)
        _refused(client, "RNFR /inbox")  # the folders themselves are never renamed
        assert sorted(client.nlst("/")) == ["archive", "check", "control", "inbox", "optout", "reports"]
    assert (server.root / "homes/acme/inbox").is_dir()


def test_report_files_cannot_be_overwritten(site):
    server, acme, _ = site
    report = server.root / "homes/acme/reports/mine.report.csv"
    before = report.read_bytes()
    with server.ftp(acme) as client:
        with pytest.raises(ftplib.error_perm, match=r"^550 "):
            upload(client, "mine.report.csv", b"forged", folder="/reports")
        upload(client, "forged.csv.part", b"row,to\n1,forged\n")
        client.sendcmd("RNFR /inbox/forged.csv.part")
        _refused(client, "RNTO /reports/mine.report.csv")
        _refused(client, "RNFR /reports/mine.report.csv")  # reports cannot be renamed either
        client.delete("/inbox/forged.csv.part")
    assert report.read_bytes() == before


@pytest.mark.parametrize(
    "name",
    ["bad\x01name.csv", "esc\x1b[31m.csv", "del\x7f.csv", "nul\x00byte.csv", "tab\tname.csv"],
    ids=["soh", "ansi-escape", "del", "nul", "tab"],
)
def test_names_with_control_characters_are_refused(site, name):
    server, acme, _ = site
    with server.ftp(acme) as client:
        with pytest.raises(ftplib.error_perm, match=r"^501 File names may not contain control characters"):
            upload(client, name, CSV)
        upload(client, "ctl.csv.part", CSV)
        client.sendcmd("RNFR /inbox/ctl.csv.part")
        _refused(client, f"RNTO /inbox/{name}", r"^501 ")
        client.delete("/inbox/ctl.csv.part")
        assert client.nlst("/inbox") == []


def test_names_over_the_length_limit_are_refused_and_names_at_it_work(site):
    server, acme, _ = site
    with server.ftp(acme) as client:
        too_long = "é" * 98 + "x.csv"  # 196 + 6 = 202 bytes in UTF-8
        with pytest.raises(ftplib.error_perm, match=r"^553 File name too long: at most 200 bytes"):
            upload(client, too_long, CSV)
        longest = "é" * 97 + "x" * 2 + ".csv"  # 194 + 2 + 4 = 200 bytes
        assert len(longest.encode()) == 200
        upload(client, longest, CSV.replace(b"Hello", b"Longest"))
        with pytest.raises(ftplib.error_perm, match=r"^553 Names starting with '.upload-' are reserved"):
            upload(client, ".upload-1234-x.csv", CSV)
    # the longest name survives the whole path: spool, archive, both report files
    summary = wait_for_summary(server.root, "acme", longest, ("complete",))
    assert summary["counts"]["delivered"] == 1
    assert (server.root / "homes/acme/archive" / longest).is_file()


def test_an_upload_in_progress_is_invisible_and_untouchable(site):
    server, acme, _ = site
    inbox = server.root / "homes/acme/inbox"
    with server.ftp(acme) as writer, server.ftp(acme) as other:
        conn = writer.transfercmd("STOR /inbox/slow.csv")
        conn.sendall(CSV[:10])
        deadline = time.monotonic() + 5
        while not (hidden := [p.name for p in inbox.iterdir() if p.name.startswith(".upload-")]):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert "slow.csv" not in other.nlst("/inbox") and hidden[0] not in other.nlst("/inbox")
        for command in (f"RNFR /inbox/{hidden[0]}", f"DELE /inbox/{hidden[0]}", f"SIZE /inbox/{hidden[0]}"):
            _refused(other, command, r"^550 No such file")
        conn.sendall(CSV[10:].replace(b"Hello", b"Slow"))
        conn.close()
        assert writer.voidresp().startswith("226")
    assert wait_for_summary(server.root, "acme", "slow.csv", ("complete",))["counts"]["delivered"] == 1


def test_intake_never_claims_links_or_pipes_from_an_inbox(tmp_path: Path):
    """A claimed symlink would make ingest read what it points at; a FIFO would block it."""
    from ftpbatch.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    storage.prepare()
    inbox = storage.ensure_home("acme") / "inbox"
    outside = tmp_path / "outside.csv"
    outside.write_bytes(SECRET)
    os.symlink(outside, inbox / "link.csv")
    os.mkfifo(inbox / "pipe.csv")
    (inbox / "real.csv").write_bytes(CSV)
    assert storage.claim(inbox / "link.csv", "acme") is None
    assert storage.claim(inbox / "pipe.csv", "acme") is None
    assert storage.claim(inbox / "real.csv", "acme") is not None
    assert sorted(p.name for p in inbox.iterdir()) == ["link.csv", "pipe.csv"]
