"""Live progress for senders: summary.json moves while a big batch is sent, usage follows completion.

Through a real server and FTP reads, on a batch of 100,000 rows whose
product tps makes dispatch last about 20 seconds.
"""

from __future__ import annotations

import datetime as dt
import ftplib
import json
import time
from pathlib import Path

from ftpbatch import codes
from ftpbatch.intake.ingest import Ingest
from ftpbatch.ledger import Ledger
from ftpbatch.models import DISPATCHING, PROCESSING, Product
from ftpbatch.report.reporter import Reporter
from ftpbatch.storage import LocalStorage

from .helpers import ServerProcess, add_product, download, parse_report, upload

ROWS = 100_000
TPS = 5_000  # ~20 s of dispatch


def _summary(client: ftplib.FTP, name: str) -> dict | None:
    try:
        names = client.nlst("/reports")
    except ftplib.error_perm:
        return None
    found = sorted(b for b in (n.rsplit("/", 1)[-1] for n in names) if b.startswith(f"{name}.") and b.endswith(".summary.json"))
    if not found:
        return None
    try:
        return json.loads(download(client, f"/reports/{found[-1]}"))
    except (ftplib.error_perm, ValueError):
        return None  # replaced between the listing and the download


def test_summary_shows_progress_every_few_seconds_and_usage_follows_completion(tmp_path: Path):
    root = tmp_path / "root"
    account = add_product(root, "bulk", "bulk-password", dial_prefix="44", tps=float(TPS))
    body = "to,text\n" + "".join(f"4477009{n:05d},progress {n}\n" for n in range(ROWS))
    # the server's own intervals (report, usage) are the defaults under test
    with ServerProcess(root, env={"FTPBATCH_REPORT_INTERVAL": "0.25"}) as server, server.ftp(account) as client:
        upload(client, "big.csv", body.encode())
        seen: list[tuple[float, dict]] = []
        complete_at = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            summary = _summary(client, "big.csv")
            if summary is not None:
                seen.append((time.monotonic(), summary))
                if summary["state"] == "complete":
                    complete_at = time.monotonic()
                    break
            time.sleep(0.25)
        assert complete_at is not None, seen[-1:] or "no summary"

        # dispatching as soon as messages are queued: never "processing" with messages in it
        assert all(s["counts"]["rows"] == 0 for _, s in seen if s["state"] == PROCESSING)
        moving = [(at, s) for at, s in seen if s["state"] == DISPATCHING]
        sent = [s["counts"]["submitted"] + s["counts"]["delivered"] for _, s in moving]
        assert len(set(sent)) >= 5, sent  # the counts move while it is sent, not only at the end
        # ... and never back (the report helper once wrote the counts its request was made with
        # over the fresher ones the gateway had shown meanwhile)
        delivered = [s["counts"]["delivered"] for _, s in seen]
        assert delivered == sorted(delivered), delivered
        # rewritten at least every 2 s while it moves (read every 0.25 s; slack for a loaded machine)
        changes = [at for (at, s), (_, before) in zip(moving[1:], moving) if s["counts"] != before["counts"]]
        gaps = [b - a for a, b in zip(changes, changes[1:])]
        assert gaps and max(gaps) < 4.0, gaps

        # usage-YYYY-MM.csv counts the batch within seconds of its completion
        month = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m")
        today = dt.datetime.now(dt.timezone.utc).date().isoformat()
        counted = None
        while time.monotonic() < complete_at + 10:
            try:
                rows = parse_report(download(client, f"/reports/usage-{month}.csv").decode())
            except ftplib.error_perm:
                rows = []
            day = next((r for r in rows if r["day"] == today), None)
            if day is not None and int(day["messages"]) == ROWS:
                counted = time.monotonic() - complete_at
                break
            time.sleep(0.25)
        assert counted is not None, "usage file did not count the batch within 10 s of its completion"


def test_a_batch_is_dispatching_from_its_first_queued_message_and_completes_only_when_read_whole(tmp_path: Path):
    ledger, storage = _ledger_with_acme(tmp_path, dial_prefix="44")
    reporter = Reporter(ledger, storage, offload_rows=None)
    states: list[tuple[str, int]] = []

    def queued() -> None:  # called after each chunk is stored; nothing has been sent
        batch = ledger.get_batch(claimed.id)
        states.append((batch.state, batch.rows))
        # no outcome is open for what is stored so far, but the file is not read whole: no completion
        if batch.state == DISPATCHING:
            ledger.cancel_pending(batch.seq)
            reporter.catch_up(throttle=False)
            assert ledger.get_batch(claimed.id).state == DISPATCHING

    ingest = Ingest(ledger, storage, chunk_rows=100, on_messages=queued)
    source = tmp_path / "f.csv"
    source.write_text("to,text\n" + "".join(f"4477009{n:05d},hi {n}\n" for n in range(350)))
    batch_id, spooled = storage.spool_copy(source, "acme")
    claimed = ledger.record_claim(batch_id, "acme", "f.csv", str(spooled), "cli", time.time())
    ingest.process(claimed)
    assert [s for s, _ in states] == [DISPATCHING] * 4 and all(rows == 0 for _, rows in states)
    reporter.catch_up(throttle=False)
    done = ledger.get_batch(claimed.id)
    assert done.rows == 350 and done.state == "complete"
    ledger.close()


