"""The package's rooms import each other one way (DESIGN §11).

A room is a sub-package of ``ftpbatch`` (ftp, intake, ledger, ops, ...) or a
top-level module (service, cli, config, ...). Every import counts, also the
ones under ``if TYPE_CHECKING:`` and inside functions: a circle hidden from
the interpreter still ties the rooms together for whoever changes them.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import ftpbatch

PACKAGE = Path(ftpbatch.__file__).parent

# ledger/ is the bottom of the pipeline: it may use the plain parts below it
# (models, codes, errors, logs, ...) but no stage that is built on it.
ABOVE_THE_LEDGER = {"access", "ftp", "sftp", "cli_ssh", "intake", "parse", "rules", "dispatch", "report", "ops", "security", "service", "cli"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """Every ftpbatch module this file imports, wherever the import statement sits."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_of(path.read_text(encoding="utf-8"), package)


def _imports_of(text: str, package: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # "from . import x" names a module when x is one, else an attribute of the package
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if _is_module(candidate) else source)
    return {name for name in found if name == "ftpbatch" or name.startswith("ftpbatch.")}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # the package itself (its __version__) is no room


def room_graph() -> dict[str, dict[str, list[str]]]:
    """room -> room it imports -> the module-level imports that make the arrow."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _module_name(path)
        for target in _imports(path):
            a, b = _room(source), _room(target)
            if a is not None and b is not None and a != b:
                graph[a][b].append(f"{source} -> {target}")
    return graph


def _circles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected groups of more than one room (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for room in sorted(graph):
        if room not in index:
            visit(room)
    return groups


def test_the_rooms_of_the_package_import_each_other_one_way() -> None:
    graph = room_graph()
    assert "ledger" in graph and "service" in graph  # the parse found the package
    problems = []
    for group in _circles(graph):
        arrows = [
            f"    {a} -> {b}: {', '.join(graph[a][b][:3])}" for a in group for b in group if b in graph.get(a, {})
        ]
        problems.append(f"import circle between rooms {', '.join(group)}:\n" + "\n".join(arrows))
    assert not problems, "\n".join(problems)


def test_the_ledger_imports_no_stage_above_it() -> None:
    upward = {b: arrows for b, arrows in room_graph()["ledger"].items() if b in ABOVE_THE_LEDGER}
    assert not upward, "ledger/ imports a stage above it: " + "; ".join(
        f"{b} ({', '.join(arrows[:3])})" for b, arrows in sorted(upward.items())
    )


def test_the_graph_sees_type_only_and_function_level_imports() -> None:
    """The parser itself: an import under TYPE_CHECKING or in a function body is an arrow too."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..service import Gateway\n"
        "def f():\n    from ..ops import status\n"
        "from .. import __version__\n"
        "import ftpbatch.ledger.db\n"
    )
    found = _imports_of(source, "ftpbatch.report")
    assert found == {"ftpbatch.service", "ftpbatch.ops.status", "ftpbatch", "ftpbatch.ledger.db"}


#: A module past this many lines does more than one thing (issue 13's bound).
MAX_MODULE_LINES = 600


def test_no_module_is_over_the_size_bound() -> None:
    sizes = {p.relative_to(PACKAGE.parent).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert len(sizes) > 50  # the walk found the package
    over = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them by what they do): {over}"
