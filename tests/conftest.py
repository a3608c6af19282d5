import gc
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftpbatch.ledger import Ledger
from ftpbatch.models import Product
from tests import pg_server as pg
from tests.smsc.fixtures import smsc, smsc_factory  # noqa: F401

# How long a test's threads get to finish after it ends (stop() joins with a
# timeout; a thread still winding down is not a leak yet).
_LEAK_GRACE_SECONDS = 3.0


def _open_descriptors() -> dict[int, str]:
    found: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the descriptor listdir itself used, closed by now
            pass
    return found


def _leaks(threads_before: set[threading.Thread], fds_before: dict[int, str]) -> tuple[list[str], list[str]]:
    threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    fds = _open_descriptors()
    new_fds = [f"fd {fd} -> {target}" for fd, target in sorted(fds.items()) if fds_before.get(fd) != target]
    return [t.name for t in threads], new_fds


@pytest.fixture(scope="session", autouse=True)
def _process_wide_singletons() -> None:
    """Create once, before any leak snapshot, what a process keeps for good on first use.

    libuv (under uvloop, the SMPP connector's loop) opens a process-wide pipe
    pair the first time any loop is made and never closes it: the first SMPP
    test would otherwise be blamed for it.
    """
    try:
        import uvloop
    except ImportError:  # not on this platform
        return
    uvloop.new_event_loop().close()


@pytest.fixture(autouse=True)
def _collector_pace_restored() -> Iterator[None]:
    """Each test ends with the garbage collector's pace it started with.

    ``serve`` and ``process`` run in-process by some tests set the gateway's
    pace (ftpbatch/heap.py) for the whole process; left so, an unclosed socket
    of one test was collected, and warned about, in the middle of another.
    """
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


@pytest.fixture(autouse=True)
def no_leaked_threads_or_files(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves threads running or file descriptors open (as pyftpdlib's suite does).

    Fixtures of a wider scope (a module's server) are set up before this
    snapshot and torn down after the module, so only what the test itself
    started counts.
    """
    threads_before = set(threading.enumerate())
    fds_before = _open_descriptors()
    yield
    deadline = time.monotonic() + _LEAK_GRACE_SECONDS
    while True:
        threads, fds = _leaks(threads_before, fds_before)
        if not (threads or fds) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    problems = []
    if threads:
        problems.append(f"{len(threads)} thread(s) still running: {', '.join(sorted(threads))}")
    if fds:
        problems.append(f"{len(fds)} file descriptor(s) still open: {'; '.join(fds)}")
    if problems:
        pytest.fail(f"{request.node.nodeid} leaked " + " and ".join(problems), pytrace=False)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A ledger with one product, ``acme``."""
    ledger = Ledger(tmp_path / "ledger.db", receipt_timeout=3600)
    ledger.add_product(Product("acme", "x"))
    yield ledger
    ledger.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg.PgServer]:
    """A real PostgreSQL server for the session (tests/pg_server.py); skipped only where none is installed."""
    bindir = pg.bin_dir()
    if bindir is None:
        reason = "PostgreSQL is not installed (/usr/lib/postgresql/*/bin; scripts/test installs Debian's postgresql)"
        if os.environ.get(pg.REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}, and {pg.REQUIRE_ENV}=1 requires it", pytrace=False)
        pytest.skip(reason)
    server = pg.PgServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres: pg.PgServer) -> Iterator[str]:
    """The URL of an empty database of its own for one test."""
    url = postgres.new_database()
    yield url
    postgres.drop_database(url)
