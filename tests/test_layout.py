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


# The steps that pay (issue "One way to pay"): an operator that calls one of these pays on its own,
# beside the paying core, and a rule learned there would be missing in it.
PAYING_STEPS = (
    "create_prediction",  # the POST
    "upload_media",  # a first frame's upload, part of a submit
    "check_spending",  # the floor and budget
    "spend_room",
    "batch_budget",
    "write_intent",  # the ledger's records of what is paid
    "write_paid",
    "write_by_inputs",
    "write_book",
    "read_book",
    "find_submit_candidates",  # the lost-answer look-up
    "decide(",
)


def test_every_operator_is_a_shape_under_400_lines_that_pays_only_through_the_paying_core() -> None:
    operators = sorted((PACKAGE / "operators").glob("*.py"))
    assert {path.name for path in operators} >= {"magi.py", "long_video.py", "batch.py"}
    too_long = {path.name: n for path in operators if (n := len(path.read_text().splitlines())) >= 400}
    assert too_long == {}
    paying_alone = {
        f"{path.name}:{number}: {step}"
        for path in operators
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for step in PAYING_STEPS
        if step in line.split("#")[0]
    }
    assert paying_alone == set()


def test_one_submit_loop_sends_every_paid_request() -> None:
    """Only paying/send.py calls the hook's create_prediction (the hook's own guarded method aside)."""
    callers = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if ".create_prediction(" in path.read_text() and "testing" not in path.parts
    }
    assert callers == {"paying/send.py"}
