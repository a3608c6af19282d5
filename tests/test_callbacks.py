"""Delivery callbacks on real parts: a real HTTP receiver on loopback, a real ledger, the whole pipeline."""

from __future__ import annotations

import base64
import csv
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs

import pytest

from ftpbatch import codes
from ftpbatch.config import load_settings
from ftpbatch.models import Receipt, SubmitResult
from ftpbatch.ledger import Ledger
from ftpbatch.models import Product
from ftpbatch.report.callbacks import CallbackSender
from ftpbatch.service import Gateway

from .helpers import add_product
from .ledger_contract import NOW, rows

FIELDS = {"api_id", "apiMsgId", "cliMsgId", "to", "timestamp", "from", "status", "charge"}


class Receiver:
    """A callback endpoint: records what it accepted; can fail, stall or hang on purpose."""

    def __init__(self, fail_first: int = 0, delay: float = 0.0, hang: bool = False, tls: tuple[Path, Path] | None = None) -> None:
        self.fail_first = fail_first
        self.delay = delay
        self.hang = hang
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.requests = 0
        self.accepted: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the sender reuses connections
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner.lock:
                    owner.requests += 1
                    n = owner.requests
                if owner.hang:
                    owner.release.wait(30)
                    return  # never answers: the sender gives up on its own
                if owner.delay:
                    time.sleep(owner.delay)
                if n <= owner.fail_first:
                    self._answer(500, b"try again later")
                    return
                form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
                with owner.lock:
                    owner.accepted.append(
                        {"form": form, "path": self.path, "auth": self.headers.get("Authorization"),
                         "type": self.headers.get("Content-Type")}
                    )
                self._answer(200, b"OK")

            def _answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self.server.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}/cb"

    def forms(self) -> list[dict[str, str]]:
        with self.lock:
            return [a["form"] for a in self.accepted]

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.forms()) >= count:
                return self.forms()
            time.sleep(0.02)
        raise AssertionError(f"{len(self.forms())} callbacks within {timeout}s, expected {count}")

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.close()


FAST = {"retry_delays": "0.02, 0.04, 0.08, 0.16, 0.32", "timeout": 2.0, "concurrency": 4}


def make_gateway(root: Path, connector: str = "sim://?receipt_delay=0.01", **callbacks: Any) -> Gateway:
    settings = load_settings(
        root,
        {"dispatch": {"connector": connector}, "report": {"interval": 0.05}, "callbacks": {**FAST, **callbacks}},
    )
    return Gateway(settings, ftp=False, watch_inboxes=False, node_id="test-node")


def batch_file(path: Path, n: int, bad: int = 0) -> Path:
    lines = ["to,text,climsgid"]
    lines += [f"07700{i:06d},hello {i},ref-{i}" for i in range(1, n + 1)]
    lines += [f"12,bad number {i},bad-{i}" for i in range(bad)]
    path.write_text("\n".join(lines) + "\n")
    return path


def report_rows(root: Path, product: str, batch_id: str) -> list[dict[str, str]]:
    (path,) = (root / "homes" / product / "reports").glob(f"*.{batch_id}.report.csv")
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_final_status_arrives_once_with_all_fields(tmp_path: Path, receivers: list[Receiver]):
    receiver = Receiver()
    receivers.append(receiver)
    root = tmp_path / "root"
    add_product(root, "acme", "acme-password", dial_prefix="44", sender="ACME", callback_url=receiver.url + "?key=k1",
                callback_user="hook", callback_password="s3cret")
    gateway = make_gateway(root, "sim://?receipt_delay=0.01&failure_ratio=0.3&seed=4")
    started = time.time()
    gateway.start()
    try:
        batch = gateway.submit_file(batch_file(tmp_path / "june.csv", 20, bad=2), "acme")
        assert gateway.wait_finished(batch.id, timeout=15).state == "complete"
        report = report_rows(root, "acme", batch.id)
        forms = receiver.wait_for(len(report))
        time.sleep(0.3)  # anything sent twice would show up now
    finally:
        gateway.stop()
    forms = receiver.forms()
    assert len(forms) == 22
    assert {r["status"] for r in report} == {"004", "007", "005"}  # delivered, failed, rejected at intake
    by_ref = {f["cliMsgId"]: f for f in forms}
    assert len(by_ref) == 22  # once each
    for row in report:
        form = by_ref[row["climsgid"]]
        assert set(form) == FIELDS
        assert form["api_id"] == "acme"
        assert form["apiMsgId"] == row["message_id"]  # the upstream id, as in report.csv ("" if never sent)
        assert form["to"] == row["to"]
        assert form["status"] == row["status"]
        assert form["charge"] == row["parts"]
        assert form["from"] == "ACME"
        assert started - 1 <= int(form["timestamp"]) <= time.time()
    assert all(f["apiMsgId"] for f in forms if f["status"] != "005")
    accepted = receiver.accepted
    assert {a["path"] for a in accepted} == {"/cb?key=k1"}
    assert {a["auth"] for a in accepted} == {"Basic " + base64.b64encode(b"hook:s3cret").decode()}
    assert {a["type"] for a in accepted} == {"application/x-www-form-urlencoded"}


