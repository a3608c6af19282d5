"""Nodes: the gateway processes serving on one ledger, and their heartbeats (DESIGN.md §12).

Each ``serve`` writes its row at start (:meth:`NodeStore.node_started`) and
refreshes it every second or so (:meth:`NodeStore.node_heartbeat`) with what
it holds: upstream binds, leased messages, and whatever else its parts put
in ``detail``. A node whose heartbeat is older than its ``lease_seconds`` is
*down*: by then every message lease it took has expired too, and the other
nodes take those messages again (ledger/leases.py). A clean stop says so
(:meth:`NodeStore.node_stopped`). Other stores and stages ask
:meth:`NodeStore.live_nodes` which node ids are alive.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from .db import Database, Row
from .records import NodeState

_COLUMNS = (
    "node_id, host, pid, started_at, heartbeat_at, lease_seconds, ftp_address, binds, leases, stopped_at, detail"
)


def _node(row: Row) -> NodeState:
    try:
        detail = json.loads(row[10] or "{}")
    except ValueError:
        detail = {}
    return NodeState(
        node_id=row[0], host=row[1], pid=int(row[2]), started_at=float(row[3]), heartbeat_at=float(row[4]),
        lease_seconds=float(row[5]), ftp_address=row[6], binds=int(row[7]), leases=int(row[8]),
        stopped_at=None if row[9] is None else float(row[9]), detail=detail if isinstance(detail, dict) else {},
    )


class NodeStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def node_started(self, node_id: str, host: str, pid: int, lease_seconds: float, now: float,
                     ftp_address: str = "") -> None:
        """``node_id`` starts (or starts again) now: its row says so, holding nothing yet."""
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO nodes (node_id, host, pid, started_at, heartbeat_at, lease_seconds, ftp_address, "
                "binds, leases, detail, stopped_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, '{}', NULL) "
                "ON CONFLICT (node_id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
                "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, "
                "lease_seconds = excluded.lease_seconds, ftp_address = excluded.ftp_address, binds = 0, leases = 0, "
                "detail = '{}', stopped_at = NULL",
                (node_id, host, pid, now, now, lease_seconds, ftp_address),
            )

    def node_heartbeat(self, node_id: str, now: float, binds: int, leases: int,
                       detail: Mapping[str, Any] | None = None, ftp_address: str | None = None) -> bool:
        """The node is alive at ``now`` and holds this much; False if it has no row (start it again)."""
        with self.db.transaction() as tx:
            cur = tx.execute(
                "UPDATE nodes SET heartbeat_at = ?, binds = ?, leases = ?, detail = ?, "
                "ftp_address = COALESCE(?, ftp_address), stopped_at = NULL WHERE node_id = ?",
                (now, binds, leases, json.dumps(dict(detail or {}), sort_keys=True), ftp_address, node_id),
            )
        return cur.rowcount > 0

    def node_stopped(self, node_id: str, now: float) -> None:
        """A clean stop: the node holds nothing any more."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE nodes SET stopped_at = ?, heartbeat_at = ?, binds = 0, leases = 0, detail = '{}' "
                "WHERE node_id = ?",
                (now, now, node_id),
            )

    def get_node(self, node_id: str) -> NodeState | None:
        row = self.db.connection().execute(f"SELECT {_COLUMNS} FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
        return _node(row) if row else None

    def list_nodes(self) -> list[NodeState]:
        """Every node that ever served on this ledger (until forgotten), by node id."""
        rows = self.db.connection().execute(f"SELECT {_COLUMNS} FROM nodes ORDER BY node_id").fetchall()
        return [_node(r) for r in rows]

    def live_nodes(self, now: float) -> list[str]:
        """The ids of the nodes up at ``now``: not stopped, heartbeat younger than their lease_seconds."""
        rows = self.db.connection().execute(
            "SELECT node_id FROM nodes WHERE stopped_at IS NULL AND heartbeat_at >= ? - lease_seconds ORDER BY node_id",
            (now,),
        ).fetchall()
        return [r[0] for r in rows]

    def forget_node(self, node_id: str) -> bool:
        """Remove a node's row (a node retired for good); False if there was none."""
        with self.db.transaction() as tx:
            cur = tx.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,))
        return cur.rowcount > 0
