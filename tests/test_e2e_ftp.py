"""The whole path on real parts: a real server process, real FTP clients, real files."""

from __future__ import annotations

import ftplib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ftpbatch.ledger import Ledger

from .helpers import (
    ServerProcess,
    add_product,
    download,
    find_summary,
    intake_barrier,
    parse_report,
    read_report,
    upload,
    wait_for_summary,
)


def batch(tag: str) -> bytes:
    """Four rows: two good, one bad number (105), one empty text (107). ``tag`` keeps files distinct."""
    return (
        "to,text\n"
        f"07700900001,Hello Ann ({tag})\n"
        f"+44 7700 900002,Hello Bob ({tag})\n"
        "12,too short\n"
        "07700900004,   \n"
    ).encode()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("site")
    acme = add_product(root, "acme", "acme-password", dial_prefix="44")
    other = add_product(root, "other", "other-password", dial_prefix="33")
    locked = add_product(root, "locked", "locked-password", allow_ip="127.0.0.1")
    wide = add_product(root, "wide", "wide-password", allow_ip="127.0.0.0/8")
    server = ServerProcess(root).start()
    yield server, {"acme": acme, "other": other, "locked": locked, "wide": wide}
    server.stop()
    assert "Traceback" not in server.log(), server.log()


def test_ftplib_upload_gets_complete_report_with_a_row_per_input_row(site):
    server, accounts = site
    with server.ftp(accounts["acme"]) as client:
        assert upload(client, "first.csv", batch("first")).startswith("226")
        summary = wait_for_summary(server.root, "acme", "first.csv", ("complete",))
        report_name = f"first.csv.{summary['batch']}.report.csv"
        assert report_name in client.nlst("/reports")
        rows = parse_report(download(client, f"/reports/{report_name}").decode())

    assert summary["counts"]["rows"] == 4
    assert summary["counts"]["accepted"] == 2
    assert summary["counts"]["rejected"] == 2
    assert summary["counts"]["delivered"] == 2
    assert [r["row"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["to"] for r in rows[:2]] == ["447700900001", "447700900002"]
    assert [r["status"] for r in rows] == ["004", "004", "005", "005"]
    assert [r["error_code"] for r in rows] == ["", "", "105", "107"]
    assert rows[0]["message_id"] and rows[0]["message_id"] != rows[1]["message_id"]
    assert rows[0]["submitted_at"].endswith("Z")
    # the original is archived, the inbox is empty
    assert (server.root / "homes/acme/archive/first.csv").read_bytes() == batch("first")
    assert list((server.root / "homes/acme/inbox").iterdir()) == []


def test_curl_upload_then_report_downloaded_with_curl(site, tmp_path: Path):
    server, accounts = site
    batch_file = tmp_path / "curl.csv"
    batch_file.write_bytes(batch("curl"))
    started = time.monotonic()
    subprocess.run(["curl", "-sS", "-T", str(batch_file), server.url(accounts["acme"], "/inbox/")], check=True)
    summary = wait_for_summary(server.root, "acme", "curl.csv", ("complete",), timeout=2.0)
    assert time.monotonic() - started < 2.0
    listing = subprocess.run(
        ["curl", "-sS", "--list-only", server.url(accounts["acme"], "/reports/")], check=True, capture_output=True, text=True
    ).stdout.split()
    report_name = f"curl.csv.{summary['batch']}.report.csv"
    assert report_name in listing
    fetched = subprocess.run(
        ["curl", "-sS", server.url(accounts["acme"], f"/reports/{report_name}")], check=True, capture_output=True, text=True
    ).stdout
    assert len(parse_report(fetched)) == 4


def test_local_drop_is_processed(site):
    server, _ = site
    inbox = server.root / "homes/acme/inbox"
    # written under a temporary name and moved in, as an operator's script would
    (inbox / "dropped.csv.tmp").write_bytes(batch("dropped"))
    (inbox / "dropped.csv.tmp").rename(inbox / "dropped.csv")
    summary = wait_for_summary(server.root, "acme", "dropped.csv", ("complete",))
    assert summary["counts"]["rows"] == 4


def test_local_copy_written_in_place_is_processed_once_settled(site):
    server, _ = site
    target = server.root / "homes/acme/inbox/copied.csv"
    with target.open("wb") as fh:  # written slowly, in place
        data = batch("copied")
        fh.write(data[:20])
        fh.flush()
        time.sleep(0.3)
        fh.write(data[20:])
    summary = wait_for_summary(server.root, "acme", "copied.csv", ("complete",))
    assert summary["counts"]["rows"] == 4


def test_aborted_upload_leaves_no_file_and_no_batch(site):
    server, accounts = site
    before = _batch_count(server.root)
    client = server.ftp(accounts["acme"])
    conn = client.transfercmd("STOR /inbox/aborted.csv")
    conn.sendall(batch("aborted")[:30])
    time.sleep(0.2)
    client.abort()  # ABOR while the data connection is still open
    conn.close()
    client.quit()

    # and a client whose control connection dies mid-transfer
    client = server.ftp(accounts["acme"])
    conn = client.transfercmd("STOR /inbox/dropped-conn.csv")
    conn.sendall(batch("aborted")[:30])
    time.sleep(0.1)
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    time.sleep(0.2)
    conn.close()

    intake_barrier(server, accounts["acme"])  # uploads are claimed in order: a kept one would be in by now
    inbox = list((server.root / "homes/acme/inbox").iterdir())
    assert inbox == [], inbox
    assert find_summary(server.root, "acme", "aborted.csv") is None
    assert find_summary(server.root, "acme", "dropped-conn.csv") is None
    assert _batch_count(server.root) == before + 1  # the barrier only


def test_part_upload_is_processed_only_after_rename(site):
    server, accounts = site
    before = _batch_count(server.root)
    with server.ftp(accounts["acme"]) as client:
        upload(client, "renamed.csv.part", batch("renamed"))
        intake_barrier(server, accounts["acme"])  # a .part taken as an upload would be claimed before it
        assert _batch_count(server.root) == before + 1
        assert find_summary(server.root, "acme", "renamed.csv.part") is None
        assert "renamed.csv.part" in client.nlst("/inbox")
        client.rename("/inbox/renamed.csv.part", "/inbox/renamed.csv")
    summary = wait_for_summary(server.root, "acme", "renamed.csv", ("complete",))
    assert summary["counts"]["rows"] == 4


def test_login_from_outside_allow_ip_is_refused_with_007(site):
    server, accounts = site
    with pytest.raises(ftplib.error_perm, match=r"530 .*code 007.*127\.0\.0\.2"):
        server.ftp(accounts["locked"], source_ip="127.0.0.2")
    server.ftp(accounts["locked"], source_ip="127.0.0.1").quit()
    server.ftp(accounts["wide"], source_ip="127.0.0.2").quit()


def test_wrong_password_and_unknown_user_get_the_same_reply(site):
    server, accounts = site
    replies = []
    for user, password in (("acme", "wrong-password"), ("nobody", "whatever")):
        client = ftplib.FTP()
        client.connect(server.host, server.port, timeout=10)
        with pytest.raises(ftplib.error_perm) as refused:
            client.login(user, password)
        replies.append(str(refused.value))
        client.close()
    assert replies[0] == replies[1] == "530 Login incorrect (code 001)."


def test_a_product_cannot_reach_another_products_files(site):
    server, accounts = site
    secret = server.root / "homes/other/reports/secret.csv"
    secret.write_text("private")
    with server.ftp(accounts["acme"]) as client:
        assert sorted(client.nlst("/")) == ["archive", "check", "control", "inbox", "optout", "reports"]
        for path in ("../other/reports/secret.csv", "/../other/reports/secret.csv", "../../homes/other/reports/secret.csv"):
            with pytest.raises(ftplib.error_perm):
                download(client, path)
        client.cwd("..")  # stays at the chroot
        assert client.pwd() == "/"
        assert "secret.csv" not in " ".join(client.nlst("/reports"))
        # uploads anywhere but /inbox get a clear 550 naming /inbox
        for folder in ("/reports", "/archive", "", "/inbox/../reports"):
            with pytest.raises(ftplib.error_perm, match=r"550 .*/inbox"):
                upload(client, "x.csv", batch("x"), folder=folder)
        with pytest.raises(ftplib.error_perm):
            client.mkd("/inbox/sub")


def test_many_clients_login_while_hashes_are_checked_off_the_loop(site):
    server, accounts = site
    # 20 logins at once, each a ~15 ms argon2 check: served concurrently
    clients = []
    started = time.monotonic()
    for _ in range(20):
        client = ftplib.FTP()
        client.connect(server.host, server.port, timeout=10)
        client.sendcmd("USER acme")
        client.putcmd("PASS acme-password")
        clients.append(client)
    for client in clients:
        assert client.getresp().startswith("230")
        client.quit()
    assert time.monotonic() - started < 10


def _batch_count(root: Path) -> int:
    ledger = Ledger(root / "ftpbatch.db")
    try:
        return len(ledger.list_batches(limit=10_000))
    finally:
        ledger.close()


def test_file_left_in_spool_is_resumed_without_resending(tmp_path: Path):
    """A crash after part of a batch was stored and sent: the restart finishes it, sending nothing twice."""
    from ftpbatch.config import load_settings
    from ftpbatch.service import Gateway

    root = tmp_path / "root"
    add_product(root, "acme", "acme-password", dial_prefix="44")
    rows = "".join(f"0770090{n:04d},message {n}\n" for n in range(1, 11))
    source = tmp_path / "resume.csv"
    source.write_text("to,text\n" + rows)

    # First life: ingest in chunks of 4 rows, stop before the last chunk is stored,
    # and let the first chunk be submitted.
    settings = load_settings(
        root, {"intake": {"chunk_rows": 4}, "dispatch": {"connector": "sim://?receipt_delay=60", "receipt_timeout": 1.0}}
    )
    gateway = Gateway(settings, ftp=False, watch_inboxes=False, node_id="node-a")
    batch = gateway.ledger.record_claim("01RESUMETEST0000000000000A", "acme", "resume.csv",
                                        str(root / "spool/acme/01RESUMETEST0000000000000A--resume.csv"), "ftp", time.time())
    (root / "spool/acme").mkdir(parents=True, exist_ok=True)
    shutil.copy(source, batch.spool_path)
    import pandas as pd

    from ftpbatch.intake.ingest import product_rules
    from ftpbatch.parse import FileCredentials, open_batch
    from ftpbatch.rules import BatchRules

    product = gateway.ledger.get_product("acme")
    gateway.ledger.start_processing(batch.seq)
    parsed = open_batch(Path(batch.spool_path), "resume.csv", FileCredentials("acme", lambda p: False), chunk_rows=4)
    rules = BatchRules(product_rules(product), pd.Timestamp.now(tz="UTC").to_pydatetime())
    first_chunk = rules.apply(next(parsed.chunks))
    stored = len(first_chunk)
    assert 0 < stored < 10
    gateway.ledger.insert_messages(batch.seq, "acme", first_chunk)
    gateway.dispatcher.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if sum(t.messages for t in gateway.ledger.status_counts(batch.seq) if t.status == "003") == stored:
            break
        time.sleep(0.02)
    gateway.dispatcher.stop()
    first_ids = {
        r["row_no"]: r["upstream_id"] for r in next(gateway.ledger.report_frames(batch.seq)).to_dict("records")
    }
    gateway.ledger.close()
    assert len([v for v in first_ids.values() if v]) == stored

    # Second life: the real server starts, finds the batch in the spool, finishes it.
    with ServerProcess(root, "--connector", "sim://?receipt_delay=0.05", env={"FTPBATCH_DISPATCH_RECEIPT_TIMEOUT": "1"}):
        summary = wait_for_summary(root, "acme", "resume.csv", ("complete",))
        report = read_report(root, "acme", summary)
    assert [int(r["row"]) for r in report] == list(range(1, 11))
    # rows submitted in the first life kept their upstream ids: not sent again
    for row in report[:stored]:
        assert row["message_id"] == first_ids[int(row["row"])]
    assert len({r["message_id"] for r in report}) == 10
    # the first ones never get receipts (they went with the old SMSC): timed out, not re-sent
    assert summary["counts"]["delivered"] == 10 - stored
    assert summary["counts"]["submitted"] == stored
    assert summary["counts"]["receipt_timeouts"] == stored
    assert summary["counts"]["possible_duplicates"] == 0
    assert not list((root / "spool/acme").iterdir())