def test_failing_receiver_and_a_restart_still_deliver_each_callback_exactly_once(tmp_path: Path, receivers: list[Receiver]):
    receiver = Receiver(fail_first=6, delay=0.04)
    receivers.append(receiver)
    root = tmp_path / "root"
    add_product(root, "acme", "acme-password", dial_prefix="44", callback_url=receiver.url, callback_level=3)
    first = make_gateway(root, concurrency=2)
    first.start()
    try:
        batch = first.submit_file(batch_file(tmp_path / "restart.csv", 30), "acme")
        assert first.wait_finished(batch.id, timeout=15).state == "complete"
        receiver.wait_for(10)
    finally:
        first.stop()  # mid-way: callbacks still waiting in the outbox
    assert 10 <= len(receiver.forms()) < 60
    assert receiver.requests > len(receiver.forms())  # the first ones failed

    second = make_gateway(root, concurrency=2)
    second.start()
    try:
        receiver.delay = 0.0
        forms = receiver.wait_for(60)  # 30 messages x (003 + 004)
        time.sleep(0.3)
        backlog = second.ledger.callback_backlog(time.time())
    finally:
        second.stop()
    forms = receiver.forms()
    pairs = [(f["apiMsgId"], f["status"]) for f in forms]
    assert len(pairs) == 60 and len(set(pairs)) == 60
    assert backlog.pending == 0 and backlog.delivered == 60 and backlog.given_up == 0
    # each message's intermediate status arrived before its final one
    order = {pair: n for n, pair in enumerate(pairs)}
    for upstream_id, status in pairs:
        if status == "004":
            assert order[(upstream_id, "003")] < order[(upstream_id, "004")]


def test_a_hanging_receiver_does_not_slow_a_big_batch(tmp_path: Path, receivers: list[Receiver]):
    receiver = Receiver(hang=True)
    receivers.append(receiver)
    root = tmp_path / "root"
    add_product(root, "plain", "plain-password", dial_prefix="44")
    add_product(root, "hooked", "hooked-password", dial_prefix="44", callback_url=receiver.url)
    gateway = make_gateway(root, "sim://?receipt_delay=0", timeout=1.0, concurrency=8)
    gateway.start()
    try:
        timings = {}
        for product in ("plain", "hooked"):
            source = batch_file(tmp_path / f"{product}.csv", 10_000)
            started = time.monotonic()
            batch = gateway.submit_file(source, product)
            assert gateway.wait_finished(batch.id, timeout=30).state == "complete"
            timings[product] = time.monotonic() - started
        backlog = gateway.ledger.callback_backlog(time.time())
    finally:
        receiver.release.set()
        gateway.stop()
    assert timings["hooked"] < 2 * timings["plain"] + 2.0, timings
    assert backlog.pending + backlog.given_up == 10_000 and backlog.delivered == 0
    # the dead endpoint was paused after its first timeouts (one per worker), then probed
    # one request at a time (each takes the 1 s timeout), not hammered once per message
    assert receiver.requests <= 8 + int(sum(timings.values())) + 2, receiver.requests


def test_callbacks_are_given_up_after_the_last_retry_and_counted(tmp_path: Path, receivers: list[Receiver]):
    receiver = Receiver(fail_first=10**9)
    receivers.append(receiver)
    root = tmp_path / "root"
    add_product(root, "acme", "acme-password", dial_prefix="44", callback_url=receiver.url)
    gateway = make_gateway(root, retry_delays="0.01, 0.02")
    gateway.start()
    try:
        batch = gateway.submit_file(batch_file(tmp_path / "doomed.csv", 3), "acme")
        gateway.wait_finished(batch.id, timeout=15)
        deadline = time.monotonic() + 10
        while gateway.ledger.callback_backlog(time.time()).given_up < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        backlog = gateway.ledger.callback_backlog(time.time())
        scraped = gateway.metrics.render().decode()
    finally:
        gateway.stop()
    assert backlog.given_up == 3 and backlog.pending == 0
    assert receiver.requests == 9  # 3 callbacks x (first try + 2 retries)
    assert 'ftpbatch_callbacks_total{result="given_up"} 3.0' in scraped
    assert 'ftpbatch_callbacks_total{result="retry"} 6.0' in scraped


