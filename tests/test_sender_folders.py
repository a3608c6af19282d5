"""The sender's steering folders (issue 16), through a real server, real FTP clients and the test SMSC.

/check (dry runs), /optout (+ .remove, /reports/optout.csv), /control
(pause, resume, cancel, errors), the command line's ``optout`` and
``batch pause|resume``, and STOP replies (MO) becoming opt-outs.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
from pathlib import Path

from ftpbatch.ledger import Ledger

from .helpers import REPO, ServerProcess, add_product, download, find_summary, read_report, upload, wait_for_summary

NUMBERS = [f"4477009{n:05d}" for n in range(1, 11)]


def mixed_file() -> bytes:
    """8 good rows (one UCS-2, one of 2 parts), 2 bad ones (105, 107)."""
    lines = ["to,text"]
    for n, number in enumerate(NUMBERS[:8]):
        text = "Hello " + str(n)
        if n == 1:
            text = "Привет " + str(n)
        if n == 2:
            text = "x" * 200
        lines.append(f"0{number[2:]},{text}")
    lines += ["12,too short a number", f"{NUMBERS[9]},"]
    return ("\n".join(lines) + "\n").encode()


def wait_until(predicate, timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def cli(root: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ftpbatch", "--root", str(root), *args], capture_output=True, text=True,
                          cwd=REPO, input=stdin, timeout=60)


def optout_csv(client) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(download(client, "/reports/optout.csv").decode())))


def test_check_reports_a_mixed_file_as_checked_sends_nothing_and_inbox_then_sends_it(tmp_path: Path, smsc_factory) -> None:
    smsc = smsc_factory("happy", receipt_delay=0.05)
    root = tmp_path / "root"
    account = add_product(root, "bank", "bank-password", dial_prefix="44")
    data = mixed_file()
    with ServerProcess(root, "--connector", smsc.url()) as server:
        with server.ftp(account) as client:
            assert sorted(client.nlst("/")) == ["archive", "check", "control", "inbox", "optout", "reports"]
            upload(client, "mixed.csv", data, folder="/check")
        summary = wait_for_summary(root, "bank", "mixed.csv", ("checked", "rejected"))
        assert summary["state"] == "checked", summary
        assert summary["dry_run"] is True
        assert {k: summary["counts"][k] for k in ("rows", "accepted", "rejected")} == {"rows": 10, "accepted": 8, "rejected": 2}
        assert summary["parts"] == 9
        report = read_report(root, "bank", summary)
        assert [r["to"] for r in report[:8]] == NUMBERS[:8]  # as they would be sent: the dial prefix applied
        assert [r["encoding"] for r in report[:3]] == ["gsm7", "ucs2", "gsm7"]
        assert [r["parts"] for r in report[:3]] == ["1", "1", "2"]
        assert [(r["status"], r["error_code"]) for r in report[8:]] == [("005", "105"), ("005", "107")]
        assert all(r["error_text"] for r in report[8:])
        # the same file, now to /inbox: no duplicate of the dry run, it is sent
        with server.ftp(account) as client:
            upload(client, "mixed.csv", data)
        sent = wait_until(lambda: (find_summary(root, "bank", "mixed.csv") or {}).get("state") == "complete", 30)
        assert sent, find_summary(root, "bank", "mixed.csv")
    submits = smsc.submits()  # the dry run sent nothing: only the /inbox batch's 9 parts
    assert len(submits) == 9 and {e["dest"] for e in submits} == set(NUMBERS[:8])
    ledger = Ledger(root / "ftpbatch.db")
    try:
        (usage,) = ledger.usage("product")
        assert usage.messages == 10  # the dry run is not counted
    finally:
        ledger.close()


def test_optout_upload_makes_exactly_those_rows_122_and_remove_takes_them_out(tmp_path: Path, smsc_factory) -> None:
    smsc = smsc_factory("happy", receipt_delay=0.05)
    root = tmp_path / "root"
    account = add_product(root, "bank", "bank-password", dial_prefix="44")
    opted = [NUMBERS[1], NUMBERS[4]]

    def batch(tag: str) -> bytes:
        return ("to,text\n" + "".join(f"{n},{tag} {n}\n" for n in NUMBERS)).encode()

    with ServerProcess(root, "--connector", smsc.url()) as server:
        with server.ftp(account) as client:
            assert optout_csv(client) == []  # always there, empty at first
            # national form, one per line, a stray line that is no number
            upload(client, "stop.txt", "".join(f"0{n[2:]}\n" for n in opted).encode() + b"not a number\n", folder="/optout")
            assert wait_until(lambda: len(optout_csv(client)) == 2)
            listed = optout_csv(client)
            assert [(r["number"], r["source"]) for r in listed] == [(n, "ftp") for n in opted]
            assert all(r["since"].endswith("Z") for r in listed)
            error = download(client, "/reports/stop.txt.error.txt").decode()
            assert "line 3 ('not a number') is no phone number (code 105)" in error and "other 2" in error
            upload(client, "first.csv", batch("first"))
        summary = wait_for_summary(root, "bank", "first.csv", ("complete",), timeout=30)
        report = read_report(root, "bank", summary)
        assert sorted(r["to"] for r in report if r["error_code"] == "122") == sorted(opted)
        assert all(r["status"] == "005" for r in report if r["error_code"] == "122")
        assert summary["counts"]["rejected"] == 2 and summary["counts"]["delivered"] == 8
        assert {e["dest"] for e in smsc.submits()} == set(NUMBERS) - set(opted)
        # a CSV with a to-like column, named .remove: back on the list of senders
        with server.ftp(account) as client:
            upload(client, "back.csv.remove", f"name,mobile\nann,0{opted[0][2:]}\n".encode(), folder="/optout")
            assert wait_until(lambda: [r["number"] for r in optout_csv(client)] == [opted[1]])
            upload(client, "second.csv", batch("second"))
        summary = wait_for_summary(root, "bank", "second.csv", ("complete",), timeout=30)
        assert [r["to"] for r in read_report(root, "bank", summary) if r["error_code"] == "122"] == [opted[1]]
        # the command line changes the same list; the server's optout.csv follows
        done = cli(root, "optout", "add", "--product", "bank", "07700900099", "+44 7700 900098")
        assert done.returncode == 0, done.stderr
        assert "2 number(s) added" in done.stdout
        with server.ftp(account) as client:
            assert wait_until(lambda: {r["number"]: r["source"] for r in optout_csv(client)} == {
                opted[1]: "ftp", "447700900099": "cli", "447700900098": "cli"})
    listing = cli(root, "optout", "list", "--product", "bank")
    assert listing.returncode == 0 and "447700900099" in listing.stdout and "cli" in listing.stdout
    removed = cli(root, "optout", "remove", "--product", "bank", "447700900099")
    assert removed.returncode == 0 and "1 number(s) removed" in removed.stdout
    bad = cli(root, "optout", "add", "--product", "bank", "12")
    assert bad.returncode == 2 and "error 105" in bad.stderr and "nothing changed" in bad.stderr
    missing = cli(root, "optout", "list", "--product", "nobody")
    assert missing.returncode == 1 and "no product named 'nobody'" in missing.stderr
    # every change is in the ledger: a restart (here: a fresh opening) sees the list
    ledger = Ledger(root / "ftpbatch.db")
    try:
        assert sorted(o.number for o in ledger.list_optouts("bank")) == sorted([opted[1], "447700900098"])
    finally:
        ledger.close()


def slow_batch(rows: int) -> bytes:
    return ("to,text\n" + "".join(f"4477008{n:05d},slow {n}\n" for n in range(rows))).encode()


def batch_id_of(root: Path, name: str) -> str:
    assert wait_until(lambda: find_summary(root, "bank", name) is not None)
    return (find_summary(root, "bank", name) or {})["batch"]


def test_pause_stops_submits_and_resume_completes_with_nothing_lost(tmp_path: Path, smsc_factory) -> None:
    smsc = smsc_factory("happy", receipt_delay=0.05)
    root = tmp_path / "root"
    account = add_product(root, "bank", "bank-password", tps=20.0)  # 150 rows: ~7 s
    with ServerProcess(root, "--connector", smsc.url()) as server:
        with server.ftp(account) as client:
            upload(client, "slow.csv", slow_batch(150))
            batch_id = batch_id_of(root, "slow.csv")
            assert wait_until(lambda: len(smsc.submits()) >= 20, 15)
            upload(client, f"{batch_id}.pause", b"", folder="/control")
            paused_at = time.monotonic()
            assert wait_until(lambda: "paused" == (find_summary(root, "bank", "slow.csv") or {}).get("state"), 3)
            assert time.monotonic() - paused_at < 2.5
            assert client.nlst("/control") == []  # applied and removed
        time.sleep(2.0)  # in-flight ones finish within this
        stopped = len(smsc.submits())
        time.sleep(3.0)
        assert len(smsc.submits()) == stopped < 150
        with server.ftp(account) as client:
            upload(client, f"{batch_id}.resume", b"", folder="/control")
        summary = wait_for_summary(root, "bank", "slow.csv", ("complete",), timeout=40)
    dests = [e["dest"] for e in smsc.submits()]
    assert len(dests) == 150 and len(set(dests)) == 150  # nothing lost, nothing twice
    assert summary["counts"]["delivered"] == 150
    ledger = Ledger(root / "ftpbatch.db")
    try:
        batch = ledger.get_batch(batch_id)
        assert batch is not None
        assert [(verb, source) for verb, source, _ in ledger.batch_controls(batch.seq)] == [("pause", "ftp"), ("resume", "ftp")]
    finally:
        ledger.close()


def test_cancel_leaves_the_rest_006_and_unknown_ids_or_verbs_get_an_error_file(tmp_path: Path, smsc_factory) -> None:
    smsc = smsc_factory("happy", receipt_delay=0.05)
    root = tmp_path / "root"
    account = add_product(root, "bank", "bank-password", tps=20.0)
    add_product(root, "other", "other-password")
    with ServerProcess(root, "--connector", smsc.url()) as server:
        with server.ftp(account) as client:
            upload(client, "big.csv", slow_batch(200))
            batch_id = batch_id_of(root, "big.csv")
            assert wait_until(lambda: len(smsc.submits()) >= 10, 15)
            upload(client, f"{batch_id}.cancel", b"", folder="/control")
            summary = wait_for_summary(root, "bank", "big.csv", ("complete",), timeout=15)
            upload(client, "01JUNKNOWN0000000000000000.pause", b"", folder="/control")
            upload(client, f"{batch_id}.explode", b"", folder="/control")
            assert wait_until(lambda: len([n for n in client.nlst("/reports") if n.endswith(".error.txt")]) == 2)
            unknown = download(client, "/reports/01JUNKNOWN0000000000000000.pause.error.txt").decode()
            verb = download(client, f"/reports/{batch_id}.explode.error.txt").decode()
            assert client.nlst("/control") == []
            # a finished batch and another product's batch are refused the same way
            upload(client, f"{batch_id}.resume", b"", folder="/control")
            assert wait_until(lambda: f"{batch_id}.resume.error.txt" in client.nlst("/reports"))
        with server.ftp(add_product(root, "third", "third-password")) as client:
            upload(client, f"{batch_id}.pause", b"", folder="/control")
            assert wait_until(lambda: f"{batch_id}.pause.error.txt" in client.nlst("/reports"))
            assert "There is no batch" in download(client, f"/reports/{batch_id}.pause.error.txt").decode()
    sent = len({e["dest"] for e in smsc.submits()})
    report = read_report(root, "bank", summary)
    cancelled = [r for r in report if r["status"] == "006"]
    assert len(cancelled) == summary["counts"]["cancelled"] == 200 - sent > 0
    assert summary["counts"]["delivered"] == sent
    assert unknown.count(".") >= 1 and "There is no batch '01JUNKNOWN0000000000000000'" in unknown
    assert len(unknown.strip().splitlines()) == 1
    assert "'explode' is not a control" in verb
    assert "nothing left to resume" in (root / "homes" / "bank" / "reports" / f"{batch_id}.resume.error.txt").read_text()


def test_batch_pause_and_resume_from_the_command_line(tmp_path: Path, smsc_factory) -> None:
    smsc = smsc_factory("happy", receipt_delay=0.05)
    root = tmp_path / "root"
    account = add_product(root, "bank", "bank-password", tps=20.0)
    with ServerProcess(root, "--connector", smsc.url()) as server:
        with server.ftp(account) as client:
            upload(client, "cli.csv", slow_batch(120))
        batch_id = batch_id_of(root, "cli.csv")
        assert wait_until(lambda: len(smsc.submits()) >= 5, 15)
        paused = cli(root, "batch", "pause", batch_id)
        assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
        assert wait_until(lambda: (find_summary(root, "bank", "cli.csv") or {}).get("state") == "paused", 3)
        time.sleep(1.5)
        stopped = len(smsc.submits())
        time.sleep(1.5)
        assert len(smsc.submits()) == stopped < 120
        assert "was paused already" in cli(root, "batch", "pause", batch_id).stdout
        resumed = cli(root, "batch", "resume", batch_id)
        assert resumed.returncode == 0 and "resumed" in resumed.stdout
        summary = wait_for_summary(root, "bank", "cli.csv", ("complete",), timeout=30)
    assert summary["counts"]["delivered"] == 120
    done = cli(root, "batch", "resume", batch_id)
    assert done.returncode == 2 and "is complete" in done.stderr


def test_stop_reply_from_the_smsc_opts_the_number_out_and_the_next_batch_rejects_it_122(tmp_path: Path, smsc_factory) -> None:
    import socket
    import urllib.request

    stopper, bystander = NUMBERS[2], NUMBERS[3]
    # a STOP (any case, padded) to the product's sender; a STOP to nobody's address; a text that is no keyword
    smsc = smsc_factory("happy", receipt_delay=0.05,
                        mo=[f"{stopper}:12345:  stop ", f"{bystander}:99999:STOP", f"{bystander}:12345:stop please"])
    root = tmp_path / "root"
    account = add_product(root, "bank", "bank-password", sender="12345")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    with ServerProcess(root, "--connector", smsc.url(), "--metrics-port", str(metrics_port)) as server:
        with server.ftp(account) as client:
            assert wait_until(lambda: [(r["number"], r["source"]) for r in optout_csv(client)] == [(stopper, "stop-reply")])
            assert wait_until(lambda: b'ftpbatch_mo_optouts_total{result="unmatched"} 1.0'
                              in urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read())
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
            assert b'ftpbatch_mo_optouts_total{result="optout"} 1.0' in metrics
            upload(client, "after-stop.csv", ("to,text\n" + "".join(f"{n},hi {n}\n" for n in NUMBERS[:5])).encode())
        summary = wait_for_summary(root, "bank", "after-stop.csv", ("complete",), timeout=30)
    report = read_report(root, "bank", summary)
    assert [(r["to"], r["status"]) for r in report if r["error_code"] == "122"] == [(stopper, "005")]
    assert {e["dest"] for e in smsc.submits()} == set(NUMBERS[:5]) - {stopper}
    assert "matches no product's sender address" in server.log()


def test_optout_keywords_are_a_setting_of_dispatch(tmp_path: Path) -> None:
    import pytest

    from ftpbatch.config import DispatchSettings, default_toml, load_settings
    from ftpbatch.errors import ConfigError

    assert DispatchSettings().keywords() == {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"}
    assert "optout_keywords" in default_toml()
    (tmp_path / "ftpbatch.toml").write_text('[dispatch]\noptout_keywords = ["halt", " Arrete "]\n')
    assert load_settings(tmp_path, environ={}).dispatch.keywords() == {"HALT", "ARRETE"}
    assert load_settings(tmp_path, environ={"FTPBATCH_DISPATCH_OPTOUT_KEYWORDS": "stop,fin"}).dispatch.keywords() == {"STOP", "FIN"}
    with pytest.raises(ConfigError, match="single words"):
        DispatchSettings(optout_keywords="stop now, end")
