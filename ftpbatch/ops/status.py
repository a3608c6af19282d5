"""``ftpbatch status``: what a running server is doing, and where it writes that down.

A serving gateway keeps ``<root>/status.json`` fresh (:class:`StatusBoard`,
every ``[metrics] status_interval`` seconds) and, with a metrics port, also
answers ``/status`` with the same document. ``ftpbatch status`` reads the
file, asks ``/status`` for a fresher copy when it can, and adds what the
ledger alone can tell, so it has something useful to say even when no
server runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..config import Settings
from ..ledger import Ledger
from ..lifecycle import all_alive
from .health import GatewayView
from .nodes import node_documents, render_nodes

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
# A status file not rewritten for this many intervals (plus a margin) belongs to a server that died.
_STALE_INTERVALS = 3


def ledger_status(ledger: Ledger) -> dict[str, Any]:
    """What the ledger alone can tell (cheap, index-only reads): also used when no server runs."""
    backlog = ledger.callback_backlog(time.time())
    return {
        "products": [
            {"name": p.name, "enabled": p.enabled, "callback": bool(p.callback_url)} for p in ledger.list_products()
        ],
        "batches_in_flight": ledger.batches_in_flight(),
        "queue": ledger.queue_depth(),
        "callbacks": {
            "pending": backlog.pending,
            "due": backlog.due,
            "delivered": backlog.delivered,
            "given_up": backlog.given_up,
        },
        "bans": [
            {"address": b.address, "until": b.banned_until, "failures": b.failures}
            for b in ledger.active_bans(time.time())
        ],
        "receipts": {**ledger.inbound.unmatched_receipts(),
                     **{f"queries_{k}": n for k, n in ledger.inbound.query_tally().items()}},
        # every node serving on this ledger (several machines share one PostgreSQL ledger)
        "nodes": node_documents(ledger),
    }


def gateway_status(gateway: GatewayView, started_at: float, metrics_url: str | None) -> dict[str, Any]:
    return {
        "server": {
            "version": __version__,
            "node_id": gateway.node_id,
            "pid": os.getpid(),
            "root": str(gateway.settings.root),
            "started_at": started_at,
            "updated_at": time.time(),
            "running": True,
            "ready": gateway.ready,
            "metrics_url": metrics_url,
            "node_host": _HOST,
            "status_interval": gateway.settings.metrics.status_interval,
        },
        "components": gateway.components(),
        **ledger_status(gateway.ledger),
    }


def write_status(root: Path, document: dict[str, Any]) -> None:
    """Write ``<root>/status.json`` atomically (readers never see half a file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{STATUS_FILE}.", suffix=".tmp", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, root / STATUS_FILE)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class StatusBoard:
    """Keeps ``<root>/status.json`` fresh while the gateway runs (a service: ``status-board``)."""

    name = "status-board"

    def __init__(self, gateway: GatewayView, interval: float, metrics_url: Callable[[], str | None] = lambda: None) -> None:
        self.gateway = gateway
        self.interval = interval
        self.metrics_url = metrics_url
        self.started_at = time.time()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> dict[str, Any]:
        return gateway_status(self.gateway, self.started_at, self.metrics_url())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="status-board", daemon=True)
        self._thread.start()

    @property
    def healthy(self) -> bool:
        return all_alive([self._thread])

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5.0)
        with contextlib.suppress(Exception):
            document = self.snapshot()
            document["server"].update(running=False, ready=False, stopped_at=time.time())
            write_status(self.gateway.settings.root, document)

    def _run(self) -> None:
        while True:
            try:
                write_status(self.gateway.settings.root, self.snapshot())
            except Exception:
                log.exception("could not write %s", STATUS_FILE)
            if self._stopping.wait(self.interval):
                return


# --- reading it back ------------------------------------------------------------
def read_status(settings: Settings) -> dict[str, Any]:
    """The freshest status there is: the server's own (``/status``, else status.json) plus the ledger's."""
    path = settings.root / STATUS_FILE
    document: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        document = json.loads(path.read_text(encoding="utf-8"))
    server = document.get("server") or {}
    running = bool(server.get("running")) and _alive(server)
    if running and server.get("metrics_url"):
        try:
            with urllib.request.urlopen(f"{server['metrics_url']}/status", timeout=2.0) as answer:
                document = json.loads(answer.read())
                server = document.get("server") or server
        except (OSError, ValueError):
            pass  # the file is a few seconds old at most; good enough
    if not running:
        server = {**server, "running": False, "ready": False}
    ledger = Ledger(settings.ledger_location)
    try:
        fresh = ledger_status(ledger)  # the ledger is the truth; the file may lag it by an interval
    finally:
        ledger.close()
    return {**document, **fresh, "server": server}