def test_progress_counts_only_on_a_terminal_and_spaced_by_their_cost() -> None:
    """Counting a big batch is a scan: `process` must not count off a terminal, nor back to back on one."""
    import io
    import time as clock

    from ftpbatch.report.progress import Progress

    assert not Progress(io.StringIO()).wants_counts()  # a pipe or a file: no counts at all

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown = Progress(Terminal(), min_interval=0.01)
    assert shown.wants_counts()
    shown.counted(0.05)  # a count that cost 50 ms ...
    assert not shown.wants_counts()  # ... is not followed by another at once
    clock.sleep(0.2)
    assert not shown.wants_counts()  # nor within ten times its cost
    clock.sleep(0.35)
    assert shown.wants_counts()


def _usage_today(client: ftplib.FTP) -> int | None:
    """Today's messages in /reports/usage-YYYY-MM.csv read over FTP (None: no file or no row yet)."""
    now = dt.datetime.now(dt.timezone.utc)
    try:
        rows = parse_report(download(client, f"/reports/usage-{now:%Y-%m}.csv").decode())
    except ftplib.error_perm:
        return None
    day = next((r for r in rows if r["day"] == now.date().isoformat()), None)
    return None if day is None else int(day["messages"])


def test_the_usage_file_counts_a_batch_within_seconds_of_its_completion(tmp_path: Path):
    """Point 3 of issue 15 alone: the monthly usage file was refreshed only a minute after a batch completed."""
    root = tmp_path / "root"
    account = add_product(root, "shop", "shop-password", dial_prefix="44")
    # the usage intervals are the server's defaults: that is what is under test
    with ServerProcess(root) as server:
        client = server.ftp(account)
        deadline = time.monotonic() + 30
        while _usage_today(client) != 0 and time.monotonic() < deadline:  # the file written at start
            time.sleep(0.1)
        assert _usage_today(client) == 0
        upload(client, "small.csv", ("to,text\n" + "".join(f"077009001{n:02d},usage {n}\n" for n in range(25))).encode())
        complete_at = None
        while complete_at is None and time.monotonic() < deadline:
            summary = _summary(client, "small.csv")
            if summary is not None and summary["state"] == "complete":
                complete_at = time.monotonic()
            time.sleep(0.1)
        assert complete_at is not None, "the batch did not complete"
        counted = _usage_today(client)
        while counted != 25 and time.monotonic() < complete_at + 5:
            time.sleep(0.1)
            counted = _usage_today(client)
        waited = time.monotonic() - complete_at
        client.quit()
    assert counted == 25, f"usage-YYYY-MM.csv still says {counted} for today 5 s after the batch completed"
    assert waited < 5


def test_a_batch_whose_messages_are_still_open_is_not_counted_and_its_completion_is_seen_at_once(tmp_path: Path):
    """While a batch moves, the reporter asks the ledger whether anything is still open (a look at small
    indexes) instead of counting every row of the batch each `interval`; the last receipt completes it
    within a round, however long its report.csv waits for its next rewrite."""
    from ftpbatch.models import Receipt

    ledger, storage, seq, leased = _answered_batch(tmp_path, 40)
    reporter = Reporter(ledger, storage, interval=0.05, offload_rows=None)
    reporter.catch_up()  # the first rewrite
    # As if that rewrite had cost 100 s: the next is 1,000 s away, and only the looks and the
    # summary.json (every SUMMARY_EVERY) happen meanwhile.
    reporter._last_written[seq] = (time.monotonic(), 100.0)
    counted = []
    status_counts = ledger.status_counts
    ledger.status_counts = lambda s: counted.append(s) or status_counts(s)  # type: ignore[method-assign]
    started = time.monotonic()
    for message in leased[:-1]:  # a receipt each round: the batch changes all the time, never finishes
        ledger.record_receipts([Receipt("sim", f"u{message.reference}", codes.DELIVERED, dt.datetime.now(dt.timezone.utc))])
        reporter.catch_up()
        time.sleep(0.04)
    spent = time.monotonic() - started
    # counted for summary.json only: once at first, then once a second (not every 0.05 s round)
    assert len(counted) <= 2 + spent, (len(counted), spent)
    ledger.record_receipts([Receipt("sim", f"u{leased[-1].reference}", codes.DELIVERED, dt.datetime.now(dt.timezone.utc))])
    time.sleep(0.06)
    reporter.catch_up()
    assert ledger.get_batch_by_seq(seq).state == "complete"
    ledger.close()


