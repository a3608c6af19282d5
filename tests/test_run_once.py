"""Work that must be done once across nodes, on SQLite and on a real PostgreSQL server.

Two ledger handles (and two holders) stand for two nodes on one ledger and
one data root: a batch's intake, the report files, the callback outbox's
claims. Races are real threads released by one barrier.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from ftpbatch import codes
from ftpbatch.config import load_settings
from ftpbatch.intake.ingest import Ingest, ingest_job
from ftpbatch.intake.watcher import Intake
from ftpbatch.ledger import Ledger
from ftpbatch.models import DISPATCHING, PROCESSING, Product, Receipt, SubmitResult
from ftpbatch.report.reporter import Reporter
from ftpbatch.storage import LocalStorage
from tests.ledger_contract import NOW, rows

ROWS = 1200


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_at(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "root" / "ftpbatch.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def two_nodes(ledger_at: str, tmp_path: Path) -> Iterator[tuple[Ledger, Ledger, LocalStorage]]:
    storage = LocalStorage(tmp_path / "root")
    storage.prepare()
    a, b = Ledger(ledger_at), Ledger(ledger_at)
    a.add_product(Product("acme", "x", dial_prefix="44", duplicate_window_hours=0))
    storage.ensure_home("acme")
    yield a, b, storage
    a.close()
    b.close()


def spooled_batch(ledger: Ledger, storage: LocalStorage, tmp_path: Path, n: int = ROWS):
    source = tmp_path / "f.csv"
    source.write_text("to,text\n" + "".join(f"4477009{i:05d},hi {i}\n" for i in range(n)))
    batch_id, spooled = storage.spool_copy(source, "acme")
    return ledger.record_claim(batch_id, "acme", "f.csv", str(spooled), "ftp", time.time())


def stored_rows(ledger: Ledger, seq: int) -> int:
    return sum(t.messages for t in ledger.status_counts(seq))


def test_two_nodes_taking_in_one_batch_store_each_row_once(two_nodes, tmp_path: Path) -> None:
    a, b, storage = two_nodes
    batch = spooled_batch(a, storage, tmp_path)
    ingests = [Ingest(a, storage, chunk_rows=100, holder="node-a"), Ingest(b, storage, chunk_rows=100, holder="node-b")]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def node(ingest: Ingest) -> None:
        start.wait()
        try:
            ingest.process(batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=node, args=(i,)) for i in ingests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done = a.get_batch(batch.id)
    assert not errors and done is not None
    assert (done.state, done.error_code, done.rows) == (DISPATCHING, None, ROWS)
    assert stored_rows(a, done.seq) == ROWS and a.max_row(done.seq) == ROWS
    assert a.job_holders("ingest:") == []  # released when done


def test_a_batch_whose_node_died_mid_intake_is_resumed_by_another_after_the_lease(two_nodes, tmp_path: Path) -> None:
    a, b, storage = two_nodes
    batch = spooled_batch(a, storage, tmp_path)
    # node-a took the batch in half-way and died: rows 1..500 stored, its lease left behind
    now = time.time()
    assert a.take_job(ingest_job(batch.seq), "node-a", 30, now)
    a.start_processing(batch.seq)
    a.insert_messages(batch.seq, "acme", rows(500))
    a.start_dispatching(batch.seq)
    ingest_b = Ingest(b, storage, chunk_rows=100, holder="node-b")
    submitted: list[str] = []
    intake_b = Intake(storage, b, load_settings(tmp_path).intake, submit=lambda x: submitted.append(x.id), holder="node-b")
    # while the lease lasts (and the claim is recent), node-b leaves it alone
    assert intake_b.resume_orphans(now + 10) == 0
    ingest_b.process(b.get_batch(batch.id))  # even if handed it: the lease is node-a's
    assert stored_rows(b, batch.seq) == 500 and b.get_batch(batch.id).rows == 0
    # time passes (node-a's lease is made to have ended 40 s ago): node-b's rescan resumes
    # the batch, after the rows node-a stored
    assert a.take_job(ingest_job(batch.seq), "node-a", 30, now - 70)
    assert intake_b.resume_orphans(now + 31) == 1 and submitted == [batch.id]
    ingest_b.process(b.get_batch(batch.id))
    done = b.get_batch(batch.id)
    assert (done.state, done.rows) == (DISPATCHING, ROWS)
    assert stored_rows(b, batch.seq) == ROWS
    assert intake_b.resume_orphans(now + 100) == 0  # done: nothing left to resume


def test_one_reporter_writes_the_reports_and_the_other_takes_over_when_it_stops(two_nodes, tmp_path: Path) -> None:
    a, b, storage = two_nodes
    reporters = {"node-a": Reporter(a, storage, 0.02, offload_rows=None, holder="node-a"),
                 "node-b": Reporter(b, storage, 0.02, offload_rows=None, holder="node-b")}
    wrote: list[tuple[str, int]] = []
    for holder, reporter in reporters.items():
        real = reporter.writer.write

        def write(batch, counts, holder=holder, real=real):  # observe who writes; the real write happens
            wrote.append((holder, batch.seq))
            return real(batch, counts)

        reporter.writer.write = write  # type: ignore[method-assign]
    batch = spooled_batch(a, storage, tmp_path, 50)
    Ingest(a, storage, holder="node-a").process(batch)
    for reporter in reporters.values():
        reporter.start()
    try:
        deadline = time.monotonic() + 20
        while not a.report_is_current(batch.seq) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert wrote and len({h for h, _ in wrote}) == 1, wrote
        first = wrote[0][0]
        reporters[first].stop()  # a clean stop releases the job
        other = "node-b" if first == "node-a" else "node-a"
        a.cancel_pending(batch.seq)  # the batch changes: its report is due again
        deadline = time.monotonic() + 20
        while not a.report_is_current(batch.seq) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert a.report_is_current(batch.seq)
        assert {h for h, _ in wrote[wrote.index((first, batch.seq)):] if h != first} == {other}
    finally:
        for reporter in reporters.values():
            reporter.stop()


def test_two_nodes_claiming_callbacks_never_claim_one_twice(two_nodes) -> None:
    a, b, _ = two_nodes
    a.update_product("acme", callback_url="http://127.0.0.1:9/cb", callback_level=2)
    seq = a.record_claim("01RUNONCECALLBACKS00000000", "acme", "f.csv", "/spool/f.csv", "ftp", time.time()).seq
    a.start_processing(seq)
    a.insert_messages(seq, "acme", rows(400))
    a.finish_intake(seq, 400, None)
    leased = a.lease("node", "acme", 400, time.time(), 60)
    a.record_results("sim", [SubmitResult(m.message_id, m.attempt, upstream_id=f"u{m.message_id}") for m in leased])
    a.record_receipts([Receipt("sim", f"u{m.message_id}", codes.DELIVERED, NOW) for m in leased])
    claimed: dict[str, list[int]] = {"node-a": [], "node-b": []}
    start = threading.Barrier(2)

    def node(ledger: Ledger, holder: str) -> None:
        start.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(claimed["node-a"]) + len(claimed["node-b"]) < 400:
            claimed[holder] += [j.id for j in ledger.claim_callbacks(holder, 7, time.time(), 60)]

    threads = [threading.Thread(target=node, args=args) for args in ((a, "node-a"), (b, "node-b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    every = claimed["node-a"] + claimed["node-b"]
    assert len(every) == 400 and len(set(every)) == 400
