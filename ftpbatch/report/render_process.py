"""Big reports are rendered in a helper process, away from the gateway's GIL.

Rewriting a report is pandas work: reading every row of the batch from the
ledger and formatting it as CSV, ~5 ms per thousand rows, most of it holding
the GIL. In the gateway's process that time is taken from the FTP loop and
the SMPP connector, which need the GIL for every command and every answer:
measured with ``bench/dispatch.py``, rewriting the report of a 20,000-message
batch while it was being sent cost dispatch 7 % of its rate. A helper process
renders big batches instead; it opens the same ledger file (SQLite WAL lets
it read while the gateway writes) and writes report.csv with the same code,
so the result is byte for byte what the reporter thread would write. The
small summary.json stays the reporter's: it keeps it fresh while the helper
renders, and a summary written by the helper, from the counts the request
was made with, would put the counts a sender sees back by seconds.

The helper is a plain ``python -m ftpbatch.report.render_process DB ROOT``
child, started on the first big report: not multiprocessing, whose "spawn"
re-imports the caller's main script (any program embedding the gateway would
need a ``__main__`` guard) and whose "fork" copies a process full of threads
and held locks. Requests go over its stdin as length-prefixed pickles of a
batch (ftpbatch's own dataclass); it answers one line each.
If it cannot be started or dies, the report is written in the calling
thread, as before: a report is never skipped.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO, Callable, TypeVar

from ..models import Batch
from .files import ReportWriter, RewriteGivenUp

log = logging.getLogger(__name__)
_Result = TypeVar("_Result")

_LENGTH = struct.Struct(">I")
# the parent's "give the rewrite under way up" (ReportProcess.write_csv), and the helper's answer to it
_GIVE_UP = signal.SIGUSR1
_GIVEN_UP = "given up"
# seconds between two calls of while_waiting while the helper renders
_GIVE_UP_LOOK = 0.25
# how the child learns where the ledger is
_LOCATION_ENV = "FTPBATCH_REPORT_LEDGER"


class ReportProcess:
    """Writes a batch's report.csv in the helper process; the caller waits without the GIL."""

    def __init__(self, ledger_location: str | Path, root: Path, fallback: ReportWriter) -> None:
        #: the ledger's file or URL (handed to the child in its environment: a URL may hold a password)
        self.ledger_location = str(ledger_location)
        self.root = root
        self.fallback = fallback
        self._child: subprocess.Popen[bytes] | None = None
        self._answered_once = False  # the running child has answered a request (so it handles the signal)

    def write_csv(self, batch: Batch, meanwhile: Callable[[], None] | None = None,
                  while_waiting: Callable[[], bool] | None = None) -> bool:
        """Write the batch's report.csv in the helper; False if the helper gave the rewrite up, as asked.

        ``meanwhile`` runs here once the request is sent. ``while_waiting``
        is called every quarter second while the helper renders (it may do
        other work: the reporter keeps the batch's summary.json fresh); once
        it returns true, the helper stops before its next chunk and replaces
        no file (a batch whose last receipt came while a long rewrite ran:
        its last rewrite need not wait for that one to end).
        """
        try:
            child = self._running_child()
            assert child.stdin is not None and child.stdout is not None
            request = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
            child.stdin.write(_LENGTH.pack(len(request)) + request)
            child.stdin.flush()
            if meanwhile is not None:
                _guarded(meanwhile, None)
            # One request at a time, so nothing is buffered unread. Only a helper that has
            # answered once has its signal handler (before it, the signal would end it).
            # Asked again at every look: a signal that came before the helper took the
            # request up is forgotten when it does (serve).
            if while_waiting is not None:
                while not select.select([child.stdout], [], [], _GIVE_UP_LOOK)[0]:
                    if _guarded(while_waiting, False) and self._answered_once:
                        child.send_signal(_GIVE_UP)
            answer = child.stdout.readline().decode("utf-8", "replace").strip()
        except OSError as exc:
            answer = f"error: {exc}"
        if answer in ("ok", _GIVEN_UP):
            self._answered_once = True
            return answer == "ok"
        log.warning("report process failed for batch %s (%s); writing it here", batch.id, answer or "it exited")
        self.close()  # a new one for the next report
        self.fallback.write_csv(batch)
        return True

    def _running_child(self) -> subprocess.Popen[bytes]:
        if self._child is not None and self._child.poll() is not None:
            log.warning("the report process exited (code %s); starting a new one", self._child.returncode)
            self.close()
        if self._child is None:
            # the same ftpbatch as this process, installed or not
            package_parent = str(Path(__file__).resolve().parents[2])
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])),
                   _LOCATION_ENV: self.ledger_location}
            self._child = subprocess.Popen(
                [sys.executable, "-m", __name__, str(self.root)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,  # stderr: the gateway's, for its log lines
            )
        return self._child

    def close(self) -> None:
        child, self._child = self._child, None
        self._answered_once = False
        if child is None:
            return
        for pipe in (child.stdin, child.stdout):  # end of requests: the child exits
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:  # a dead child: what was still buffered for it is moot
                    pass
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _guarded(work: Callable[[], _Result], failed: _Result) -> _Result:
    """``work()``, or ``failed`` if it raised: the report being written matters more (the work's
    owner retries it, and a failed look gives nothing up)."""
    try:
        return work()
    except Exception:
        log.exception("work done while the report process wrote failed")
        return failed


def serve(requests: IO[bytes], answers: IO[bytes], writer: ReportWriter, given_up: list[bool] | None = None) -> None:
    """The helper's loop: one batch in, its report.csv written, one line out, until end of input.

    ``given_up[0]`` is set by the parent's signal (main): the rewrite under
    way stops and answers so. It is cleared as each request starts: a
    signal that came after its rewrite had ended is not for the next one.
    """
    asked = given_up if given_up is not None else [False]
    writer.give_up = lambda: asked[0]
    while header := requests.read(_LENGTH.size):
        if len(header) < _LENGTH.size:
            return
        (size,) = _LENGTH.unpack(header)
        batch = pickle.loads(requests.read(size))  # from our own parent, over a private pipe
        asked[0] = False
        try:
            writer.write_csv(batch)
            answers.write(b"ok\n")
        except RewriteGivenUp:
            answers.write(_GIVEN_UP.encode() + b"\n")
        except Exception as exc:  # the parent writes it itself and logs why
            answers.write(f"error: {type(exc).__name__}: {exc}".replace("\n", " ").encode() + b"\n")
        answers.flush()


def main(argv: list[str]) -> None:
    from ..heap import collect_less_often
    from ..ledger import Ledger
    from ..storage import LocalStorage

    collect_less_often()
    given_up = [False]
    signal.signal(_GIVE_UP, lambda _signal, _frame: given_up.__setitem__(0, True))
    root = Path(argv[0])
    ledger = Ledger(os.environ[_LOCATION_ENV])
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer, ReportWriter(ledger, LocalStorage(root)), given_up)
    finally:
        ledger.close()


if __name__ == "__main__":
    main(sys.argv[1:])
