"""Two real ``serve`` nodes on one PostgreSQL ledger and one data root share the sending (issue 14).

The test SMSC caps every bind (``--bind-tps``), as SMSCs cap an account's
binds, so one node alone would be held to its bind's rate: the work is
shared only if both nodes' binds carry it. The SMSC sends every receipt to
the receiver bound last, whichever connection submitted the message: node
B (started last) gets the receipts of node A's messages, and they must be
matched through the ledger's (account, upstream id) map.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import psycopg

from tests.helpers import Account, ServerProcess, add_product, upload, wait_for_summary
from tests.smsc.fixtures import SmscProcess

WINDOW = 20
ENV = {"FTPBATCH_DISPATCH_LEASE_SECONDS": "3"}


def start_nodes(root: Path, pg_url: str, smsc: SmscProcess, *, group_a: bool = False) -> tuple[ServerProcess, ServerProcess]:
    """Node A, then node B (so B is the receiver the SMSC sends receipts to), each with its own log."""
    url = smsc.url(window=WINDOW, receipt_timeout=60)
    nodes = []
    for name, group in (("a", group_a), ("b", False)):
        node = ServerProcess(root, "--node-id", f"node-{name}", "--connector", url, ledger=pg_url, env=ENV, group=group)
        node.log_path = root / f"node-{name}.log"
        nodes.append(node.start())
        # bound before the next starts: the bind order decides where receipts go
        assert smsc.wait_for(lambda s: len([b for b in s.events("bind") if b["status"] == "ESME_ROK"]) >= len(nodes), 10)
    return nodes[0], nodes[1]


def batch(rows: int, tag: str) -> bytes:
    return ("to,text\n" + "".join(f"07700{n:06d},{tag} {n}\n" for n in range(rows))).encode()


def ledger_rows(pg_url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(query).fetchall()


def submit_connections(smsc: SmscProcess) -> Counter[int]:
    return Counter(s["conn"] for s in smsc.submits() if s.get("answer") == "ok")


def test_two_nodes_share_a_batch_through_both_binds_and_either_serves_its_reports(
        tmp_path: Path, pg_url: str, smsc_factory: Callable[..., SmscProcess]) -> None:
    rows = 1200
    smsc = smsc_factory("happy", receipt_delay=0.05, bind_tps=100)  # one bind alone: 12 s for the batch
    root = tmp_path / "shared-root"
    account = add_product(root, "acme", "acme-password", ledger_url=pg_url, dial_prefix="44")
    a, b = start_nodes(root, pg_url, smsc)
    try:
        with a.ftp(account) as client:
            upload(client, "shared.csv", batch(rows, "shared"))
        started = time.monotonic()
        summary = wait_for_summary(root, "acme", "shared.csv", timeout=90)
        took = time.monotonic() - started
        # node B's FTP server lists (and serves) the reports of the batch uploaded to node A
        with b.ftp(account) as client:
            listed = client.nlst("/reports")
        names = {Path(n).name for n in listed}
        assert f"shared.csv.{summary['batch']}.summary.json" in names, names
        assert f"shared.csv.{summary['batch']}.report.csv" in names, names
    finally:
        b.stop()
        a.stop()
    assert summary["state"] == "complete" and summary["counts"]["delivered"] == rows, summary
    per_bind = submit_connections(smsc)
    assert sum(per_bind.values()) == rows  # each message sent once: nothing leased twice
    assert len(per_bind) == 2, per_bind
    # both binds carried the work (each alone is capped at 100/s)
    assert min(per_bind.values()) >= rows // 4, per_bind
    # every receipt went to node B's bind and matched its message, A's included
    assert ledger_rows(pg_url, "SELECT COUNT(*) FROM parked_receipts") == [(0,)]
    assert ledger_rows(pg_url, "SELECT status, COUNT(*) FROM messages GROUP BY status") == [("004", rows)]
    receivers = Counter(r["conn"] for r in smsc.events("receipt"))
    assert len(receivers) == 1 and sum(receivers.values()) == rows, receivers
    print(f"{rows} messages in {took:.1f}s through two binds capped at 100/s each: {dict(per_bind)}")


def test_a_node_killed_mid_batch_leaves_its_work_to_the_other(
        tmp_path: Path, pg_url: str, smsc_factory: Callable[..., SmscProcess]) -> None:
    rows = 2000
    smsc = smsc_factory("happy", receipt_delay=0.5, bind_tps=150)
    root = tmp_path / "shared-root"
    account: Account = add_product(root, "acme", "acme-password", ledger_url=pg_url, dial_prefix="44")
    a, b = start_nodes(root, pg_url, smsc, group_a=True)
    try:
        with a.ftp(account) as client:
            upload(client, "kill.csv", batch(rows, "kill"))
        conn_a = min(c["conn"] for c in smsc.events("bind") if c["status"] == "ESME_ROK")
        assert smsc.wait_for(lambda s: submit_connections(s)[conn_a] >= 300, timeout=60)
        a.kill_group()  # kill -9: no clean stop, its leases and its in-flight window die with it
        killed_after = submit_connections(smsc)[conn_a]
        summary = wait_for_summary(root, "acme", "kill.csv", timeout=120)
    finally:
        b.stop()
        a.kill_group()
    assert summary["state"] == "complete", summary
    assert ledger_rows(pg_url, "SELECT status, COUNT(*) FROM messages GROUP BY status") == [("004", rows)]
    submits = [s for s in smsc.submits() if s.get("answer") == "ok"]
    by_dest = Counter(s["dest"] for s in submits)
    assert len(by_dest) == rows  # nothing lost
    flagged = {r[0] for r in ledger_rows(pg_url, "SELECT destination FROM messages WHERE possible_duplicate = 1")}
    twice = {d for d, n in by_dest.items() if n > 1}
    assert twice <= flagged, sorted(twice - flagged)[:5]  # every re-send flagged
    assert len(twice) <= 2 * WINDOW, len(twice)  # bounded by what node A held in flight
    # Receipts: every one the SMSC sent (to node B's bind; some for messages node A submitted and
    # node B never sent) matched its message, except those for a submit whose answer died with
    # node A: that message was sent again (flagged), and its second receipt completed it.
    known = {r[0] for r in ledger_rows(pg_url, "SELECT upstream_id FROM messages")}
    receipts = smsc.events("receipt")
    a_submitted = {s["message_id"] for s in submits if s["conn"] == conn_a}
    unmatched = [r for r in receipts if r["id"] not in known]
    assert all(r["dest"] in flagged for r in unmatched), unmatched[:5]
    assert len(unmatched) <= 2 * WINDOW
    matched_from_a = [r for r in receipts if r["id"] in known and r["id"] in a_submitted]
    assert len(matched_from_a) >= killed_after - 2 * WINDOW
    assert {r["conn"] for r in matched_from_a} != {conn_a}  # some reached node B's bind
    print(f"node A killed after {killed_after} submits; {len(twice)} re-sent (all flagged), "
          f"{len(unmatched)} receipts of unrecorded submits, {len(matched_from_a)} of A's receipts matched")
