"""Big reports are rendered in a helper process, away from the gateway's GIL.

Rewriting a report is pandas work: reading every row of the batch from the
ledger and formatting it as CSV, ~5 ms per thousand rows, most of it holding
the GIL. In the gateway's process that time is taken from the FTP loop and
the SMPP connector, which need the GIL for every command and every answer:
measured with ``bench/dispatch.py``, rewriting the report of a 20,000-message
batch while it was being sent cost dispatch 7 % of its rate. A helper process
renders big batches instead; it opens the same ledger file (SQLite WAL lets
it read while the gateway writes) and writes the same files with the same
code, so the result is byte for byte what the reporter thread would write.

The helper is a plain ``python -m ftpbatch.report.render_process DB ROOT``
child, started on the first big report: not multiprocessing, whose "spawn"
re-imports the caller's main script (any program embedding the gateway would
need a ``__main__`` guard) and whose "fork" copies a process full of threads
and held locks. Requests go over its stdin as length-prefixed pickles of
(batch, counts), both ftpbatch's own dataclasses; it answers one line each.
If it cannot be started or dies, the report is written in the calling
thread, as before: a report is never skipped.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO, Callable

from ..models import Batch
from .files import Counts, ReportWriter

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
# how the child learns where the ledger is
_LOCATION_ENV = "FTPBATCH_REPORT_LEDGER"


class ReportProcess:
    """Writes a batch's report files in the helper process; the caller waits without the GIL."""

    def __init__(self, ledger_location: str | Path, root: Path, fallback: ReportWriter) -> None:
        #: the ledger's file or URL (handed to the child in its environment: a URL may hold a password)
        self.ledger_location = str(ledger_location)
        self.root = root
        self.fallback = fallback
        self._child: subprocess.Popen[bytes] | None = None

    def write(self, batch: Batch, counts: Counts, meanwhile: Callable[[], None] | None = None) -> None:
        """Write the batch's files in the helper; ``meanwhile`` runs here while the helper renders."""
        try:
            child = self._running_child()
            assert child.stdin is not None and child.stdout is not None
            request = pickle.dumps((batch, counts), protocol=pickle.HIGHEST_PROTOCOL)
            child.stdin.write(_LENGTH.pack(len(request)) + request)
            child.stdin.flush()
            if meanwhile is not None:
                _run_meanwhile(meanwhile)
            answer = child.stdout.readline().decode("utf-8", "replace").strip()
        except OSError as exc:
            answer = f"error: {exc}"
        if answer == "ok":
            return
        log.warning("report process failed for batch %s (%s); writing it here", batch.id, answer or "it exited")
        self.close()  # a new one for the next report
        self.fallback.write(batch, counts)

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


def _run_meanwhile(work: Callable[[], None]) -> None:
    try:
        work()
    except Exception:  # the report being written matters more; the work's owner retries it
        log.exception("work done while the report process wrote failed")


def serve(requests: IO[bytes], answers: IO[bytes], writer: ReportWriter) -> None:
    """The helper's loop: one (batch, counts) request in, one line out, until end of input."""
    while header := requests.read(_LENGTH.size):
        if len(header) < _LENGTH.size:
            return
        (size,) = _LENGTH.unpack(header)
        batch, counts = pickle.loads(requests.read(size))  # from our own parent, over a private pipe
        try:
            writer.write(batch, counts)
            answers.write(b"ok\n")
        except Exception as exc:  # the parent writes it itself and logs why
            answers.write(f"error: {type(exc).__name__}: {exc}".replace("\n", " ").encode() + b"\n")
        answers.flush()


def main(argv: list[str]) -> None:
    from ..heap import collect_less_often
    from ..ledger import Ledger
    from ..storage import LocalStorage

    collect_less_often()
    root = Path(argv[0])
    ledger = Ledger(os.environ[_LOCATION_ENV])
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer, ReportWriter(ledger, LocalStorage(root)))
    finally:
        ledger.close()


if __name__ == "__main__":
    main(sys.argv[1:])
