"""Wires the stages together: FTP (and SFTP) -> intake -> ingest (parse, rules) -> ledger -> dispatch -> reports.

``serve`` runs everything; ``process`` runs the same pipeline without the FTP
server and the inbox watcher. Every background part is a
:class:`~ftpbatch.lifecycle.Service` in one ordered list: started in that
order, stopped in reverse, so the observers (ops HTTP, status board) come up
first and go last, and shutdown goes front to back (FTP first): each stage
drains into one that is still running, and whatever is cut short is resumed
from the ledger and the spool at the next start.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Settings
from .dispatch.connectors import make_connector
from .dispatch.dispatcher import Dispatcher
from .dispatch.stop_replies import StopReplies
from .intake.ingest import Ingest
from .ledger import Ledger
from .lifecycle import Describes, Service
from .logs import redact_url
from .models import Batch
from .ops.health import component_states
from .ops.metrics import MeteredConnector, Metrics
from .report.callbacks import CallbackSender
from .report.reporter import Reporter
from .report.usage import MonthlyUsageFiles
from .storage import LocalStorage

# What only a serving gateway runs (FTP and SFTP servers, inbox watcher, guard,
# the ops endpoint, heartbeat) is imported where it is built: ``ftpbatch process``
# needs none of it, and its imports (pyftpdlib, pyOpenSSL, watchdog, argon2, the
# HTTP server) were a fifth of a one-shot run's start-up.
if TYPE_CHECKING:
    from .ftp.server import GatewayFTPServer
    from .intake.watcher import Intake
    from .ops.http import OpsServer
    from .ops.nodes import NodeHeartbeat
    from .ops.status import StatusBoard
    from .security.guard import Guard
    from .sftp.server import GatewaySFTPServer

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, settings: Settings, *, ftp: bool = True, watch_inboxes: bool = True, node_id: str | None = None) -> None:
        self.settings = settings
        self.node_id = node_id or settings.node_id
        self.storage = LocalStorage(settings.root)
        self.storage.prepare()
        # the operator's view (/metrics, /healthz, /status): bound first, so a port
        # in use fails here, before anything else is opened
        self.ops: OpsServer | None = None
        if ftp and settings.metrics.port is not None:
            from .ops.http import OpsServer

            self.ops = OpsServer(
                settings.metrics.host, settings.metrics.port, lambda: self.metrics.render(), lambda: self.ready,
                lambda: self.status_board.snapshot() if self.status_board else {}, self.health,
            )
        self.connector = make_connector(settings.dispatch.connector)
        # a connector URL may carry its own receipt_timeout; it wins over the setting
        receipt_timeout = self.connector.receipt_timeout
        if receipt_timeout is None:
            receipt_timeout = settings.dispatch.receipt_timeout
        self.ledger = Ledger(settings.ledger_location, receipt_timeout=receipt_timeout)
        if self.connector.max_binds is not None:
            # the account's binds across every node are capped: each bind holds a slot leased in the ledger
            from .dispatch.bind_slots import LedgerBindSlots

            self.connector.bind_slots = LedgerBindSlots(self.ledger, self.connector.account,
                                                        self.connector.max_binds, self.node_id)
        self.metrics = Metrics(self.ledger)
        usage = MonthlyUsageFiles(self.ledger, self.storage, settings.report.usage_refresh, settings.report.usage_min_interval)
        self.reporter = Reporter(self.ledger, self.storage, settings.report.interval, usage=usage, holder=self.node_id)
        # the dispatcher only inserts outbox rows; this pool posts them, off the dispatch path
        self.callbacks = CallbackSender(
            self.ledger, settings.callbacks, self.node_id, observe=self.metrics.callback_outcome
        )
        self.dispatcher = Dispatcher(
            self.ledger,
            MeteredConnector(self.connector, self.metrics),
            self.node_id,
            lease_seconds=settings.dispatch.lease_seconds,
            connector_tps=settings.dispatch.tps,
            on_change=self._dispatch_changed,
            receipt_query_after=settings.dispatch.receipt_query_after,
            parked_receipt_expiry=settings.dispatch.parked_receipt_expiry,
        )
        # STOP replies: an MO with an opt-out keyword to a product's sender opts its source out
        self.dispatcher.add_mo_listener(StopReplies(self.ledger, settings.dispatch.keywords(), self.metrics.mo_optout))
        self.ingest = Ingest(
            self.ledger,
            self.storage,
            chunk_rows=settings.intake.chunk_rows,
            on_messages=self.dispatcher.wake,
            on_change=self.reporter.wake,
            holder=self.node_id,
        )
        self.intake: Intake | None = None
        if watch_inboxes:
            from .intake.watcher import Intake

            self.intake = Intake(self.storage, self.ledger, settings.intake, submit=self.ingest.submit,
                                 holder=self.node_id)
        # bans, disk floor, quotas and retention: only a serving gateway needs them
        self.guard: Guard | None = None
        self.ftp: GatewayFTPServer | None = None
        if ftp and self.intake is not None:
            from .ftp.server import GatewayFTPServer
            from .security.guard import Guard

            self.guard = Guard(self.ledger, self.storage, settings.ftp, settings.report.archive_days,
                               holder=self.node_id)
            self.ftp = GatewayFTPServer(
                settings.ftp, self.ledger, self.storage, on_upload=self.intake.uploaded, guard=self.guard,
                on_login=self.metrics.ftp_login,
            )
        # SFTP beside FTP when a port is set: its own thread and loop (sftp/server.py)
        self.sftp: GatewaySFTPServer | None = None
        if self.ftp is not None and self.guard is not None and self.intake is not None and settings.sftp.port is not None:
            from .sftp.server import GatewaySFTPServer  # asyncssh is imported only where SFTP is served

            self.sftp = GatewaySFTPServer(
                settings.sftp, settings.ftp, self.ledger, self.storage, self.intake.uploaded, self.guard,
                on_login=self.metrics.sftp_login,
            )
        # this node's row in the ledger (nodes table) and its heartbeat: only a serving gateway
        self.heartbeat: NodeHeartbeat | None = None
        if self.ftp is not None:
            from .ops.nodes import NodeHeartbeat

            self.heartbeat = NodeHeartbeat(
                self.ledger, self.node_id, settings.dispatch.lease_seconds, ftp_address=self._ftp_address,
                binds=lambda: self.connector.binds, leases=lambda: self.dispatcher.in_flight,
                detail=self._jobs_held,
            )
        self._started = False
        # status.json and the component gauges: only a serving gateway has them
        self.status_board: StatusBoard | None = None
        if ftp:
            from .ops.metrics import GatewayCollector
            from .ops.status import StatusBoard

            self.metrics.registry.register(GatewayCollector(self))
            self.status_board = StatusBoard(self, settings.metrics.status_interval, lambda: self.ops.url if self.ops else None)
        # Start order; stop is the reverse. The observers first (they report the
        # start-up and the shutdown), then each stage before the one feeding it.
        candidates: list[Service | None] = [
            self.heartbeat, self.ops, self.status_board, self.reporter, self.callbacks, self.dispatcher, self.ingest,
            self.intake, self.guard, self.ftp, self.sftp,
        ]
        self.services: list[Service] = [s for s in candidates if s is not None]

    def _jobs_held(self) -> dict[str, Any]:
        """What the heartbeat shows of this node's job leases (ledger/jobs.py): reports, rescan, bind slots, ..."""
        now = time.time()
        mine = [j.name for j in self.ledger.job_holders() if j.holder.split("#")[0] == self.node_id and j.expires > now]
        return {"jobs": mine}

    def _ftp_address(self) -> str:
        """Where FTP clients reach this node: the masquerade address if set, else the listener's."""
        if self.ftp is None:
            return ""
        try:
            host, port = self.ftp.address
        except OSError:  # the listener is closed: stopping
            return ""
        return f"{self.settings.ftp.masquerade_address or host}:{port}"

    def _dispatch_changed(self) -> None:
        self.reporter.wake()
        self.callbacks.wake()

    def start(self) -> None:
        """Start every service in order (the FTP loop runs on a thread of its own)."""
        for product in self.ledger.list_products():
            self.storage.ensure_home(product.name)
        # job leases a previous process of this node held died with it (ledger/jobs.py)
        self.ledger.release_jobs_of(self.node_id)
        for service in self.services:
            service.start()
        self._started = True

    @property
    def ready(self) -> bool:
        """Started, every service healthy (a dead thread is not), and the connector up."""
        return self._started and all(s.healthy for s in self.services) and self.connector.is_up

    def components(self) -> dict[str, dict[str, Any]]:
        """What /healthz, /status and ``ftpbatch status`` say per service, in start order."""
        found: dict[str, dict[str, Any]] = {}
        for service in self.services:
            found[service.name] = {"up": service.healthy, **(service.details() if isinstance(service, Describes) else {})}
        found["connector"] = {
            "up": self.connector.is_up,
            "url": redact_url(self.settings.dispatch.connector),
            "detail": self.dispatcher.connector_detail,
        }
        return found

    def health(self) -> dict[str, bool]:
        return component_states(self)

    def stop(self) -> None:
        """Stop in reverse order: no new uploads, finish what is in hand, write reports."""
        for service in reversed(self.services):
            service.stop()
        self.ledger.close()
        self._started = False

    # --- one-shot processing (``ftpbatch process``) --------------------
    def submit_file(self, source: Path, product: str) -> Batch:
        """Copy an operator's file into the spool as a new batch (the original stays put)."""
        self.storage.ensure_home(product)
        batch_id, target = self.storage.spool_copy(source, product)
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