def test_https_callback_urls_verify_the_certificate(tmp_path: Path, receivers: list[Receiver]):
    from ftpbatch.security.tls import make_self_signed

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key)
    receiver = Receiver(tls=(cert, key))
    receivers.append(receiver)
    ledger = callback_ledger(tmp_path, receiver.url)
    sender = CallbackSender(ledger, load_settings(tmp_path, {"callbacks": {**FAST, "retry_delays": "60"}}).callbacks, "n1")
    final_statuses(ledger, 1)
    sender.start()
    try:
        deadline = time.monotonic() + 10
        while sender.retried < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sender.stop()
    (row,) = ledger.callbacks_of_message(1)
    ledger.close()
    assert receiver.forms() == []
    assert row["state"] == "pending" and row["tries"] == 1
    assert "certificate" in row["last_error"]


# --- the outbox in the ledger -------------------------------------------------------
def callback_ledger(tmp_path: Path, url: str | None = "http://127.0.0.1:9/cb", level: int = 2) -> Ledger:
    ledger = Ledger(tmp_path / "ledger.db", receipt_timeout=3600)
    ledger.add_product(Product("acme", "x", callback_url=url, callback_level=level))
    return ledger


def new_batch(ledger: Ledger, n: int, level: int | None = None, status: str = codes.QUEUED) -> int:
    batch = ledger.record_claim(f"01CB{time.time_ns():022d}"[:26], "acme", "f.csv", "/spool/f.csv", "ftp", time.time())
    ledger.start_processing(batch.seq)
    ledger.set_callback_level(batch.seq, level)
    ledger.insert_messages(batch.seq, "acme", rows(n, status))
    ledger.finish_intake(batch.seq, n, level)
    return batch.seq


def final_statuses(ledger: Ledger, n: int, level: int | None = None) -> int:
    """A batch of ``n`` messages submitted and delivered."""
    seq = new_batch(ledger, n, level)
    leased = ledger.lease("node", "acme", n, time.time(), 60)
    ledger.record_results("sim", [SubmitResult(m.message_id, m.attempt, upstream_id=f"u{m.message_id}") for m in leased])
    ledger.record_receipts([Receipt("sim", f"u{m.message_id}", codes.DELIVERED, NOW) for m in leased])
    return seq


def outbox(ledger: Ledger, message_id: int) -> list[str]:
    return [r["status"] for r in ledger.callbacks_of_message(message_id)]


@pytest.mark.parametrize(
    ("product_level", "batch_level", "expected"),
    [(2, None, ["004"]), (1, None, ["003"]), (3, None, ["003", "004"]), (3, 0, []), (0, 2, ["004"])],
)
def test_the_batch_level_else_the_product_level_picks_the_changes(tmp_path, product_level, batch_level, expected):
    ledger = callback_ledger(tmp_path, level=product_level)
    try:
        final_statuses(ledger, 2, batch_level)
        assert outbox(ledger, 1) == expected
        assert outbox(ledger, 2) == expected
    finally:
        ledger.close()


def test_no_callback_url_no_outbox_rows(tmp_path):
    ledger = callback_ledger(tmp_path, url=None, level=3)
    try:
        final_statuses(ledger, 3)
        assert ledger.callback_states() == {}
    finally:
        ledger.close()


def test_repeated_and_parked_receipts_queue_one_callback_each(tmp_path):
    ledger = callback_ledger(tmp_path, level=3)
    try:
        new_batch(ledger, 2)
        first, second = ledger.lease("node", "acme", 2, time.time(), 60)
        # a receipt overtakes its submit answer (parked), another comes twice
        ledger.record_receipts([Receipt("sim", "early", codes.UNDELIVERABLE, NOW)])
        ledger.record_results("sim", [SubmitResult(first.message_id, first.attempt, upstream_id="early"),
                                      SubmitResult(second.message_id, second.attempt, upstream_id="u2")])
        for _ in range(2):
            ledger.record_receipts([Receipt("sim", "u2", codes.DELIVERED, NOW)])
        assert outbox(ledger, first.message_id) == ["003", "007"]
        assert outbox(ledger, second.message_id) == ["003", "004"]
    finally:
        ledger.close()


