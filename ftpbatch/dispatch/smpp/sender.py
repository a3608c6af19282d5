"""Sending: the window of submit_sm PDUs, throttling pauses, and what each answer means for the message.

Window. ``window`` worker coroutines each keep at most one submit_sm in
flight on the session, so at most ``window`` PDUs are outstanding.

Outcomes (every job gets exactly one :class:`SubmitResult`, through ``finish``):

* all parts accepted -> ``upstream_id`` (the last part's id: only the last
  part asks for a receipt, so each message has one id and one receipt);
* a permanent command_status on any part -> ``error_code`` (map: status.py);
* throttling (ESME_RTHROTTLED, ESME_RMSGQFUL) and generic_nack are retried
  **here**: every worker pauses (exponential, ``throttle_min`` to
  ``throttle_max`` seconds) and the same part goes again, up to
  ``retry_max`` times; then the message comes back ``retry=True``;
* no submit_sm_resp within ``response_timeout``, the connection lost while a
  part was in flight, ESME_RSYSERR -> ``retry=True`` at once (the SMSC may
  have taken it: the ledger flags the re-send as a possible duplicate);
* not sent yet when the connection dropped: kept for the next session.

A generic_nack is told apart from a lost connection exactly: it is the
response to that sequence number, while a lost connection fails the wait
with :class:`~.session.SessionClosed`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import Counter, deque
from collections.abc import Callable

from ...models import OutboundMessage, SubmitResult
from ...throttle import TokenBucket
from . import pdu
from .receipts import normalise_submit_id
from .session import Session, SessionClosed
from .settings import SmppSettings
from .status import Action, Outcome, describe, submit_outcome

log = logging.getLogger("ftpbatch.dispatch.smpp")

_SEQUENCE = struct.Struct("!L")


class Job:
    """One handed message and the state of its parts."""

    __slots__ = ("done", "ids", "left", "message", "parts")

    def __init__(self, message: OutboundMessage, bodies: list[bytes]) -> None:
        self.message = message
        self.parts = [Part(self, index, body) for index, body in enumerate(bodies)]
        self.ids: list[str | None] = [None] * len(bodies)
        self.left = len(bodies)
        self.done = False


class Part:
    """One submit_sm, encoded once (sequence number 0) and stamped with a fresh one per send."""

    __slots__ = ("deadline", "in_doubt", "in_flight", "index", "job", "pdu", "timed_out", "tries")

    def __init__(self, job: Job, index: int, encoded: bytes) -> None:
        self.job = job
        self.index = index
        self.pdu = encoded
        self.tries = 0
        self.in_flight = False  # counted in the window right now
        self.in_doubt = False  # sent, and no answer yet says whether the SMSC took it
        self.deadline = 0.0  # loop time by which its submit_sm_resp is due (while in flight)
        self.timed_out = False  # the watchdog cancelled its wait for the answer

    def stamped(self, sequence: int) -> bytes:
        data = bytearray(self.pdu)
        _SEQUENCE.pack_into(data, 12, sequence)
        return bytes(data)


class Sender:
    """The window of one connector; lives on the connector's event loop."""

    def __init__(self, settings: SmppSettings, stats: Counter[str],
                 finish: Callable[[Job, SubmitResult], None]) -> None:
        self.settings = settings
        self.stats = stats
        self._finish = finish
        self.parts: deque[Part] = deque()
        # Workers waiting for a part, each on its own future: a hand-over wakes
        # as many as there are new parts, not all fifty of them.
        self._idle_workers: deque[asyncio.Future[None]] = deque()
        # Parts whose submit_sm_resp is awaited, and the worker task awaiting it
        # (see watch_answers: one watchdog instead of a timer per submit).
        self._awaiting: dict[Part, asyncio.Task[None]] = {}
        self.jobs: set[Job] = set()
        self.draining = False
        self._inflight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self._paused_until = 0.0
        self._throttle_level = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # the connector's loop, once run() runs on it
        # a burst of at most a twentieth of a second: an SMSC's per-second limit is often policed per 50 ms
        self.bucket = TokenBucket(settings.tps, burst=max(1.0, settings.tps / 20)) if settings.tps else None

    # --------------------------------------------------------- hand-over
    def enqueue(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.jobs.add(job)
            self.parts.extend(job.parts)
        self.wake_workers(len(self.parts))

    def wake_workers(self, count: int | None = None) -> None:
        """Wake ``count`` idle workers (all when None)."""
        while self._idle_workers and (count is None or count > 0):
            waiter = self._idle_workers.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if count is not None:
                    count -= 1

    def retry(self, job: Job, reason: str) -> None:
        if not job.done:
            self.stats["retried"] += 1
            self._finish(job, SubmitResult(job.message.message_id, job.message.attempt, error_text=reason, retry=True))

    def retry_all(self, reason: str) -> None:
        for job in list(self.jobs):
            self.retry(job, reason)
        self.parts.clear()

    def retry_unsent(self, reason: str) -> None:
        """Hand back every job with nothing in flight (at stop: nothing new goes out)."""
        for job in [j for j in self.jobs if not any(p.in_flight for p in j.parts)]:
            self.retry(job, reason)
        self.parts.clear()

    # ----------------------------------------------------------- workers
    async def run(self, session: Session) -> None:
        """The window's workers on ``session``, until it closes or the sender drains."""
        # Kept, not asked for per message: asyncio.get_running_loop() and
        # asyncio.current_task() without a loop each make a getpid() system call.
        self._loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(self._worker(session)) for _ in range(self.settings.window)]
        tasks.append(asyncio.create_task(self._watch_answers()))
        try:
            await session.closed.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _on_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        assert loop is not None, "run() first"
        return loop

    async def _next_part(self) -> Part | None:
        while True:
            if self.draining:
                return None
            while self.parts:
                part = self.parts.popleft()
                if not part.job.done:
                    return part
            waiter = self._on_loop().create_future()
            self._idle_workers.append(waiter)
            await waiter

    async def _worker(self, session: Session) -> None:
        while session.alive:
            part = await self._next_part()
            if part is None:
                return
            try:
                usable = await self._send(session, part)
            except asyncio.CancelledError:
                if part.in_flight:
                    self._landed(part)
                if part.in_doubt:
                    self.retry(part.job, "connection closed before the SMSC answered")
                elif not part.job.done:
                    self.parts.appendleft(part)  # never sent, or refused: safe to send again
                raise
            except Exception:
                # A bug must not leave a message without its result, nor kill the worker.
                log.exception("error sending message %d", part.job.message.message_id)
                if part.in_flight:
                    self._landed(part)
                self.retry(part.job, "internal error in the SMPP connector")
                continue
            if not usable:
                return

    def _landed(self, part: Part) -> None:
        part.in_flight = False
        self._inflight -= 1
        if self._inflight == 0:
            self.idle.set()

    async def _send(self, session: Session, part: Part) -> bool:
        """Send one part until it has an outcome. False: the session is unusable."""
        s = self.settings
        job = part.job
        loop = self._on_loop()
        while True:
            pause = self._paused_until - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            if self.bucket is not None:
                await self.bucket.acquire()
            if job.done:
                return True
            if not session.alive or self.draining:
                if not self.draining:
                    self.parts.appendleft(part)
                return False
            part.in_flight = part.in_doubt = True
            self._inflight += 1
            self.idle.clear()
            task = asyncio.current_task(loop)
            assert task is not None
            cancelling = task.cancelling()
            part.deadline = loop.time() + s.response_timeout
            part.timed_out = False
            sequence, future = session.request(part.stamped)
            self._awaiting[part] = task
            try:
                try:
                    head, body = await future
                finally:
                    del self._awaiting[part]
            except asyncio.CancelledError:
                # The watchdog's cancel is a timeout; any other (stop, session end) goes on up.
                if not part.timed_out or task.uncancel() > cancelling:
                    raise
                session.forget(sequence)
                self._landed(part)
                self.stats["timeouts"] += 1
                self.retry(job, f"no submit_sm_resp within {s.response_timeout:g}s")
                return True
            except SessionClosed:
                self._landed(part)
                self.retry(job, "connection lost before the SMSC answered")
                return False
            self._landed(part)
            part.in_doubt = False
            if head.command_id == pdu.GENERIC_NACK:
                # the PDU was not taken: like throttling, pause and send it again
                self.stats["generic_nacks"] += 1
                outcome = Outcome(Action.THROTTLE, text=f"generic_nack {describe(head.status)}")
            else:
                outcome = submit_outcome(head.status)
            if outcome.action is Action.OK:
                self._throttle_level = 0
                self._accepted(part, pdu.read_c_string(body, 0)[0])
                return True
            if outcome.action is Action.THROTTLE:
                self.stats["throttled"] += 1
                self._throttle(loop)
                part.tries += 1
                if part.tries > s.retry_max:
                    self.retry(job, f"{outcome.text}, {part.tries} times")
                    return True
                continue
            if outcome.action is Action.RETRY:
                self.retry(job, outcome.text)
                return True
            if outcome.action is Action.REBIND:
                self.retry(job, outcome.text)
                session.close(outcome.text)
                return False
            self.stats["failed"] += 1
            self._finish(job, SubmitResult(job.message.message_id, job.message.attempt,
                                           error_code=outcome.code, error_text=outcome.text))
            return True

    async def _watch_answers(self) -> None:
        """Cancel the waits for submit_sm_resp that are overdue (the worker turns that into a retry).

        One look every few tenths of a second instead of a timer per submit:
        at thousands of submits a second, creating and cancelling those timers
        was a tenth of the loop's time. An answer is given up at most one tick
        after ``response_timeout``.
        """
        tick = min(0.25, self.settings.response_timeout / 4)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for part, task in list(self._awaiting.items()):
                if part.deadline <= now and not part.timed_out:
                    part.timed_out = True
                    task.cancel()

    def _throttle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Pause all sending; back off further only if throttled again after a pause ended.

        The answers to the other PDUs of the window that were sent before the
        pause belong to the same episode and must not double the delay again.
        """
        s = self.settings
        now = loop.time()
        if now < self._paused_until:
            return
        delay = min(s.throttle_max, s.throttle_min * (2 ** self._throttle_level))
        self._throttle_level = min(self._throttle_level + 1, 30)
        self._paused_until = now + delay

    def _accepted(self, part: Part, message_id: str) -> None:
        job = part.job
        if job.done:
            log.info("late submit_sm_resp %r for message %d (already answered)", message_id, job.message.message_id)
            return
        if not message_id:
            # Accepted without an id: nothing can ever match its receipt. Say so.
            log.warning("SMSC accepted message %d without a message_id", job.message.message_id)
            message_id = f"no-id:{job.message.message_id}:{job.message.attempt}:{part.index}"
        job.ids[part.index] = normalise_submit_id(message_id, self.settings.receipt_id)
        job.left -= 1
        if job.left == 0:
            self.stats["accepted"] += 1
            self.stats["parts"] += len(job.ids)
            # The last part is the one that asked for the receipt.
            self._finish(job, SubmitResult(job.message.message_id, job.message.attempt, upstream_id=job.ids[-1]))
