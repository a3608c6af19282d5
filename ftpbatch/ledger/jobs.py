"""Job leases: work that must be done by one node at a time (DESIGN.md §12).

Several nodes share one ledger and one data root. Some work must not be
done twice at once: rewriting a batch's report files, the usage files, the
callback outbox's sender, retention, the inbox rescan, the ingest of one
claimed file; and some is counted (the binds of an SMSC account, a lease per
bind slot). Each such job is a row ``(name, holder, expires)``:

* :meth:`JobStore.take_job` makes ``holder`` the holder of ``name`` for
  ``seconds`` if nobody holds it, its lease expired (the holder died or was
  cut off), or ``holder`` holds it already (then it is a renewal). One
  statement, the same on both backends: ``INSERT ... ON CONFLICT (name) DO
  UPDATE ... WHERE`` the lease expired or is ours. Two nodes racing for a
  free job: the second waits on the first's row lock (PostgreSQL) or on the
  write lock (SQLite), then finds the row held and changes nothing.
* :meth:`JobStore.renew_job` extends only a lease still held (false: it was
  lost, stop the work);
* :meth:`JobStore.release_job` gives it up at once (a clean stop: the next
  node need not wait for the expiry).

Times are the nodes' clocks (epoch seconds, as the message leases): nodes
must keep their clocks in step (NTP), well within a lease's length.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, NamedTuple, Protocol

from .db import Database

log = logging.getLogger(__name__)

#: How long a job lease lasts unless renewed: a dead node's jobs move on after this.
JOB_LEASE_SECONDS = 30.0


class JobHolder(NamedTuple):
    name: str
    holder: str
    expires: float
    taken_at: float


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def take_job(self, name: str, holder: str, seconds: float, now: float | None = None) -> bool:
        """Hold ``name`` for ``seconds`` from ``now``: true if ``holder`` holds it afterwards."""
        now = time.time() if now is None else now
        with self.db.transaction() as tx:
            cur = tx.execute(
                "INSERT INTO job_leases (name, holder, expires, taken_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires, "
                "taken_at = CASE WHEN job_leases.holder = excluded.holder THEN job_leases.taken_at "
                "ELSE excluded.taken_at END "
                "WHERE job_leases.holder = excluded.holder OR job_leases.expires <= excluded.taken_at",
                (name, holder, now + seconds, now),
            )
        return cur.rowcount == 1

    def take_slot(self, prefix: str, slots: int, holder: str, seconds: float, now: float | None = None) -> str | None:
        """One of ``slots`` numbered leases ``prefix:0`` .. ``prefix:<slots-1>`` (e.g. the binds of an
        account), the one ``holder`` holds already if any; None when all are held by others."""
        now = time.time() if now is None else now
        mine = [j.name for j in self.job_holders(prefix + ":") if j.holder == holder and j.expires > now]
        names = [f"{prefix}:{n}" for n in range(slots)]
        for name in [n for n in names if n in mine] + [n for n in names if n not in mine]:
            if self.take_job(name, holder, seconds, now):
                return name
        return None

    def renew_job(self, name: str, holder: str, seconds: float, now: float | None = None) -> bool:
        """Extend a lease ``holder`` still holds; false if it expired and another took it, or was released."""
        now = time.time() if now is None else now
        with self.db.transaction() as tx:
            cur = tx.execute(
                "UPDATE job_leases SET expires = ? WHERE name = ? AND holder = ? AND expires > ?",
                (now + seconds, name, holder, now),
            )
        return cur.rowcount == 1

    def release_job(self, name: str, holder: str) -> bool:
        """Give the lease up now (only ``holder``'s own): the next taker need not wait for the expiry."""
        with self.db.transaction() as tx:
            cur = tx.execute("DELETE FROM job_leases WHERE name = ? AND holder = ?", (name, holder))
        return cur.rowcount == 1

    def release_jobs_of(self, holder: str) -> int:
        """At start-up: the leases a previous process of this node held died with it."""
        with self.db.transaction() as tx:
            cur = tx.execute("DELETE FROM job_leases WHERE holder = ?", (holder,))
        return cur.rowcount

    def job_holders(self, prefix: str = "") -> list[JobHolder]:
        """Every job lease whose name starts with ``prefix`` (expired ones too: see ``expires``)."""
        rows = self.db.connection().execute(
            "SELECT name, holder, expires, taken_at FROM job_leases WHERE substr(name, 1, length(?)) = ? ORDER BY name",
            (prefix, prefix),
        ).fetchall()
        return [JobHolder(r[0], r[1], float(r[2]), float(r[3])) for r in rows]


def this_process() -> str:
    """A holder name for a process that was given no node id: host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class JobLedger(Protocol):
    def take_job(self, name: str, holder: str, seconds: float, now: float | None = None) -> bool: ...
    def release_job(self, name: str, holder: str) -> bool: ...


class JobLease:
    """One job this node does only while it holds the lease: ask :meth:`held` before each round.

    ``held`` takes the lease, or renews it once a third of it has passed (so
    a round of work started while held has two thirds of the lease to finish
    before another node may take over). While the ledger cannot be reached
    the lease is still ours until it expires (nobody else can take it before
    then); after that, ``held`` is false until the ledger answers again.
    """

    def __init__(self, ledger: JobLedger, name: str, holder: str, seconds: float = JOB_LEASE_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.name = name
        self.holder = holder
        self.seconds = seconds
        self.clock = clock
        #: until when the lease is surely ours (0: not held)
        self.until = 0.0

    def held(self) -> bool:
        now = self.clock()
        if self.until - now > self.seconds * 2 / 3:
            return True
        try:
            taken = self.ledger.take_job(self.name, self.holder, self.seconds, now)
        except Exception as exc:  # the ledger is unreachable: ours only while the last lease lasts
            log.warning("job %s: cannot reach the ledger to renew its lease (%s)", self.name, exc)
            return now < self.until - 1.0
        if taken and self.until == 0.0:
            log.info("job %s: taken by %s", self.name, self.holder)
        elif not taken and self.until:
            log.warning("job %s: lease lost by %s (another node holds it now)", self.name, self.holder)
        self.until = now + self.seconds if taken else 0.0
        return taken

    def release(self) -> None:
        """Give it up now (a clean stop), so another node need not wait for the expiry."""
        if self.until:
            self.until = 0.0
            try:
                self.ledger.release_job(self.name, self.holder)
            except Exception as exc:
                log.warning("job %s: could not release its lease (%s); it expires by itself", self.name, exc)
