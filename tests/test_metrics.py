"""Health, metrics plumbing and log hygiene, in process."""

from __future__ import annotations

import io
import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ftpbatch import logs
from ftpbatch.cli import main
from ftpbatch.config import load_settings
from ftpbatch.service import Gateway

from .helpers import add_product


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        with refused:
            return refused.code, refused.read()


def test_healthz_goes_unready_when_the_connector_is_down(tmp_path: Path):
    add_product(tmp_path, "acme", "acme-password")
    settings = load_settings(
        tmp_path,
        {"ftp": {"port": 0}, "metrics": {"port": 0, "status_interval": 0.1}, "dispatch": {"connector": "sim"}},
    )
    gateway = Gateway(settings, node_id="health-node")
    gateway.start()
    try:
        assert gateway.ops is not None
        url = gateway.ops.url
        deadline = time.monotonic() + 5
        while get(f"{url}/healthz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        code, body = get(f"{url}/healthz")
        assert code == 200 and json.loads(body)["components"]["connector"] is True

        gateway.connector.stop()  # the upstream is gone
        code, body = get(f"{url}/healthz")
        assert code == 503
        assert json.loads(body) == {
            "ready": False,
            "components": {"heartbeat": True, "ops-http": True, "status-board": True, "reporter": True, "callbacks": True, "dispatcher": True, "ingest": True, "intake": True, "guard": True, "ftp": True, "connector": False},
        }
        metrics = get(f"{url}/metrics")[1].decode()
        assert "ftpbatch_ready 0.0" in metrics and 'ftpbatch_up{component="connector"} 0.0' in metrics
        status = json.loads(get(f"{url}/status")[1])
        assert status["server"]["ready"] is False and status["components"]["connector"]["up"] is False
        assert get(f"{url}/nothing")[0] == 404
        time.sleep(0.3)
        assert main(["--root", str(tmp_path), "status"]) == 1  # running, not ready
    finally:
        gateway.stop()
    assert json.loads((tmp_path / "status.json").read_text())["server"]["running"] is False
    assert main(["--root", str(tmp_path), "status"]) == 1  # not running


def test_metrics_port_in_use_is_one_clear_error(tmp_path: Path, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--root", str(tmp_path), "init", "--no-tls"]) == 0  # serve needs a root init made
        capsys.readouterr()
        code = main(["--root", str(tmp_path), "serve", "--ftp-port", "0", "--metrics-port", str(port)])
    assert code == 1
    err = capsys.readouterr().err
    assert f"cannot serve metrics on 127.0.0.1:{port}" in err and "Traceback" not in err
    logging.getLogger().handlers[:] = [h for h in logging.getLogger().handlers if not getattr(h, "_ftpbatch", False)]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("smpp://esme:t0ps3cret@smsc.example:2775?window=50", "smpp://esme:***@smsc.example:2775?window=50"),
        ("https://hook:pa55@example.com/cb", "https://hook:***@example.com/cb"),
        ("http://example.com/cb?password=abc&x=1", "http://example.com/cb?password=***&x=1"),
        ("sim://?receipt_delay=0.2", "sim://?receipt_delay=0.2"),
    ],
)
def test_urls_are_logged_without_passwords(url: str, shown: str):
    assert logs.redact_url(url) == shown


def test_json_logs_carry_event_fields_and_never_a_password():
    stream = io.StringIO()
    handler = logs.configure(json_lines=True, stream=stream)
    try:
        logs.batch_event(logs.RECEIVED, "01ABC", "acme", file="june 1.csv", source="ftp")
        logging.getLogger("ftpbatch.test").info("connecting to %s", "smpp://esme:t0ps3cret@smsc:2775")
        try:
            raise RuntimeError("bind failed for smpp://esme:t0ps3cret@smsc:2775")
        except RuntimeError:
            logging.getLogger("ftpbatch.test").exception("connector crashed")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "received" and lines[0]["batch"] == "01ABC" and lines[0]["file"] == "june 1.csv"
    assert lines[0]["msg"] == 'batch received 01ABC product=acme file="june 1.csv" source=ftp'
    assert lines[1]["msg"] == "connecting to smpp://esme:***@smsc:2775"
    assert "t0ps3cret" not in stream.getvalue()
    assert "RuntimeError" in lines[2]["exc"]


