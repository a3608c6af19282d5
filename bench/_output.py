"""How every benchmark prints its result: a readable table, then one JSON line for bench/run_all.py."""

from __future__ import annotations

import compileall
import json
from pathlib import Path
from typing import Any


def compile_package() -> None:
    """Byte-compile ftpbatch before timing processes that start it.

    An installed package has its bytecode (pip compiles it); a checkout run
    with PYTHONDONTWRITEBYTECODE set (as on this project's machine) would
    compile every module again at each start, 0.3-0.5 s of CPU a process that
    no installation pays. compileall writes it explicitly, whatever the variable.
    """
    compileall.compile_dir(Path(__file__).resolve().parent.parent / "ftpbatch", quiet=1)


def print_result(result: dict[str, Any]) -> None:
    width = max(len(key) for key in result) + 2
    print(f"{'measure':<{width}}{'value':>14}")
    for key, value in result.items():
        print(f"{key:<{width}}{value!s:>14}")
    print(json.dumps(result))
