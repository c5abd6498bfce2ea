"""The house reads top-down: no import circle in the package (type-only and lazy imports counted),
and the hook stays a facade."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "airflow_provider_magi"


def import_graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE.name):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else str(node.module))
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.startswith(PACKAGE.name)}
        graph[name] = {t for t in targets if t in modules and t not in (name, PACKAGE.name)}
    return graph


def test_no_module_imports_back_into_one_that_imports_it() -> None:
    graph = import_graph()
    assert "airflow_provider_magi.hooks.magi" in graph  # the graph is the real package
    circles = []

    def walk(path: list[str]) -> None:
        for target in sorted(graph[path[-1]]):
            if target in path:
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            else:
                walk([*path, target])

    for module in sorted(graph):
        walk([module])
    assert circles == []


def test_the_hook_is_a_facade_under_400_lines() -> None:
    assert len((PACKAGE / "hooks" / "magi.py").read_text().splitlines()) < 400
