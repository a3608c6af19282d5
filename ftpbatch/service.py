"""Wires the stages together: FTP -> intake -> ingest (parse, rules) -> ledger -> dispatch -> reports.

``serve`` runs everything; ``process`` runs the same pipeline without the FTP
server and the inbox watcher. Shutdown goes front to back, so each stage
drains into one that is still running, and whatever is cut short is resumed
from the ledger and the spool at the next start.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

from .config import Settings
from .dispatch.connectors import make_connector
from .dispatch.dispatcher import Dispatcher
from .ftp.server import GatewayFTPServer
from .ids import new_batch_id
from .intake.ingest import Ingest
from .intake.watcher import Intake
from .ledger import Ledger
from .models import Batch
from .report.reporter import Reporter
from .storage import LocalStorage

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, settings: Settings, *, ftp: bool = True, watch_inboxes: bool = True, node_id: str | None = None) -> None:
        self.settings = settings
        self.storage = LocalStorage(settings.root)
        self.storage.prepare()
        self.ledger = Ledger(settings.db_path, receipt_timeout=settings.dispatch.receipt_timeout)
        self.reporter = Reporter(self.ledger, self.storage, settings.report.interval)
        self.connector = make_connector(settings.dispatch.connector)
        self.dispatcher = Dispatcher(
            self.ledger,
            self.connector,
            node_id or settings.node_id,
            lease_seconds=settings.dispatch.lease_seconds,
            connector_tps=settings.dispatch.tps,
            on_change=self.reporter.wake,
        )
        self.ingest = Ingest(
            self.ledger,
            self.storage,
            chunk_rows=settings.intake.chunk_rows,
            on_messages=self.dispatcher.wake,
            on_change=self.reporter.wake,
        )
        self.intake = (
            Intake(self.storage, self.ledger, settings.intake, submit=self.ingest.submit) if watch_inboxes else None
        )
        self.ftp = (
            GatewayFTPServer(settings.ftp, self.ledger, self.storage, on_upload=self.intake.uploaded)
            if ftp and self.intake is not None
            else None
        )
        self._ftp_thread: threading.Thread | None = None
        self._started = False

    def start(self) -> None:
        """Start every stage; the FTP loop runs on a thread of its own."""
        for product in self.ledger.list_products():
            self.storage.ensure_home(product.name)
        self.reporter.start()
        self.dispatcher.start()
        self.ingest.start()
        if self.intake is not None:
            self.intake.start()
        if self.ftp is not None:
            self._ftp_thread = threading.Thread(target=self.ftp.serve, name="ftp-loop", daemon=True)
            self._ftp_thread.start()
        self._started = True

    @property
    def ready(self) -> bool:
        ftp_up = self._ftp_thread is None or self._ftp_thread.is_alive()
        intake_up = self.intake is None or self.intake.is_up
        return self._started and ftp_up and intake_up and self.connector.is_up

    def stop(self) -> None:
        """Stop front to back: no new uploads, finish what is in hand, write reports."""
        if self.ftp is not None:
            self.ftp.stop()
        if self.intake is not None:
            self.intake.stop()
        self.ingest.stop()
        self.dispatcher.stop()
        self.reporter.stop()
        self.ledger.close()
        self._started = False

    # --- one-shot processing (``ftpbatch process``) --------------------
    def submit_file(self, source: Path, product: str) -> Batch:
        """Copy an operator's file into the spool as a new batch (the original stays put)."""
        self.storage.ensure_home(product)
        batch_id = new_batch_id()
        folder = self.storage.spool / product
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{batch_id}--{source.name}"
        hidden = folder / f".{batch_id}.copying"
        shutil.copyfile(source, hidden)
        os.replace(hidden, target)  # only whole copies ever appear in the spool
        batch = self.ledger.record_claim(batch_id, product, source.name, str(target), "cli", time.time())
        self.ingest.submit(batch)
        return batch

    def wait_finished(self, batch_id: str, timeout: float | None = None, poll: float = 0.1) -> Batch:
        """Block until the batch is complete or rejected, with reports written."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = self.ledger.get_batch(batch_id)
            assert batch is not None
            if batch.state in ("complete", "rejected") and self.ledger.report_is_current(batch.seq):
                return batch
            if deadline is not None and time.monotonic() > deadline:
                return batch
            time.sleep(poll)
