"""Turn a claimed file into messages in the ledger: check, parse, apply rules, store.

Runs on worker threads, never on the FTP loop. Resumable: chunks are stored
in row order, one transaction each, so a batch interrupted half-way resumes
after its last stored row (the rules still see every row, so duplicate
detection spans the whole file).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable

from .. import codes
from ..errors import BatchRejected
from ..ledger.jobs import JobLease, this_process
from ..ledger.protocol import IntakeLedger
from ..lifecycle import all_alive
from ..models import Batch, Product
from ..parse import FileCredentials, open_batch
from ..passwords import verify_password
from ..rules import BatchRules, ProductRules
from ..storage import LocalStorage
from .checks import write_check_report, write_check_summary
from .readahead import read_ahead

log = logging.getLogger(__name__)

_HASH_BLOCK = 1 << 20


def file_facts(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, read in blocks (hashlib releases the GIL on large blocks)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def product_rules(product: Product) -> ProductRules:
    return ProductRules(
        dial_prefix=product.dial_prefix,
        sender=product.sender,
        max_parts=product.max_parts,
        allow_duplicates=product.allow_duplicates,
    )


class _LeaseLost(Exception):
    """Another node took over this batch's ingest (this one was cut off from the ledger too long)."""


def ingest_job(seq: int) -> str:
    """The job lease a node holds while it takes in batch ``seq`` (several nodes: one at a time)."""
    return f"ingest:{seq}"


