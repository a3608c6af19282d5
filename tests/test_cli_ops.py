"""The operator's view of a real ``ftpbatch serve``: /metrics, status, usage files, cancel, JSON logs."""

from __future__ import annotations

import csv
import datetime as dt
import ftplib
import io
import json
import socket
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ftpbatch.cli import main

from .helpers import ServerProcess, add_product, download, read_report, upload, wait_for_summary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def four_rows(tag: str) -> bytes:
    """Two good rows, a bad number (105), an empty text (107)."""
    return f"to,text\n07700900001,Hi Ann {tag}\n07700900002,Hi Bob {tag}\n12,short\n07700900004,  \n".encode()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ops")
    accounts = {
        name: add_product(root, name, f"{name}-password", dial_prefix="44") for name in ("acme", "monthly", "later")
    }
    port = free_port()
    env = {"FTPBATCH_REPORT_USAGE_MIN_INTERVAL": "0.1", "FTPBATCH_METRICS_STATUS_INTERVAL": "0.2"}
    server = ServerProcess(root, "--metrics-port", str(port), "--log-json", env=env).start()
    server.metrics_url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield server, accounts
    server.stop()
    assert "Traceback" not in server.log(), server.log()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_after_an_upload_show_its_counts(site):
    server, accounts = site
    before = scrape(server.metrics_url)
    with server.ftp(accounts["acme"]) as client:
        upload(client, "metered.csv", four_rows("metered"))
    wait_for_summary(server.root, "acme", "metered.csv", ("complete",))
    time.sleep(2.1)  # the ledger totals are cached for 2 s
    after = scrape(server.metrics_url)

    assert value(after, "ftpbatch_uploads_total", product="acme", source="ftp") == 1
    assert value(after, "ftpbatch_batches", product="acme", state="complete") == 1
    assert value(after, "ftpbatch_messages", product="acme", status="004") == 2
    assert value(after, "ftpbatch_messages", product="acme", status="005") == 2
    delta = {
        name: value(after, name, **labels) - value(before, name, **labels)
        for name, labels in (
            ("ftpbatch_submits_total", {"result": "accepted"}),
            ("ftpbatch_submit_latency_seconds_count", {}),
            ("ftpbatch_receipts_total", {"status": "004"}),
            ("ftpbatch_receipt_latency_seconds_count", {}),
            ("ftpbatch_ftp_logins_total", {"result": "ok"}),
        )
    }
    assert delta == {
        "ftpbatch_submits_total": 2,
        "ftpbatch_submit_latency_seconds_count": 2,
        "ftpbatch_receipts_total": 2,
        "ftpbatch_receipt_latency_seconds_count": 2,
        "ftpbatch_ftp_logins_total": 1,
    }
    assert value(after, "ftpbatch_ready") == 1
    assert value(after, "ftpbatch_up", component="connector") == 1
    with pytest.raises(ftplib.error_perm):
        server.ftp(type(accounts["acme"])("acme", "wrong-password"))
    deadline = time.monotonic() + 5  # counted right after the 530 reply is sent: poll
    while value(scrape(server.metrics_url), "ftpbatch_ftp_logins_total", result="failed") < 1:
        assert time.monotonic() < deadline, "failed login not counted"
        time.sleep(0.05)
    with urllib.request.urlopen(f"{server.metrics_url}/healthz", timeout=5) as answer:
        assert answer.status == 200 and json.loads(answer.read())["ready"] is True


def test_usage_file_appears_in_the_ftp_folder(site):
    server, accounts = site
    month = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m")
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    name = f"usage-{month}.csv"
    with server.ftp(accounts["monthly"]) as client:
        upload(client, "month.csv", four_rows("month"))
        wait_for_summary(server.root, "monthly", "month.csv", ("complete",))
        deadline = time.monotonic() + 10
        while True:
            assert name in [p.rsplit("/", 1)[-1] for p in client.nlst("/reports")]
            table = list(csv.DictReader(io.StringIO(download(client, f"/reports/{name}").decode())))
            if table[-1]["messages"] == "4" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert table[0]["day"] == f"{month}-01" and table[-1]["day"] == today
    assert table[-1] == {"day": today, "messages": "4", "parts": "2", "delivered": "2", "failed": "0", "rejected": "2"}


def test_status_summarises_the_running_server(site, capsys):
    server, accounts = site
    client = server.ftp(accounts["acme"])  # one open session
    try:
        time.sleep(0.5)  # status.json is rewritten every 0.2 s here
        assert main(["--root", str(server.root), "status", "--json"]) == 0
        document = json.loads(capsys.readouterr().out)
        assert main(["--root", str(server.root), "status"]) == 0
        text = capsys.readouterr().out
    finally:
        client.quit()
    assert document["server"]["running"] and document["server"]["ready"]
    assert document["server"]["metrics_url"] == server.metrics_url
    assert document["components"]["ftp"]["sessions"] >= 1
    assert document["components"]["connector"] == {"up": True, "url": "sim", "detail": "simulated SMSC ready"}
    assert {p["name"] for p in document["products"]} == {"acme", "monthly", "later"}
    assert set(document["queue"]) == {"queued", "scheduled", "awaiting_receipt"}
    assert set(document["callbacks"]) == {"pending", "due", "delivered", "given_up"}
    assert "running since" in text and "ready" in text
    assert "ftp        up" in text and "open session" in text
    assert "products (3): acme, later, monthly" in text


def test_cancel_turns_scheduled_messages_into_006_in_the_report(site, capsys):
    server, accounts = site
    tomorrow = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = f"to,text,scheduled_time\n07700900001,later one,{tomorrow}\n07700900002,later two,{tomorrow}\n".encode()
    with server.ftp(accounts["later"]) as client:
        upload(client, "later.csv", data)
    summary = wait_for_summary(server.root, "later", "later.csv", ("dispatching",))
    assert summary["counts"]["scheduled"] == 2
    assert main(["--root", str(server.root), "batch", "cancel", summary["batch"]]) == 0
    assert "2 message(s) not yet sent are cancelled (status 006)" in capsys.readouterr().out
    summary = wait_for_summary(server.root, "later", "later.csv", ("complete",))
    assert summary["counts"]["cancelled"] == 2 and summary["counts"]["scheduled"] == 0
    report = read_report(server.root, "later", summary)
    assert [r["status"] for r in report] == ["006", "006"]
    assert [r["status_text"] for r in report] == ["cancelled", "cancelled"]


def test_logs_are_json_lines_with_one_line_per_batch_event_and_no_password(site):
    server, _ = site
    summary = wait_for_summary(server.root, "acme", "metered.csv", ("complete",))
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]  # every line is JSON
        events = [e["event"] for e in lines if e.get("logger") == "ftpbatch.batch" and e.get("batch") == summary["batch"]]
        if "complete" in events or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert events == ["received", "processing", "dispatching", "complete"]
    complete = next(e for e in lines if e.get("event") == "complete" and e.get("batch") == summary["batch"])
    assert complete["product"] == "acme" and complete["delivered"] == 2 and complete["rejected"] == 2
    assert {e["level"] for e in lines} <= {"debug", "info", "warning", "error"}
    text = server.log()
    for secret in ("acme-password", "wrong-password", "monthly-password"):
        assert secret not in text
