"""Failed logins counted per address; too many within a window ban the address.

Counting happens on the login worker threads (never on the FTP loop); bans
are written to the ledger, so they survive a restart, show in
``ftpbatch ban list`` and are lifted by deleting the row
(``ftpbatch ban lift ADDRESS``): the guard thread re-reads the table every
second and the loop only ever looks at the in-memory snapshot.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import threading
import time
from typing import Callable

from ..ledger import Ledger

log = logging.getLogger(__name__)


def normal_address(address: str) -> str:
    """``::ffff:10.0.0.1`` -> ``10.0.0.1``; anything unparsable is kept as given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class BanBook:
    def __init__(
        self,
        ledger: Ledger,
        failures: int,
        window: float,
        seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.max_failures = failures
        self.window = window
        self.seconds = seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, collections.deque[float]] = {}
        #: address -> banned until (epoch); replaced wholesale by refresh().
        self._banned: dict[str, float] = {}
        #: address -> monotonic time a ban was made here (kept across a refresh
        #: that read the table before the ban was written).
        self._made: dict[str, float] = {}

    # --- the loop's view ----------------------------------------------------
    def banned_until(self, address: str) -> float | None:
        """When the ban of ``address`` ends, or None if it is not banned (a dict lookup)."""
        until = self._banned.get(normal_address(address))
        if until is None or until <= self.clock():
            return None
        return until

    # --- login workers -------------------------------------------------------
    def failed(self, address: str, who: str) -> float | None:
        """Count one failed login; returns the end of the ban if this one caused it."""
        address = normal_address(address)
        now = self.clock()
        ban_until = None
        count = 0
        with self._lock:
            times = self._failures.setdefault(address, collections.deque())
            times.append(now)
            while times and times[0] <= now - self.window:
                times.popleft()
            count = len(times)
            if self.max_failures > 0 and count >= self.max_failures:
                ban_until = now + self.seconds
                times.clear()
        self.ledger.bump_counter("ftp_login_failures")
        if ban_until is not None:
            reason = f"{count} failed logins within {self.window:g} s (last user {who!r})"
            self.ledger.record_ban(address, ban_until, count, reason, now)
            self.ledger.bump_counter("ftp_bans")
            with self._lock:
                self._banned = {**self._banned, address: ban_until}
                self._made[address] = time.monotonic()
            log.warning(
                "address %s banned for %g s after %s; lift with 'ftpbatch ban lift %s'",
                address, self.seconds, reason, address,
            )
        return ban_until

    # --- guard thread ----------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the ban table: picks up lifts (and bans made by other nodes)."""
        started = time.monotonic()
        active = {ban.address: ban.banned_until for ban in self.ledger.active_bans(self.clock())}
        with self._lock:
            for address, made in list(self._made.items()):
                if made >= started and address in self._banned:
                    active.setdefault(address, self._banned[address])  # written after our read
                else:
                    del self._made[address]
            for address in set(self._banned) - set(active):
                # lifted or expired: the address starts with a clean slate
                self._failures.pop(address, None)
                log.info("address %s is no longer banned", address)
            self._banned = active