def _alive(server: dict[str, Any]) -> bool:
    """Whether the server that wrote this is still up (same machine: its pid; and a recent write)."""
    interval = float(server.get("status_interval") or 2.0)
    updated = float(server.get("updated_at") or 0.0)
    if time.time() - updated > _STALE_INTERVALS * interval + 5.0:
        return False
    pid = server.get("pid")
    if isinstance(pid, int) and server.get("node_host", _HOST) == _HOST:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, someone else's
    return True


_HOST = os.uname().nodename if hasattr(os, "uname") else ""


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def render_status(document: dict[str, Any]) -> str:
    """The human view of :func:`read_status`."""
    server = document.get("server") or {}
    lines = []
    if server.get("running"):
        ready = "ready" if server.get("ready") else "NOT READY"
        lines.append(
            f"ftpbatch {server.get('version', '?')} on {server.get('node_id', '?')}: running since "
            f"{_when(server.get('started_at'))} (pid {server.get('pid', '?')}), {ready}"
        )
        for name, state in (document.get("components") or {}).items():
            up = "up" if state.get("up") else "DOWN"
            detail = ""
            if name in ("ftp", "sftp") and state.get("address"):
                detail = f"{state['address']}, {state.get('sessions', 0)} open session(s)"
                if state.get("host_key"):
                    detail += f", host key {state['host_key']}"
            elif name == "connector":
                detail = f"{state.get('url', '')} ({state.get('detail', '')})"
            elif name == "callbacks":
                troubled = {p: s for p, s in (state.get("endpoints") or {}).items() if s != "ok"}
                detail = f"{state.get('in_flight', 0)} in flight" + (
                    "; " + ", ".join(f"{p} {s}" for p, s in sorted(troubled.items())) if troubled else ""
                )
            lines.append(f"  {name:<10} {up:<5} {detail}".rstrip())
        if server.get("metrics_url"):
            lines.append(f"  metrics    {server['metrics_url']}/metrics")
    elif server:
        lines.append(f"ftpbatch is not running (last seen {_when(server.get('stopped_at') or server.get('updated_at'))})")
    else:
        lines.append("ftpbatch is not running (no status.json: it has not served from this root yet)")
    lines += render_nodes(document.get("nodes") or [])
    products = document.get("products") or []
    names = [p["name"] + ("" if p.get("enabled", True) else " (disabled)") for p in products]
    lines.append(f"products ({len(products)}): {', '.join(names) if names else 'none'}")
    in_flight = document.get("batches_in_flight") or {}
    states = ", ".join(f"{state} {n}" for state, n in sorted(in_flight.items()))
    lines.append(f"batches in flight: {sum(in_flight.values())}" + (f" ({states})" if states else ""))
    queue = document.get("queue") or {}
    lines.append(
        f"queue: {queue.get('queued', 0):,} queued, {queue.get('scheduled', 0):,} scheduled, "
        f"{queue.get('awaiting_receipt', 0):,} awaiting a receipt"
    )
    rc = document.get("receipts") or {}
    lines.append(
        f"receipts: {rc.get('parked', 0):,} parked (no message yet), {rc.get('never_matched', 0):,} never matched; "
        f"query_sm {rc.get('queries_asked', 0):,} asked, {rc.get('queries_final', 0):,} answered final, "
        f"{rc.get('queries_open', 0):,} open"
    )
    cb = document.get("callbacks") or {}
    lines.append(
        f"callbacks: {cb.get('pending', 0):,} pending ({cb.get('due', 0):,} due now), "
        f"{cb.get('delivered', 0):,} delivered, {cb.get('given_up', 0):,} given up"
    )
    bans = document.get("bans") or []
    lines.append(f"banned addresses: {len(bans)}" + "".join(
        f"\n  {b['address']} until {_when(b['until'])} ({b['failures']} failed logins)" for b in bans
    ))
    return "\n".join(lines) + "\n"
