"""How every benchmark prints its result: a readable table, then one JSON line for bench/run_all.py."""

from __future__ import annotations

import json
from typing import Any


def print_result(result: dict[str, Any]) -> None:
    width = max(len(key) for key in result) + 2
    print(f"{'measure':<{width}}{'value':>14}")
    for key, value in result.items():
        print(f"{key:<{width}}{value!s:>14}")
    print(json.dumps(result))
