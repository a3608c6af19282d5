"""``ftpbatch status``: what the running server (and every node on its ledger) is doing.

Beside cli.py (which only wires it in); the document comes from
ops/status.py: this node's status.json or ``/status``, and the ledger's
own view (queue, callbacks, bans, and every node with its heartbeat).
"""

from __future__ import annotations

import json
import sys

from .config import Settings


def cmd_status(settings: Settings, as_json: bool) -> int:
    """Print the status; exit 0 only when this root's server runs and is ready."""
    from .ops.status import read_status, render_status

    document = read_status(settings)
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        sys.stdout.write(render_status(document))
    server = document.get("server", {})
    return 0 if server.get("running") and server.get("ready") else 1