class Ingest:
    """Processes claimed batches on ``workers`` threads.

    Each batch is taken in under its job lease (``ingest:<seq>``, renewed
    per chunk): with several nodes on one ledger only one takes a batch in,
    and a batch whose node died is resumed by another once the lease expired
    (the intake rescan looks for them, watcher.py).
    """

    def __init__(
        self,
        ledger: IntakeLedger,
        storage: LocalStorage,
        *,
        chunk_rows: int = 250_000,
        workers: int = 1,
        on_messages: Callable[[], None] = lambda: None,
        on_change: Callable[[], None] = lambda: None,
        holder: str | None = None,
    ) -> None:
        self.ledger = ledger
        self.holder = holder or this_process()
        self.storage = storage
        self.chunk_rows = chunk_rows
        self.workers = workers
        self.on_messages = on_messages
        self.on_change = on_change
        self._queue: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._lock = threading.Lock()

    name = "ingest"

    @property
    def healthy(self) -> bool:
        return all_alive(self._threads)

    def start(self) -> None:
        for n in range(self.workers):
            thread = threading.Thread(target=self._run, name=f"ingest-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, batch: Batch) -> None:
        self._queue.put(batch)

    def stop(self, timeout: float = 10.0) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)

    @property
    def in_flight(self) -> int:
        return self._busy + self._queue.qsize()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            with self._lock:
                self._busy += 1
            try:
                self.process(batch)
            except Exception:
                log.exception("batch %s: processing failed", batch.id)
            finally:
                with self._lock:
                    self._busy -= 1

    # --- one batch -----------------------------------------------------
    def process(self, batch: Batch) -> None:
        """Process one claimed batch to the point where all its messages are queued."""
        lease = JobLease(self.ledger, ingest_job(batch.seq), self.holder)
        if not lease.held():
            log.info("batch %s: being taken in by another node", batch.id)
            return
        try:
            self._process(batch, lease)
        finally:
            lease.release()

    def _process(self, batch: Batch, lease: JobLease) -> None:
        if not self.ledger.start_processing(batch.seq):
            return  # already processed (e.g. submitted twice by a rescan)
        self.on_change()
        path = Path(batch.spool_path)
        try:
            self._ingest(batch, path, lease)
        except _LeaseLost:
            log.warning("batch %s: another node took over its intake (this node lost its lease); stopped here",
                        batch.id)
            return
        except BatchRejected as exc:
            self.ledger.reject_batch(batch.seq, exc.code, exc.message, exc.duplicate_of)
            log.debug("batch %s rejected: %s", batch.id, exc)
        except Exception as exc:
            log.exception("batch %s: internal error", batch.id)
            self.ledger.reject_batch(batch.seq, codes.E_INTERNAL, f"internal error while processing the file ({type(exc).__name__}); the operator has the details")
        self._archive(batch, path)
        self.on_change()

    def _ingest(self, batch: Batch, path: Path, lease: JobLease) -> None:
        product = self.ledger.get_product(batch.product)
        if product is None:
            raise BatchRejected(f"product {batch.product!r} no longer exists", code=codes.E_AUTH)
        if not path.exists():
            raise BatchRejected("the claimed file disappeared from the spool before it was processed", code=codes.E_INTERNAL)

        sha256, size = file_facts(path)
        self.ledger.set_file_facts(batch.seq, sha256, size)
        if product.max_file_bytes and size > product.max_file_bytes:
            raise BatchRejected(
                f"the file has {size} bytes, more than the {product.max_file_bytes} bytes allowed for this product; "
                "split it into smaller files",
                code=codes.E_FILE_TOO_LARGE,
            )
        if product.duplicate_window_hours > 0:
            since = batch.received_at - product.duplicate_window_hours * 3600
            earlier = self.ledger.find_duplicate(product.name, sha256, since, batch.seq)
            if earlier:
                raise BatchRejected(
                    f"the same file was already received as batch {earlier} within the last "
                    f"{product.duplicate_window_hours:g} hours; change the file or wait to send it again",
                    code=codes.E_DUPLICATE_FILE,
                    duplicate_of=earlier,
                )

        credentials = FileCredentials(product.name, lambda password: verify_password(product.password_hash, password))
        parsed = open_batch(
            path, batch.file_name, credentials, chunk_rows=self.chunk_rows, max_bytes=product.max_file_bytes
        )
        # a key:value file's callback: line applies from the first message on
        self.ledger.set_callback_level(batch.seq, parsed.callback_level)
        if parsed.notes:  # e.g. only the first sheet of a workbook read: summary.json says so
            self.ledger.set_notes(batch.seq, parsed.notes)
        # the opt-out list as of the moment the batch is taken in (122): one read, then vectorised per chunk
        rules = BatchRules(product_rules(product), dt.datetime.now(dt.timezone.utc), self.ledger.optout_numbers(product.name))
        checked_chunks = (rules.apply(chunk) for chunk in parsed.chunks)
        if batch.dry_run:
            counts = write_check_report(self.storage, batch, checked_chunks, name=f"check-{batch.id}")
            if counts.rows == 0:
                raise BatchRejected("the file holds no recipients: add at least one row with a number and a text")
            self.ledger.finish_check(batch.seq, counts.rows)
            write_check_summary(self.storage, self.ledger.get_batch(batch.id) or batch, counts)
            log.debug("batch %s: dry run of %d row(s) checked", batch.id, counts.rows)
            return
        already = self.ledger.max_row(batch.seq)  # > 0 when resuming after a crash
        rows = 0
        dispatching = False
        started = time.perf_counter()
        for checked in read_ahead(checked_chunks, name=f"ingest-{batch.id}"):
            rows = int(checked["row"].iloc[-1]) if len(checked) else rows
            if already:
                checked = checked[checked["row"] > already]
            if not lease.held():
                raise _LeaseLost(batch.id)
            if len(checked):
                self.ledger.insert_messages(batch.seq, product.name, checked)
                if not dispatching:  # senders see `dispatching` from the first queued message on
                    self.ledger.start_dispatching(batch.seq)
                    self.on_change()
                    dispatching = True
                self.on_messages()
        if not lease.held():
            raise _LeaseLost(batch.id)
        if rows == 0 and already == 0:
            raise BatchRejected("the file holds no recipients: add at least one row with a number and a text")
        self.ledger.finish_intake(batch.seq, max(rows, already), parsed.callback_level)
        log.debug(
            "batch %s: %d row(s) queued in %.3f s (format %s, encoding %s)",
            batch.id, max(rows, already), time.perf_counter() - started, parsed.format, parsed.encoding,
        )

    def _archive(self, batch: Batch, path: Path) -> None:
        try:
            if path.exists():
                self.storage.archive(path, batch.product, batch.file_name, batch.id)
        except OSError:
            log.exception("batch %s: could not archive %s", batch.id, path)

