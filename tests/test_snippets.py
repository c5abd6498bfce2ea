"""Every Python snippet in README.md and docs/ stands on its own: its imports exist and it names
nothing it does not define (checked by ruff's pyflakes rules, then each import is resolved)."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNIPPETS = [
    pytest.param(match.group(1), id=f"{path.name}:{path.read_text()[: match.start()].count(chr(10)) + 1}")
    for path in DOCS
    for match in re.finditer(r"```python\n(.*?)```", path.read_text(), re.S)
]


def test_there_are_snippets_to_check() -> None:
    assert len(SNIPPETS) >= 8


@pytest.mark.parametrize("code", SNIPPETS)
def test_a_snippet_names_only_what_it_defines_or_imports(code: str, tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(code)
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():  # the dev extra's tool: make test runs this in the newest Airflow's venv
        pytest.skip("ruff is not installed in this virtualenv")
    # F704: the hook snippet awaits at top level, as a notebook or asyncio REPL does.
    checked = subprocess.run(
        [str(ruff), "check", "--isolated", "--select", "F", "--ignore", "F704", str(snippet)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout


@pytest.mark.parametrize("code", SNIPPETS)
def test_a_snippets_imports_exist(code: str) -> None:
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "redis":
                continue  # the receiver's own store, not a dependency of this provider
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(
                    f"{node.module}.{alias.name}"
                ), f"{node.module} has no {alias.name}"


DAG_SNIPPETS = [param for param in SNIPPETS if "with DAG(" in param.values[0]]


def load_dag(path: Path) -> Any:
    """A DAG file, parsed as the dag-processor parses one."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    bag = DagBag(str(path))
    assert bag.import_errors == {}, bag.import_errors  # e.g. an s3:// this install cannot open
    (dag,) = bag.dags.values()
    return dag


def test_the_docs_show_a_dag() -> None:
    assert DAG_SNIPPETS  # the README's main example is one


@pytest.mark.parametrize("code", DAG_SNIPPETS)
def test_a_dag_snippet_loads_on_the_demo_install(code: str, tmp_path: Path) -> None:
    path = tmp_path / "docs_snippet_dag.py"
    path.write_text(code)
    load_dag(path)


@pytest.mark.parametrize("code", DAG_SNIPPETS)
def test_a_dag_snippet_runs_manually_without_a_logical_date(
    code: str, tmp_path: Path, dag_bag: Any, magi_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manual run in Airflow 3 need not have a logical date: a prompt using {{ ds }} fails it.
    The snippet runs from the test DAG folder, serialized as the session's DAGs are (``dag_bag``)."""
    import os

    from tests.conftest import DAGS_FOLDER

    monkeypatch.setenv("MAGI_OUTPUT_DIR", str(tmp_path / "videos"))
    path = DAGS_FOLDER / "docs_snippet_dag.py"
    path.write_text(code)
    try:
        subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "reserialize"],
            check=True,
            capture_output=True,
            env=os.environ,
        )
        dag_run = load_dag(path).test(logical_date=None)
    finally:
        path.unlink()
    assert dag_run.state == "success"
    assert magi_conn.count("submit") == 1
    assert list((tmp_path / "videos").rglob("*.mp4"))
