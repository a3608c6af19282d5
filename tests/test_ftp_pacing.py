"""Accept pacing: a burst of connections is let in at the configured rate, and none is refused."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ftpbatch.throttle import TokenBucket

from .helpers import ServerProcess, add_product


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_accept_budget_gives_its_burst_then_its_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    taken = 0
    while bucket.available() >= 1:
        bucket.take(1)
        taken += 1
    assert taken == 3
    assert bucket.wait_time() == pytest.approx(0.1)
    clock.now += 0.05
    assert bucket.available() == 0 and bucket.wait_time() == pytest.approx(0.05)
    clock.now += 0.06
    assert bucket.available() == 1
    clock.now += 60  # a long quiet spell saves up the burst, no more
    assert bucket.available() == 3


def test_rate_zero_never_limits():
    bucket = TokenBucket(rate=0, burst=1, clock=FakeClock())
    assert bucket.available() >= 1000
    assert bucket.wait_time() == 0.0


def banner_times(port: int, clients: int) -> list[float]:
    """Connect ``clients`` sockets at once; seconds from the start until each one's 220 banner."""
    started = time.monotonic()

    def one(_: int) -> float:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            reply = sock.makefile("rb").readline()
            assert reply.startswith(b"220 "), reply
            return time.monotonic() - started

    with ThreadPoolExecutor(clients) as pool:
        return sorted(pool.map(one, range(clients)))


def test_a_burst_of_connections_is_let_in_at_the_accept_rate(tmp_path: Path):
    account = add_product(tmp_path, "acme", "acme-password")
    env = {"FTPBATCH_FTP_ACCEPT_RATE": "20", "FTPBATCH_FTP_ACCEPT_BURST": "5"}
    with ServerProcess(tmp_path, env=env) as server:
        times = banner_times(server.port, 25)
        # every connection was served (none refused), the burst at once and
        # the other 20 at 20 per second: about one second after the burst
        assert len(times) == 25
        assert times[4] < 0.5
        assert times[-1] - times[4] >= 0.8
        server.ftp(account).quit()  # and the listener takes logins afterwards
    assert "Traceback" not in server.log()


def test_without_a_rate_the_burst_is_served_at_once(tmp_path: Path):
    add_product(tmp_path, "acme", "acme-password")
    with ServerProcess(tmp_path, env={"FTPBATCH_FTP_ACCEPT_RATE": "0"}) as server:
        times = banner_times(server.port, 25)
        assert times[-1] < 0.8


def test_a_paused_listener_shuts_down_cleanly(tmp_path: Path):
    add_product(tmp_path, "acme", "acme-password")
    server = ServerProcess(tmp_path, env={"FTPBATCH_FTP_ACCEPT_RATE": "0.2", "FTPBATCH_FTP_ACCEPT_BURST": "1"}).start()
    waiting = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
    try:
        assert waiting[0].makefile("rb").readline().startswith(b"220 ")
        time.sleep(0.2)  # the others wait in the accept queue, the listener paused for five seconds
        assert server.stop(timeout=10) == 0
    finally:
        for sock in waiting:
            sock.close()
    assert "Traceback" not in server.log()