def _ledger_with_acme(tmp_path: Path, dial_prefix: str | None = None) -> tuple[Ledger, LocalStorage]:
    """A ledger and data root under ``tmp_path`` with one product, ``acme``, and its home."""
    root = tmp_path / "root"
    ledger = Ledger(root / "ftpbatch.db")
    storage = LocalStorage(root)
    storage.prepare()
    ledger.add_product(Product("acme", "x", dial_prefix=dial_prefix))
    storage.ensure_home("acme")
    return ledger, storage


def _answered_batch(tmp_path: Path, rows: int):
    """A ledger with one dispatching batch of ``rows`` messages, all submitted and awaiting receipts."""
    from ftpbatch.models import SubmitResult
    from tests.ledger_contract import new_batch

    ledger, storage = _ledger_with_acme(tmp_path)
    seq = new_batch(ledger, rows)
    leased = ledger.lease("node", "acme", rows, time.time(), 60)
    ledger.record_results("sim", [SubmitResult(m.message_id, m.attempt, upstream_id=f"u{m.reference}") for m in leased])
    return ledger, storage, seq, leased


def test_a_slow_summary_count_does_not_hold_back_the_look_for_completion(tmp_path: Path):
    from ftpbatch.models import Receipt

    ledger, storage, seq, leased = _answered_batch(tmp_path, 20)
    reporter = Reporter(ledger, storage, interval=0.05, offload_rows=None)
    reporter.catch_up()  # the first rewrite
    reporter._last_written[seq] = (time.monotonic(), 100.0)  # the next rewrite is far away
    # Counting takes 0.5 s, as for a million rows on a busy machine: the summary's count
    # used to set the pace of the completion look too (0.5 s / share: 10 s of silence).
    status_counts = ledger.status_counts
    counted: list[int] = []
    ledger.status_counts = lambda s: counted.append(s) or time.sleep(0.5) or status_counts(s)  # type: ignore[method-assign]
    now = dt.datetime.now(dt.timezone.utc)
    ledger.record_receipts([Receipt("sim", f"u{leased[0].reference}", codes.DELIVERED, now)])  # a change
    reporter._last_summary[seq] = -1e9  # summary.json is due
    reporter.catch_up()  # ... so the batch is counted (slowly), and it is still open
    assert counted == [seq] and ledger.get_batch_by_seq(seq).state == DISPATCHING
    ledger.record_receipts([Receipt("sim", f"u{m.reference}", codes.DELIVERED, now) for m in leased[1:]])
    settled = time.monotonic()
    while ledger.get_batch_by_seq(seq).state != "complete" and time.monotonic() - settled < 8:
        reporter.catch_up()
        time.sleep(0.05)
    seen_after = time.monotonic() - settled
    assert ledger.get_batch_by_seq(seq).state == "complete"
    assert seen_after < 1.6, seen_after  # a look (0.05 s rounds) and one count (0.5 s); the summary (2 s) is later
    ledger.close()


def test_a_big_file_still_being_read_is_rendered_by_the_helper_whatever_its_rows_so_far(tmp_path: Path):
    from ftpbatch.report.reporter import OFFLOAD_BYTES
    from tests.ledger_contract import claim, rows

    ledger, storage = _ledger_with_acme(tmp_path)
    big, small = claim(ledger, "big.csv"), claim(ledger, "small.csv")
    ledger.set_file_facts(big, "0" * 64, OFFLOAD_BYTES)
    ledger.set_file_facts(small, "1" * 64, OFFLOAD_BYTES - 1)
    for seq in (big, small):
        ledger.start_processing(seq)
        ledger.insert_messages(seq, "acme", rows(10))
    reporter = Reporter(ledger, storage)
    by_helper: list[int] = []
    reporter.process.write_csv = lambda batch, *_: by_helper.append(batch.seq) or True  # type: ignore[method-assign]
    reporter.catch_up()
    assert by_helper == [big]  # 10 rows so far, but the file is big and not read whole
    assert len(list(storage.reports("acme").glob("small.csv.*.report.csv"))) == 1  # the small one: written here
    reporter.stop()
    ledger.close()
