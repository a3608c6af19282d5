"""query_sm: asking the SMSC about messages whose receipt is overdue.

The dispatcher hands over :class:`QueryRequest` s (the ledger picks them:
``003`` and overdue, or submitted before this process started); every one
gets exactly one :class:`QueryOutcome` through ``events.query_answers``:

* a final ``message_state`` (DELIVERED, UNDELIVERABLE, EXPIRED, DELETED,
  REJECTED) -> ``status`` set, applied by the ledger like a receipt;
* not final yet (ENROUTE, ACCEPTED, UNKNOWN, SCHEDULED), an error status
  (ESME_RQUERYFAIL, ESME_RINVMSGID, ...), no answer, no bind -> ``status``
  None: the ledger asks again later, with backoff, and counts it;
* generic_nack or ESME_RINVCMDID: this SMSC does not do query_sm ->
  ``refused``; the connector stops asking (and the ledger remembers it, so
  a restart does not ask again either).

At most half the window of queries is in flight, so submits keep their room;
they share the connector's throughput limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable

from ...models import QueryOutcome, QueryRequest
from ...throttle import TokenBucket
from ..connector import ConnectorEvents
from . import pdu
from .fields import source_address
from .receipts import MESSAGE_STATES, STAT_CODES
from .session import Session, SessionClosed
from .settings import SmppSettings
from .status import describe

log = logging.getLogger("ftpbatch.dispatch.smpp")

#: message_state words that are final (the rest: ask again later)
FINAL_STATES = frozenset({"DELIVRD", "UNDELIV", "EXPIRED", "DELETED", "REJECTD"})
_FLUSH_DELAY = 0.002


class Queries:
    def __init__(self, settings: SmppSettings, stats: Counter[str], events: Callable[[], ConnectorEvents | None],
                 bucket: TokenBucket | None) -> None:
        self.settings = settings
        self.account = settings.account
        self.stats = stats
        self._events = events
        self._bucket = bucket
        #: the session queries go out on (None while not bound)
        self.session: Session | None = None
        #: True once the SMSC refused query_sm: not asked again
        self.refused = False
        self._queue: deque[QueryRequest] = deque()
        self._wake = asyncio.Event()
        self._slots = max(1, settings.window // 2)
        self._in_flight = 0
        self._outcomes: list[QueryOutcome] = []
        self._flush_scheduled = False

    def enqueue(self, requests: list[QueryRequest]) -> None:
        if self.refused:
            for request in requests:
                self._answer(request, None, "query_sm not supported by this SMSC", refused=True)
            return
        self._queue.extend(requests)
        self._wake.set()

    def fail_all(self, reason: str) -> None:
        while self._queue:
            self._answer(self._queue.popleft(), None, reason)
        self._flush()

    async def run(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue and self._in_flight < self._slots and self.session is not None and self.session.alive:
                    if self.refused:
                        self.enqueue([self._queue.popleft() for _ in range(len(self._queue))])
                        break
                    request = self._queue.popleft()
                    self._in_flight += 1
                    task = asyncio.create_task(self._ask(self.session, request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()

    async def _ask(self, session: Session, request: QueryRequest) -> None:
        try:
            if self._bucket is not None:
                await self._bucket.acquire()
            source, ton, npi = source_address(request.sender, self.settings)
            self.stats["queries"] += 1
            try:
                head, body = await session.call(
                    lambda seq: pdu.query_sm(seq, request.upstream_id, source, ton, npi), self.settings.response_timeout)
            except (TimeoutError, SessionClosed) as exc:
                self._answer(request, None, f"no query_sm_resp ({type(exc).__name__})")
                return
            if head.command_id == pdu.GENERIC_NACK or head.status == pdu.ESME_RINVCMDID:
                if not self.refused:
                    log.warning("%s: the SMSC refuses query_sm (%s); not asking it again", self.account,
                                describe(head.status))
                self.refused = True
                self._answer(request, None, f"query_sm refused: {describe(head.status)}", refused=True)
                return
            if head.status != pdu.ESME_ROK:
                self._answer(request, None, f"query_sm answered {describe(head.status)}")
                return
            answer = pdu.parse_query_sm_resp(body)
            word = MESSAGE_STATES.get(answer.message_state, f"state {answer.message_state}")
            if word in FINAL_STATES:
                status = STAT_CODES[word]
                self.stats["queries_final"] += 1
                self._answer(request, status, f"stat:{word} err:{answer.error_code}")
            else:
                self._answer(request, None, f"query_sm: message {word}")
        finally:
            self._in_flight -= 1
            self._wake.set()

    def _answer(self, request: QueryRequest, status: str | None, detail: str, refused: bool = False) -> None:
        if status is None:
            self.stats["queries_open"] += 1
        self._outcomes.append(QueryOutcome(self.account, request.message_id, request.upstream_id, status, detail, refused))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(_FLUSH_DELAY, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        outcomes, self._outcomes = self._outcomes, []
        events = self._events()
        if outcomes and events is not None:
            try:
                events.query_answers(outcomes)
            except Exception:
                log.exception("%s: events.query_answers failed for %d outcomes", self.account, len(outcomes))