def test_text_logs_are_the_default():
    stream = io.StringIO()
    handler = logs.configure(stream=stream)
    try:
        logs.batch_event(logs.COMPLETE, "01ABC", "acme", delivered=2)
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue().rstrip().endswith("INFO ftpbatch.batch: batch complete 01ABC product=acme delivered=2")


def test_healthz_of_a_server_whose_smsc_refuses_is_503(tmp_path: Path):
    import socket

    from .helpers import ServerProcess

    with socket.socket() as probe:  # a port nobody listens on: the SMSC refuses every bind
        probe.bind(("127.0.0.1", 0))
        smsc_port = probe.getsockname()[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    add_product(tmp_path, "acme", "acme-password")
    with ServerProcess(tmp_path, "--connector", f"smpp://esme:pw@127.0.0.1:{smsc_port}", "--metrics-port", str(metrics_port)):
        code, body = get(f"http://127.0.0.1:{metrics_port}/healthz")
        assert code == 503
        assert json.loads(body)["components"] == {"heartbeat": True, "ops-http": True, "status-board": True, "reporter": True, "callbacks": True, "dispatcher": True, "ingest": True, "intake": True, "guard": True, "ftp": True, "connector": False}
        deadline = time.monotonic() + 10
        while True:  # the first bind attempt runs in the background
            status = json.loads(get(f"http://127.0.0.1:{metrics_port}/status")[1])
            if "refused" in status["components"]["connector"]["detail"].lower() or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert "refused" in status["components"]["connector"]["detail"].lower()
        assert status["server"]["ready"] is False
        assert status["components"]["connector"]["url"] == f"smpp://esme:***@127.0.0.1:{smsc_port}"


def test_batched_histogram_exposes_what_a_prometheus_histogram_would():
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from ftpbatch.ops.metrics import BatchedHistogram

    buckets = (0.001, 0.01, 0.1, 1.0)
    # on a bound, between bounds, below the first, above the last
    values = [0.0005, 0.001, 0.002, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 7.5] * 3
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("x_seconds", "doc", buckets=buckets, registry=theirs)
    batched = BatchedHistogram("x_seconds", "doc", buckets, ours, fold_at=7)  # folds part-way, the rest at scrape
    for value in values:
        reference.observe(value)
    batched.observe_many(values[:20])
    batched.observe(values[20])
    batched.observe_many(values[21:])

    def samples(registry: CollectorRegistry) -> dict[str, str]:
        lines = generate_latest(registry).decode().splitlines()
        return dict(line.rsplit(" ", 1) for line in lines if line.startswith("x_seconds") and "_created" not in line)

    assert samples(ours) == samples(theirs)
    assert samples(ours)['x_seconds_bucket{le="0.001"}'] == "6.0"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread dies on purpose
@pytest.mark.parametrize(
    ("service", "cls", "loop"),
    [
        ("dispatcher", "ftpbatch.dispatch.dispatcher.Dispatcher", "_feed"),
        ("ingest", "ftpbatch.intake.ingest.Ingest", "_run"),
        ("reporter", "ftpbatch.report.reporter.Reporter", "_run"),
        ("heartbeat", "ftpbatch.ops.nodes.NodeHeartbeat", "_run"),
    ],
)
def test_a_dead_service_thread_makes_healthz_unhealthy(tmp_path: Path, monkeypatch, service: str, cls: str, loop: str):
    from ftpbatch.ops.status import render_status

    def broken_loop(self) -> None:
        raise RuntimeError(f"{service} loop broken on purpose")

    monkeypatch.setattr(f"{cls}.{loop}", broken_loop)
    settings = load_settings(
        tmp_path, {"ftp": {"port": 0}, "metrics": {"port": 0, "status_interval": 0.1}, "dispatch": {"connector": "sim"}}
    )
    gateway = Gateway(settings, node_id="dead-thread")
    gateway.start()
    try:
        assert gateway.ops is not None
        url = gateway.ops.url
        deadline = time.monotonic() + 10
        while True:  # the connector binds in the background; the broken thread dies at once
            code, body = get(f"{url}/healthz")
            components = json.loads(body)["components"]
            if (components[service] is False and components["connector"]) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert code == 503 and json.loads(body)["ready"] is False
        assert components[service] is False
        assert all(up for name, up in components.items() if name != service), components
        status = json.loads(get(f"{url}/status")[1])
        assert status["components"][service]["up"] is False
        assert f"  {service:<10} DOWN" in render_status(status)
    finally:
        gateway.stop()
