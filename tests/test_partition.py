"""A network partition between a node and its PostgreSQL ledger (issue 14).

A small TCP proxy in the test stands between the node and the real
PostgreSQL server; "cutting" it closes every connection through it and
refuses new ones for a few seconds. Meanwhile the node must stop leasing,
keep answering the FTP clients it has, and afterwards resume: the batch
completes, every message is submitted once except re-sends flagged
possible duplicates.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from tests.helpers import ServerProcess, add_product, upload, wait_for_summary


class CuttableProxy:
    """127.0.0.1:<port> -> target; :meth:`cut` drops every connection and refuses new ones until :meth:`mend`."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.is_cut = False
        self.refused = 0
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closing = False
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_cut:
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._socks -= {src, dst}

    def cut(self) -> None:
        self.is_cut = True
        with self._lock:
            socks = list(self._socks)
        for s in socks:  # as a failing link would: the connections die
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def mend(self) -> None:
        self.is_cut = False

    def close(self) -> None:
        self._closing = True
        self.cut()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def proxy(postgres) -> Iterator[CuttableProxy]:
    p = CuttableProxy(postgres.port)
    yield p
    p.close()


def test_a_node_cut_from_postgresql_keeps_its_ftp_clients_and_resumes_without_loss(
        tmp_path: Path, pg_url: str, proxy: CuttableProxy, smsc_factory) -> None:
    rows, window = 3000, 20
    smsc = smsc_factory("happy", receipt_delay=0.05)
    root = tmp_path / "root"
    account = add_product(root, "acme", "acme-password", ledger_url=pg_url, dial_prefix="44")
    via_proxy = pg_url.replace(f":{pg_url.split(':')[2].split('/')[0]}/", f":{proxy.port}/")
    url = smsc.url(window=window, tps=400, receipt_timeout=30)
    server = ServerProcess(root, "--connector", url, ledger=via_proxy).start()
    try:
        client = server.ftp(account)
        name = "big.csv"
        upload(client, name, ("to,text\n" + "".join(f"07700{n:06d},partition {n}\n" for n in range(rows))).encode())
        assert smsc.wait_for(lambda s: len(s.submits()) >= 600, timeout=60)
        proxy.cut()
        cut_at = time.monotonic()
        sent_at_cut = len(smsc.submits())
        answered: list[float] = []
        while time.monotonic() - cut_at < 5.0:
            started = time.monotonic()
            client.voidcmd("NOOP")
            listing = client.nlst("/reports")
            answered.append(time.monotonic() - started)
            assert isinstance(listing, list)
            time.sleep(0.2)
        sent_during_cut = len(smsc.submits()) - sent_at_cut
        proxy.mend()
        # every FTP command during the cut answered at once
        assert len(answered) >= 10 and max(answered) < 2.0, answered
        # leasing stopped: at most what was already handed to the connector went out
        assert sent_during_cut <= 4 * window + 50, sent_during_cut
        summary = wait_for_summary(root, "acme", name, timeout=120)
        client.close()
    finally:
        server.stop()
    assert summary["state"] == "complete", summary
    with psycopg.connect(pg_url) as conn:
        statuses = dict(conn.execute("SELECT status, COUNT(*) FROM messages GROUP BY status").fetchall())
        flagged = {r[0] for r in conn.execute("SELECT destination FROM messages WHERE possible_duplicate = 1")}
    assert statuses == {"004": rows}, statuses
    by_dest: dict[str, int] = {}
    for submit in smsc.submits():
        by_dest[submit["dest"]] = by_dest.get(submit["dest"], 0) + 1
    assert len(by_dest) == rows  # nothing lost
    twice = {d for d, n in by_dest.items() if n > 1}
    assert twice <= flagged, sorted(twice - flagged)[:5]  # every re-send flagged
    assert len(twice) <= 4 * window  # bounded by what was in hand
    log = server.log()
    assert "connection to the PostgreSQL ledger was lost; connecting again" in log  # the cut was felt, and mended
    print(f"cut: {len(answered)} FTP round trips answered (max {max(answered) * 1000:.0f} ms), "
          f"{sent_during_cut} submits during the cut, {proxy.refused} connections refused, "
          f"{len(twice)} re-sent (all flagged), {len(flagged)} flagged")
