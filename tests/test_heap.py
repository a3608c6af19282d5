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


# What a process runs besides its own threads, once numpy, pandas and pyarrow are in (the
# report module imports all three): its task names on Linux, the main thread's included.
_TASKS_AFTER_IMPORT = (
    "import os, sys, ftpbatch.report.files\n"
    "tasks = sorted(open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task'))\n"
    "print(os.environ.get('OPENBLAS_NUM_THREADS'), ' '.join(tasks))\n"
)


def _tasks_after_import(**env: str) -> tuple[str, list[str]]:
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", _TASKS_AFTER_IMPORT], env={**base, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    setting, tasks = done.stdout.split(" ", 1)
    # pyarrow's allocator has a thread of its own that sleeps; everything else here is a worker
    return setting, [t for t in tasks.split() if t != "jemalloc_bg_thd"]


def test_numpy_starts_no_openblas_worker_thread_in_a_gateway_process():
    # The gateway does no linear algebra; OpenBLAS's worker spun for 0.1 s of CPU in each process.
    setting, tasks = _tasks_after_import()
    assert setting == "1"
    assert len(tasks) == 1, tasks  # the main thread alone


def test_an_operators_openblas_setting_wins():
    setting, tasks = _tasks_after_import(OPENBLAS_NUM_THREADS="2")
    assert setting == "2"
    assert len(tasks) == 2, tasks  # the main thread and OpenBLAS's worker: what the first test rules out
