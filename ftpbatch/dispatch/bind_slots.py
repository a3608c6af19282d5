"""How many binds an SMSC account holds across every node: numbered slots leased in the ledger.

SMSCs cap the binds (sessions) per ``system_id``. With several nodes each
opening its own, the total is configuration (the SMPP URL's ``max_binds``)
and each bind holds one of the account's slots, a job lease named
``bind:<account>:<n>`` (ledger/jobs.py). A node that finds every slot held
by others does not bind and tries again later; a dead node's slots move on
when their leases expire; a node cut off from the ledger keeps its binds
while its leases last, then gives them up.

The connector knows nothing of the ledger: it is handed this object as its
:class:`~ftpbatch.dispatch.connector.BindSlots` and calls it from a worker
thread before each bind and while bound.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from ..ledger.protocol import JobsLedger

log = logging.getLogger(__name__)

BIND_LEASE_SECONDS = 30.0


class LedgerBindSlots:
    def __init__(self, ledger: JobsLedger, account: str, max_binds: int, holder: str,
                 seconds: float = BIND_LEASE_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.prefix = f"bind:{account}"
        self.max_binds = max_binds
        self.holder = holder
        self.seconds = seconds
        self.clock = clock
        #: slot name -> the holder name it is held under (one per bind of this node)
        self.held: dict[str, str] = {}
        self.until = 0.0

    def take(self, binds: int) -> bool:
        """Hold ``binds`` slots (a transceiver 1, transmitter + receiver 2); false (none held) if not free."""
        now = self.clock()
        taken: dict[str, str] = {}
        for k in range(binds):
            holder = f"{self.holder}#{k}"
            name = self.ledger.take_slot(self.prefix, self.max_binds, holder, self.seconds, now)
            if name is None:
                for slot, by in taken.items():
                    self.ledger.release_job(slot, by)
                self.held, self.until = {}, 0.0
                return False
            taken[name] = holder
        self.held, self.until = taken, now + self.seconds
        return True

    def renew(self) -> bool:
        """Keep the slots; false once one was lost (another node took it after this one's lease ended)."""
        now = self.clock()
        try:
            kept = all(self.ledger.take_job(name, by, self.seconds, now) for name, by in self.held.items())
        except Exception as exc:  # the ledger cannot be reached: the slots are ours while the leases last
            log.warning("%s: cannot renew the bind slot leases (%s)", self.prefix, exc)
            return now < self.until - 1.0
        if kept:
            self.until = now + self.seconds
        return kept

    def release(self) -> None:
        held, self.held, self.until = self.held, {}, 0.0
        for name, by in held.items():
            try:
                self.ledger.release_job(name, by)
            except Exception as exc:
                log.warning("%s: could not release bind slot %s (%s); it expires by itself", self.prefix, name, exc)

    def describe(self) -> str:
        return f"{len(self.held)} of {self.max_binds} bind slot(s) of {self.prefix[5:]}"
