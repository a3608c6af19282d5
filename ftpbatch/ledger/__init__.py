"""The ledger: the only code that speaks SQL, and the single source of truth.

``Ledger`` is small stores sharing one :class:`~ftpbatch.ledger.db.Database`,
each owning the statements of its tables (every state change one
transaction):

    products   products and their FTP users          (products.py)
    batches    one row per claimed file, its state    (batches.py)
    messages   rows stored at intake, cancels         (messages.py; blocks: blocks.py, blockqueue.py)
    leases     due messages handed to a sender        (leases.py)
    answers    submit answers and receipts applied    (answers.py)
    reports    what a batch's report files show       (reports.py)
    outbox     callbacks to product URLs              (outbox.py)
    stats      usage and operator totals              (usage.py)
    bans       FTP address bans                       (bans.py)
    inbound    MO messages, receipt queries, parked receipts (inbound.py)
    optouts    each product's opt-out list (122)      (optouts.py)
    controls   pause, resume, cancel of a batch       (controls.py)
    nodes      the nodes serving, their heartbeats    (nodes.py)
    jobs       job leases: work done by one node      (jobs.py)

The stores' public methods are also the ledger's own (the same bound
methods, no wrapper code): that flat surface is :class:`LedgerProtocol`
(protocol.py), which the stages above depend on, and which another
backend (PostgreSQL, DESIGN.md §12) implements as well. The ledger imports
nothing from the stages above it; what it hands out are plain records
(``ftpbatch.models``, ``ledger/records.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .answers import AnswerStore
from .bans import BanStore
from .batches import BatchStore
from .blockqueue import BlockQueue
from .controls import ControlStore
from .db import Database, open_database
from .inbound import InboundStore
from .jobs import JobStore
from .leases import LeaseStore
from .messages import MessageStore
from .migrations import migrate
from .nodes import NodeStore
from .optouts import OptOutStore
from .outbox import OutboxStore
from .products import ProductStore
from .protocol import LedgerProtocol
from .records import AddressBan, NodeState, OptOut
from .reports import ReportStore
from .ssh_keys import SshAccess, SshKeyStore
from .sql import bump_counter, read_counter
from .usage import UsageStore

__all__ = ["AddressBan", "Ledger", "LedgerProtocol", "NodeState", "OptOut", "SshAccess"]


class Ledger:
    """The ledger at ``location`` (created and migrated on open).

    ``location``: a SQLite file's path, or a ``postgresql://user:pw@host:port/db``
    URL (ledger/db.py, ledger/pg.py); the stores are the same for both.
    """

    def __init__(self, location: Path | str, receipt_timeout: float = 48 * 3600.0) -> None:
        self.db: Database = open_database(location)
        migrate(self.db)
        #: message blocks as queues, with this process's cache of decoded blocks
        self.blocks = BlockQueue()
        self.products = ProductStore(self.db)
        self.batches = BatchStore(self.db, self.blocks)
        self.messages = MessageStore(self.db, self.blocks)
        self.leases = LeaseStore(self.db, self.blocks)
        self.answers = AnswerStore(self.db, receipt_timeout)
        self.reports = ReportStore(self.db, self.blocks)
        self.outbox = OutboxStore(self.db)
        self.stats = UsageStore(self.db)
        self.bans = BanStore(self.db)
        self.inbound = InboundStore(self.db)
        self.optouts = OptOutStore(self.db)
        self.controls = ControlStore(self.db, self.messages)
        #: SSH keys and the keys-only flag of each product (SFTP)
        self.ssh_keys = SshKeyStore(self.db)
        self.nodes = NodeStore(self.db)
        #: job leases (work one node does at a time) and bind slots
        self.jobs = JobStore(self.db)
        # products
        self.add_product = self.products.add_product
        self.update_product = self.products.update_product
        self.get_product = self.products.get_product
        self.list_products = self.products.list_products
        # batches
        self.record_claim = self.batches.record_claim
        self.get_batch = self.batches.get_batch
        self.get_batch_by_seq = self.batches.get_batch_by_seq
        self.batches_in_states = self.batches.batches_in_states
        self.list_batches = self.batches.list_batches
        self.start_processing = self.batches.start_processing
        self.start_dispatching = self.batches.start_dispatching
        self.set_file_facts = self.batches.set_file_facts
        self.find_duplicate = self.batches.find_duplicate
        self.reject_batch = self.batches.reject_batch
        self.finish_intake = self.batches.finish_intake
        self.set_callback_level = self.batches.set_callback_level
        self.set_notes = self.batches.set_notes
        self.set_spool_path = self.batches.set_spool_path
        self.complete_batch = self.batches.complete_batch
        self.finish_check = self.batches.finish_check
        self.unreported_batches = self.batches.unreported_batches
        self.report_is_current = self.batches.report_is_current
        self.mark_reported = self.batches.mark_reported
        # messages
        self.insert_messages = self.messages.insert_messages
        self.max_row = self.messages.max_row
        self.cancel_pending = self.messages.cancel_pending
        # opt-outs
        self.add_optouts = self.optouts.add_optouts
        self.remove_optouts = self.optouts.remove_optouts
        self.list_optouts = self.optouts.list_optouts
        self.optout_numbers = self.optouts.optout_numbers
        self.optouts_version = self.optouts.optouts_version
        # controls
        self.pause_batch = self.controls.pause_batch
        self.resume_batch = self.controls.resume_batch
        self.cancel_batch = self.controls.cancel_batch
        self.batch_controls = self.controls.batch_controls
        # leases
        self.lease = self.leases.lease
        self.expire_leases_of = self.leases.expire_leases_of
        # answers
        self.record_results = self.answers.record_results
        self.record_receipts = self.answers.record_receipts
        self.record_answers = self.answers.record_answers
        self.time_out_receipts = self.answers.time_out_receipts
        # reports
        self.status_counts = self.reports.status_counts
        self.may_be_finished = self.reports.may_be_finished
        self.report_frames = self.reports.report_frames
        self.report_tables = self.reports.report_tables
        self.report_chunks = self.reports.report_chunks
        # outbox
        self.claim_callbacks = self.outbox.claim_callbacks
        self.record_callback_outcomes = self.outbox.record_callback_outcomes
        self.expire_callback_leases_of = self.outbox.expire_callback_leases_of
        self.purge_callbacks = self.outbox.purge_callbacks
        self.next_callback_due = self.outbox.next_callback_due
        self.callbacks_configured = self.outbox.callbacks_configured
        self.callback_backlog = self.outbox.callback_backlog
        self.callbacks_of_message = self.outbox.callbacks_of_message
        self.callback_states = self.outbox.callback_states
        # stats
        self.usage = self.stats.usage
        self.products_active_since = self.stats.products_active_since
        self.batch_state_totals = self.stats.batch_state_totals
        self.batch_source_totals = self.stats.batch_source_totals
        self.message_status_totals = self.stats.message_status_totals
        self.queue_depth = self.stats.queue_depth
        self.batches_in_flight = self.stats.batches_in_flight
        # job leases
        self.take_job = self.jobs.take_job
        self.take_slot = self.jobs.take_slot
        self.renew_job = self.jobs.renew_job
        self.release_job = self.jobs.release_job
        self.release_jobs_of = self.jobs.release_jobs_of
        self.job_holders = self.jobs.job_holders
        # bans
        self.record_ban = self.bans.record_ban
        self.active_bans = self.bans.active_bans
        self.lift_ban = self.bans.lift_ban
        self.prune_bans = self.bans.prune_bans
        # nodes
        self.node_started = self.nodes.node_started
        self.node_heartbeat = self.nodes.node_heartbeat
        self.node_stopped = self.nodes.node_stopped
        self.get_node = self.nodes.get_node
        self.list_nodes = self.nodes.list_nodes
        self.live_nodes = self.nodes.live_nodes
        self.forget_node = self.nodes.forget_node

    @property
    def receipt_timeout(self) -> float:
        """Seconds after a submit when a missing receipt stops holding its batch open."""
        return self.answers.receipt_timeout

    def bump_counter(self, name: str, by: int = 1) -> None:
        with self.db.transaction() as tx:
            bump_counter(tx, name, by)

    def counter(self, name: str) -> int:
        return read_counter(self.db.connection(), name)

    def close(self) -> None:
        self.db.close()


if TYPE_CHECKING:

    def _is_a_whole_ledger(ledger: Ledger) -> LedgerProtocol:
        return ledger  # mypy checks here that the SQLite ledger provides every method of the protocol
