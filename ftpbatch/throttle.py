"""Token buckets: throughput limits per connector and per product, and the FTP accept rate."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up. ``rate`` <= 0: unlimited."""

    def __init__(
        self, rate: float | None, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = float(rate or 0.0)
        # One second's worth of burst: smooth enough for an SMSC's per-second
        # limit, large enough that lease batches stay efficient.
        self.burst = float(burst if burst is not None else max(self.rate, 1.0))
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def available(self) -> int:
        """Whole tokens that could be taken now."""
        if self.unlimited:
            return 1 << 30
        with self._lock:
            self._refill()
            return int(self._tokens)

    def take(self, n: int) -> None:
        """Spend ``n`` tokens (going into debt is allowed: the next wait repays it)."""
        if self.unlimited or n <= 0:
            return
        with self._lock:
            self._refill()
            self._tokens -= n

    def wait_time(self, n: int = 1) -> float:
        """Seconds until ``n`` tokens are available."""
        if self.unlimited:
            return 0.0
        with self._lock:
            self._refill()
            missing = n - self._tokens
            return max(0.0, missing / self.rate)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, n: int = 1) -> None:
        """Wait (without blocking the event loop) until ``n`` tokens are there, then take them."""
        if self.unlimited:
            return
        while True:
            wait = self.wait_time(n)
            if wait <= 0:
                self.take(n)
                return
            await asyncio.sleep(wait)
