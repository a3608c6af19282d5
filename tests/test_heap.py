"""The gateway's collector pace (ftpbatch/heap.py)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

from ftpbatch.heap import YOUNG_COLLECTION_EVERY, collect_less_often


def test_young_collections_run_less_often_and_the_older_generations_keep_their_pace():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 7, 9)
        collect_less_often()
        assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, 7, 9)
    finally:
        gc.set_threshold(*before)


def test_the_report_helper_process_collects_at_the_gateway_pace(tmp_path):
    # the helper's main sets the pace before it serves: a child that only reads a closed stdin
    code = (
        "import gc, sys, ftpbatch.report.render_process as rp\n"
        "rp.serve = lambda *a, **k: print(gc.get_threshold()[0])\n"
        "rp.main([sys.argv[1]])\n"
    )
    env = {**os.environ, "FTPBATCH_REPORT_LEDGER": str(tmp_path / "ledger.db")}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(YOUNG_COLLECTION_EVERY)
