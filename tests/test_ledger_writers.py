"""Writers of one SQLite ledger in one process take turns instead of starving each other.

SQLite's own busy handler makes a waiting writer sleep, in steps of up to
100 ms, and a writer that commits and comes straight back usually gets the
lock again first: in the gateway, the dispatcher's sink waited 0.1-1.2 s at a
time behind the feeder, the reporter and the callbacks, each writing for a few
milliseconds, and a batch's counts stood still for seconds.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ftpbatch.ledger.db import SQLiteDatabase


def test_a_writer_waits_for_a_few_transactions_of_busy_neighbours_not_for_hundreds(tmp_path: Path):
    db = SQLiteDatabase(tmp_path / "ledger.db")
    with db.transaction() as tx:
        tx.execute("CREATE TABLE writes (writer INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        tx.execute("INSERT INTO writes VALUES (1, 0), (2, 0), (3, 0), (4, 0)")
    stop = threading.Event()

    def busy(writer: int) -> None:  # a short transaction, a short pause, again
        while not stop.is_set():
            with db.transaction() as tx:
                tx.execute("UPDATE writes SET n = n + 1 WHERE writer = ?", (writer,))
                time.sleep(0.002)
            time.sleep(0.001)

    def written_by_the_others(conn) -> int:
        return int(conn.execute("SELECT sum(n) FROM writes WHERE writer < 4").fetchone()[0])

    neighbours = [threading.Thread(target=busy, args=(writer,)) for writer in (1, 2, 3)]
    for thread in neighbours:
        thread.start()
    # How many of the neighbours' transactions commit while this writer waits for
    # its own: counted, not timed, so a slow machine slows both sides alike.
    overtaken: list[int] = []
    try:
        for _ in range(50):
            before = written_by_the_others(db.connection())
            with db.transaction() as tx:
                overtaken.append(written_by_the_others(tx) - before)
                tx.execute("UPDATE writes SET n = n + 1 WHERE writer = 4")
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in neighbours:
            thread.join()
        db.close()
    # Taking turns: the three that were there first, or a few more. With SQLite's busy
    # handler alone, the most seen here was 57-458 in every run.
    assert max(overtaken) <= 20, overtaken


def test_two_ledger_objects_on_one_file_share_the_turns(tmp_path: Path):
    """The gateway and a command run in it (or a test) may open the same file twice."""
    first, second = SQLiteDatabase(tmp_path / "ledger.db"), SQLiteDatabase(tmp_path / "." / "ledger.db")
    try:
        assert first._writers is second._writers
        other = SQLiteDatabase(tmp_path / "other.db")
        assert other._writers is not first._writers
        other.close()
    finally:
        first.close()
        second.close()
