"""Big reports written by the report process: the same bytes, and never skipped when it fails."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ftpbatch.config import load_settings
from ftpbatch.models import Product
from ftpbatch.report.files import Counts, report_names
from ftpbatch.report.reporter import OFFLOAD_ROWS
from ftpbatch.service import Gateway

from .helpers import parse_report


@pytest.fixture
def gateway(tmp_path: Path):
    settings = load_settings(tmp_path / "root", {"dispatch": {"connector": "sim://?receipt_delay=0"}, "report": {"interval": 0.05}})
    gateway = Gateway(settings, ftp=False, watch_inboxes=False, node_id="report-process")
    gateway.ledger.add_product(Product("bulk", "unused", duplicate_window_hours=0))
    yield gateway
    gateway.stop()


def send(gateway: Gateway, tmp_path: Path, rows: int) -> str:
    source = tmp_path / "bulk.csv"
    source.write_text("to,text\n" + "".join(f"4477{n:08d},Report process test {n}\n" for n in range(rows)))
    return gateway.submit_file(source, "bulk").id


def wait_complete(gateway: Gateway, batch_id: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = gateway.ledger.get_batch(batch_id)
        reported = {seq for seq, _ in gateway.ledger.unreported_batches()}
        if batch is not None and batch.state == "complete" and batch.seq not in reported:
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} not reported complete: {gateway.ledger.get_batch(batch_id)}")


def report_files(gateway: Gateway, batch) -> tuple[Path, Path]:
    summary, csv = report_names(batch)
    folder = gateway.storage.reports("bulk")
    return folder / summary, folder / csv


def test_a_big_batch_is_reported_by_the_process_byte_for_byte_as_in_process(gateway: Gateway, tmp_path: Path):
    rows = OFFLOAD_ROWS + 500
    gateway.start()
    batch = wait_complete(gateway, send(gateway, tmp_path, rows))
    assert gateway.reporter.process._child is not None  # the helper wrote it
    summary_path, csv_path = report_files(gateway, batch)
    from_process = (summary_path.read_bytes(), csv_path.read_bytes())
    report = parse_report(csv_path.read_text())
    assert len(report) == rows and {r["status"] for r in report} == {"004"}

    counts = Counts.tally(gateway.ledger.status_counts(batch.seq))
    gateway.reporter.writer.write(batch, counts)  # the same batch, rendered in this process
    assert (summary_path.read_bytes(), csv_path.read_bytes()) == from_process


def test_a_dead_report_process_costs_no_report(gateway: Gateway, tmp_path: Path):
    gateway.reporter.offload_rows = 1  # every batch goes to the helper
    gateway.start()
    first = wait_complete(gateway, send(gateway, tmp_path, 20))
    child = gateway.reporter.process._child
    assert child is not None
    child.kill()
    child.wait()
    second = wait_complete(gateway, send(gateway, tmp_path, 30))  # written here, then by a new helper
    for batch, rows in ((first, 20), (second, 30)):
        _, csv_path = report_files(gateway, batch)
        assert len(parse_report(csv_path.read_text())) == rows
    assert gateway.reporter.process._child is not child


def test_a_report_process_that_cannot_start_leaves_the_report_to_the_reporter(gateway: Gateway, tmp_path: Path, caplog):
    from ftpbatch.report.render_process import ReportProcess

    gateway.start()
    batch = wait_complete(gateway, send(gateway, tmp_path, 10))
    summary_path, csv_path = report_files(gateway, batch)
    summary_path.unlink()
    csv_path.unlink()
    not_a_ledger = tmp_path / "a-folder.db"
    not_a_ledger.mkdir()  # SQLite cannot open it: the helper exits at start-up
    broken = ReportProcess(not_a_ledger, gateway.storage.root, gateway.reporter.writer)
    try:
        assert broken.write_csv(batch)
    finally:
        broken.close()
    assert len(parse_report(csv_path.read_text())) == 10
    assert not summary_path.exists()  # summary.json is the reporter's, helper or not
    assert "writing it here" in caplog.text


def test_a_completed_big_batch_s_usage_is_counted_while_the_helper_renders_its_last_report(gateway: Gateway, tmp_path: Path):
    """The month's usage file of a batch just complete is written while the helper writes the last report,
    not after it (a million rows: ~1 s each)."""
    import datetime as dt
    import json

    assert gateway.reporter.usage is not None
    gateway.reporter.usage.min_interval = 0.0  # due at once (a million-row batch is, minutes after the last)
    rows = OFFLOAD_ROWS + 500
    month = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m")
    usage_file = gateway.storage.reports("bulk") / f"usage-{month}.csv"
    seen: list[tuple[str | None, bool]] = []
    refresh = gateway.reporter._refresh_usage

    def watched() -> None:
        # the helper writes summary.json after report.csv: while it renders, it does not say complete yet
        summaries = list(gateway.storage.reports("bulk").glob("*summary*.json"))
        state = json.loads(summaries[0].read_text()).get("state") if summaries else None
        refresh()
        seen.append((state, f",{rows},{rows}," in usage_file.read_text()))

    gateway.reporter._refresh_usage = watched  # type: ignore[method-assign]
    gateway.start()
    batch = wait_complete(gateway, send(gateway, tmp_path, rows))
    # once, while the helper wrote the last report; the usage file counted the batch by then
    assert seen == [("dispatching", True)] and batch.state == "complete"


def _queued_batch(ledger, rows: int):
    """A batch of ``rows`` messages read whole and not sent: all still in their blocks."""
    from .ledger_contract import claim, rows as frame

    seq = claim(ledger, f"q{rows}.csv", "bulk")
    ledger.start_processing(seq)
    ledger.insert_messages(seq, "bulk", frame(rows))
    ledger.finish_intake(seq, rows, None)
    return ledger.get_batch_by_seq(seq)


def test_a_rewrite_given_up_half_way_replaces_nothing_and_keeps_what_it_rendered(gateway: Gateway):
    """The helper's loop (render_process.serve) in this process: the parent's signal sets ``given_up``."""
    import io
    import pickle

    from ftpbatch.report.files import ReportWriter
    from ftpbatch.report.render_process import _LENGTH, serve

    batch = _queued_batch(gateway.ledger, 12_000)
    writer = ReportWriter(gateway.ledger, gateway.storage, chunk_rows=5_000)
    given_up = [False]
    chunks = gateway.ledger.report_chunks
    rewrites = []

    def signalled_after_the_first_chunk(*args, **kwargs):
        rewrites.append(1)
        for chunk in chunks(*args, **kwargs):
            yield chunk
            given_up[0] = given_up[0] or len(rewrites) == 1  # the parent's signal, during the first rewrite

    gateway.ledger.report_chunks = signalled_after_the_first_chunk  # type: ignore[method-assign]
    request = pickle.dumps(batch)
    answers = io.BytesIO()
    serve(io.BytesIO((_LENGTH.pack(len(request)) + request) * 2), answers, writer, given_up)
    # the first request stops after one chunk; the second (the flag cleared as it starts) runs to the end
    assert answers.getvalue() == b"given up\nok\n"
    _, csv_path = report_files(gateway, batch)
    assert len(parse_report(csv_path.read_text())) == 12_000
    assert sorted(p.name for p in gateway.storage.report_cache(batch.id).glob("*.csv")) == ["0.csv", "10000.csv", "5000.csv"]


def test_the_report_process_gives_a_rewrite_up_when_asked(gateway: Gateway, monkeypatch):
    from ftpbatch.report import render_process

    monkeypatch.setattr(render_process, "_GIVE_UP_LOOK", 0.02)
    process = gateway.reporter.process
    small = _queued_batch(gateway.ledger, 10)
    big = _queued_batch(gateway.ledger, 150_000)  # rendered from its blocks: well over 0.02 s
    try:
        assert process.write_csv(small)  # started, answered once
        assert not process.write_csv(big, while_waiting=lambda: True)
        summary_path, csv_path = report_files(gateway, big)
        assert not csv_path.exists()  # given up: nothing replaced
        child = process._child
        assert process.write_csv(big, while_waiting=lambda: False) and process._child is child
        assert len(parse_report(csv_path.read_text())) == 150_000
        assert not summary_path.exists()  # the helper writes report.csv only
    finally:
        process.close()


def test_summary_json_stays_fresh_while_the_helper_rewrites(gateway: Gateway):
    """A helper's rewrite may take seconds (the first, with its start-up, the longest): the reporter keeps
    the batch's summary.json fresh meanwhile, and has the last word with a fresh count."""
    from ftpbatch.models import DISPATCHING

    batch = _queued_batch(gateway.ledger, 150_000)
    assert batch.state == DISPATCHING
    reporter = gateway.reporter
    _, csv_path = report_files(gateway, batch)
    written = reporter.writer.write_summary
    seen: list[bool] = []

    def recorded(*args):
        seen.append(csv_path.exists())
        return written(*args)

    reporter.writer.write_summary = recorded  # type: ignore[method-assign]
    try:
        ((seq, version),) = gateway.ledger.unreported_batches()
        reporter.report(batch, version)
    finally:
        reporter.process.close()
    assert seq == batch.seq
    # written while the helper rendered (its report.csv not there yet), and once more after it
    assert seen[0] is False and seen[-1] is True, seen


def test_after_a_long_rewrite_in_the_helper_the_next_is_due_within_the_cap(gateway: Gateway, monkeypatch):
    """A helper's rewrite is followed by a wait as long as itself, but at most _OFFLOADED_WAIT_MAX: a rewrite
    of most of a big batch (seconds) is followed by short ones, and waiting as long as it took left the last
    rewrite, after the last receipt, to format half the batch."""
    from ftpbatch.report import reporter as reporter_module

    monkeypatch.setattr(reporter_module, "_OFFLOADED_WAIT_MAX", 0.2)
    batch = _queued_batch(gateway.ledger, 150_000)
    reporter = gateway.reporter
    ((seq, version),) = gateway.ledger.unreported_batches()
    started = time.monotonic()
    try:
        reporter.report(batch, version)
    finally:
        reporter.process.close()
    took = time.monotonic() - started
    # (the helper's start-up alone is most of a second of CPU)
    assert took > 0.3, f"the rewrite took only {took:.2f} s: too short to tell a capped wait from an uncapped one"
    done = reporter._last_written[seq][0]
    assert not reporter._due(reporter._last_written, seq, done + 0.15)
    assert reporter._due(reporter._last_written, seq, done + 0.21)