def test_rejected_scheduled_and_cancelled_messages_are_reported(tmp_path):
    ledger = callback_ledger(tmp_path, level=3)
    try:
        seq = new_batch(ledger, 1, status=codes.ERROR)  # rejected at intake
        assert outbox(ledger, 1) == ["005"]
        seq = new_batch(ledger, 2, status=codes.SCHEDULED)
        ids = [int(i) for i in next(ledger.report_frames(seq))["row_no"]]
        assert ids == [1, 2]
        assert ledger.cancel_pending(seq) == 2
        assert outbox(ledger, 2) == ["011", "006"]
        assert outbox(ledger, 3) == ["011", "006"]
    finally:
        ledger.close()


def test_leases_fence_outcomes_and_a_restart_resumes_its_own(tmp_path):
    ledger = callback_ledger(tmp_path)
    try:
        final_statuses(ledger, 3)
        now = time.time()
        claimed = ledger.claim_callbacks("node-a", 10, now, lease_seconds=60)
        assert [j.fields["status"] for j in claimed] == ["004"] * 3
        assert ledger.claim_callbacks("node-b", 10, now, 60) == []  # leased: nobody else posts them
        # node-a dies and restarts: its leases are released at once
        assert ledger.expire_callback_leases_of("node-a") == 3
        again = ledger.claim_callbacks("node-a", 10, now, 60)
        assert [j.attempt for j in again] == [2, 2, 2]
        # the dead process's late "delivered" (attempt 1) changes nothing
        from ftpbatch.ledger.records import CallbackOutcome

        ledger.record_callback_outcomes([CallbackOutcome(claimed[0].id, claimed[0].attempt, "delivered")], now)
        assert ledger.callback_backlog(now).delivered == 0
        ledger.record_callback_outcomes([CallbackOutcome(j.id, j.attempt, "delivered") for j in again], now)
        backlog = ledger.callback_backlog(now)
        assert (backlog.pending, backlog.delivered) == (0, 3)
        final_statuses(ledger, 1)  # one more, still pending
        assert ledger.purge_callbacks(now + 1) == 3  # done ones are forgotten, pending ones stay
        assert ledger.callback_states() == {"pending": 1}
    finally:
        ledger.close()


def test_two_senders_on_one_ledger_never_post_the_same_callback(tmp_path, receivers: list[Receiver]):
    receiver = Receiver(delay=0.002)
    receivers.append(receiver)
    ledger = callback_ledger(tmp_path, receiver.url)
    final_statuses(ledger, 200)
    settings = load_settings(tmp_path, {"callbacks": FAST}).callbacks
    other = Ledger(tmp_path / "ledger.db")
    senders = [CallbackSender(ledger, settings, "node-a"), CallbackSender(other, settings, "node-b")]
    for sender in senders:
        sender.start()
    try:
        forms = receiver.wait_for(200)
        time.sleep(0.2)
    finally:
        for sender in senders:
            sender.stop()
    forms = receiver.forms()
    assert len(forms) == 200 and len({f["apiMsgId"] for f in forms}) == 200
    assert all(s.delivered > 0 for s in senders)  # both did part of the work
    other.close()
    ledger.close()


def test_a_receiver_that_trickles_is_cut_at_the_timeout(tmp_path):
    """Per-read socket timeouts alone would let a byte every second keep a POST open forever."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(0.2):
                try:
                    conn.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    ledger = callback_ledger(tmp_path, f"http://127.0.0.1:{port}/cb")
    final_statuses(ledger, 1)
    sender = CallbackSender(ledger, load_settings(tmp_path, {"callbacks": {**FAST, "timeout": 0.5, "retry_delays": "60"}}).callbacks, "n1")
    started = time.monotonic()
    sender.start()
    try:
        while sender.retried < 1 and time.monotonic() - started < 10:
            time.sleep(0.02)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        sender.stop()
        thread.join(2)
        listener.close()
    (row,) = ledger.callbacks_of_message(1)
    ledger.close()
    assert sender.retried == 1 and elapsed < 3.0
    assert row["state"] == "pending" and row["tries"] == 1
