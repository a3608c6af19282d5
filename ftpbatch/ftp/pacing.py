"""Accept new connections at a bounded rate, so a login storm cannot starve running transfers.

Every new session costs CPU on the FTP loop (and on the client's side of
the machine when both share it): the banner, USER, the hand-off of PASS to
the hash threads, the home folder. Hundreds of sessions opened in the same
instant take the loop and the cores for that instant, and an upload in
progress drops to half its speed. Spreading them out costs each new session
a few milliseconds of waiting and keeps every running transfer at speed.

The listener accepts while it has tokens (``burst`` at most, refilled at
``rate`` per second); when they run out it stops watching the listening
socket until the next token is due. Waiting connections sit in the kernel's
accept queue (the listener's backlog), already connected: clients see a
slightly later banner, not a refusal.
"""

from __future__ import annotations

from typing import Any

from pyftpdlib.servers import FTPServer

from ..throttle import TokenBucket


class PacedFTPServer(FTPServer):
    """pyftpdlib's server whose listener takes a break when the accept budget is spent."""

    def __init__(self, *args: Any, accept_rate: float = 0.0, accept_burst: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accept_budget = TokenBucket(accept_rate, accept_burst)
        self.paused = False

    def handle_accept(self) -> None:
        if self.paused:
            return  # a readiness event that was already queued when we paused
        if self.accept_budget.available() < 1:
            self._pause()
            return
        self.accept_budget.take(1)
        super().handle_accept()

    def _pause(self) -> None:
        # Watching no events leaves the socket registered (close_all still
        # closes it) but stops the loop from waking for it.
        self.paused = True
        self.ioloop.modify(self._fileno, 0)
        self.ioloop.call_later(self.accept_budget.wait_time(), self._resume, _errback=self.handle_error)

    def _resume(self) -> None:
        if not self.paused or self._fileno is None or self._fileno not in self.ioloop.socket_map:
            return  # closed meanwhile
        self.paused = False
        self.ioloop.modify(self._fileno, self.ioloop.READ)
