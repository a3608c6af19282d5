"""This node in the ledger's ``nodes`` table: its start, its heartbeat, its clean stop (DESIGN.md §12).

A serving gateway runs :class:`NodeHeartbeat` (a service: ``heartbeat``):
at start it writes the node's row (refusing to start when a live process
elsewhere already serves under the same node id), then every
:data:`HEARTBEAT_SECONDS` it writes what the node holds now (upstream binds,
leased messages, and whatever ``detail`` the gateway's parts report). The
other nodes, ``ftpbatch status`` and ``/status`` read those rows
(:func:`node_documents`): a node whose heartbeat is older than its
``lease_seconds`` is shown as down.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Mapping

from ..errors import ConfigError
from ..ledger import Ledger
from ..ledger.records import NodeState
from ..lifecycle import all_alive

log = logging.getLogger(__name__)

#: seconds between two heartbeats of a node
HEARTBEAT_SECONDS = 1.0
# A heartbeat younger than this many beats is a node still alive.
_ALIVE_BEATS = 3

HOST = os.uname().nodename if hasattr(os, "uname") else ""


class NodeHeartbeat:
    """Writes this node's row at start, refreshes it every beat, marks it stopped at the end."""

    name = "heartbeat"

    def __init__(
        self,
        ledger: Ledger,
        node_id: str,
        lease_seconds: float,
        *,
        ftp_address: Callable[[], str] = lambda: "",
        binds: Callable[[], int] = lambda: 0,
        leases: Callable[[], int] = lambda: 0,
        detail: Callable[[], Mapping[str, Any]] = dict,
        interval: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.ledger = ledger
        self.node_id = node_id
        self.lease_seconds = lease_seconds
        self.ftp_address = ftp_address
        self.binds = binds
        self.leases = leases
        self.detail = detail
        self.interval = interval
        self.beat_at = 0.0
        self.last_error = ""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        now = time.time()
        self._refuse_a_live_twin(now)
        self.ledger.node_started(self.node_id, HOST, os.getpid(), self.lease_seconds, now, self.ftp_address())
        self.beat_at = now
        self._thread = threading.Thread(target=self._run, name="node-heartbeat", daemon=True)
        self._thread.start()

    def _refuse_a_live_twin(self, now: float) -> None:
        """Another live process with this node id would have its leases taken by ours: refuse to start."""
        previous = self.ledger.get_node(self.node_id)
        if previous is None or previous.stopped_at is not None:
            return
        if previous.heartbeat_age(now) > _ALIVE_BEATS * self.interval:
            return  # not heard of for a while: it died (its leases are resumed at start)
        if previous.host == HOST and (previous.pid == os.getpid() or not _pid_alive(previous.pid)):
            return  # this machine's previous process (restarted, or killed a moment ago)
        raise ConfigError(
            f"node id {self.node_id!r} is in use by a running node (pid {previous.pid} on {previous.host}, "
            f"heartbeat {previous.heartbeat_age(now):.1f}s ago): give each node its own --node-id"
        )

    @property
    def healthy(self) -> bool:
        return all_alive([self._thread])

    def details(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "heartbeat_at": self.beat_at, **({"error": self.last_error} if self.last_error else {})}

    def beat(self) -> None:
        """One heartbeat now (the thread's, or a caller's that wants the row fresh at once)."""
        now = time.time()
        if not self.ledger.node_heartbeat(self.node_id, now, self.binds(), self.leases(), self.detail(),
                                          self.ftp_address() or None):
            # the row is gone (forgotten by an operator, a ledger restored): start it again
            self.ledger.node_started(self.node_id, HOST, os.getpid(), self.lease_seconds, now, self.ftp_address())
        self.beat_at = now

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.beat()
                if self.last_error:
                    log.info("node heartbeat written again")
                self.last_error = ""
            except Exception as exc:  # the ledger is unreachable: keep trying, say it once
                if not self.last_error:
                    log.warning("could not write the node heartbeat (%s); retrying", exc)
                self.last_error = str(exc) or type(exc).__name__

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5.0)
        try:
            self.ledger.node_stopped(self.node_id, time.time())
        except Exception:
            log.exception("could not mark node %s stopped in the ledger", self.node_id)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def node_document(node: NodeState, now: float) -> dict[str, Any]:
    """One node as ``ftpbatch status --json`` and ``/status`` show it."""
    return {
        "node_id": node.node_id,
        "state": node.state(now),
        "host": node.host,
        "pid": node.pid,
        "started_at": node.started_at,
        "heartbeat_at": node.heartbeat_at,
        "heartbeat_age": round(node.heartbeat_age(now), 3),
        "lease_seconds": node.lease_seconds,
        "ftp_address": node.ftp_address,
        "binds": node.binds,
        "leases": node.leases,
        "stopped_at": node.stopped_at,
        "detail": node.detail,
    }


def node_documents(ledger: Ledger, now: float | None = None) -> list[dict[str, Any]]:
    """Every node of the ledger, by node id."""
    at = time.time() if now is None else now
    return [node_document(n, at) for n in ledger.list_nodes()]


def render_nodes(nodes: list[dict[str, Any]]) -> list[str]:
    """The human lines of ``ftpbatch status`` about the nodes."""
    lines = [f"nodes ({len(nodes)}):" if nodes else "nodes: none has served on this ledger yet"]
    for n in nodes:
        state = str(n.get("state", "?"))
        age = float(n.get("heartbeat_age") or 0.0)
        what = "stopped" if state == "stopped" else f"last heartbeat {age:.1f}s ago"
        if state == "down":
            what += f" (over its {float(n.get('lease_seconds') or 0):g}s lease)"
        lines.append(
            f"  {n.get('node_id', '?'):<16} {state.upper() if state == 'down' else state:<7} {what}; "
            f"ftp {n.get('ftp_address') or '-'}, {n.get('binds', 0)} bind(s), {n.get('leases', 0)} lease(s) held; "
            f"pid {n.get('pid', '?')} on {n.get('host', '?')}"
        )
    return lines
