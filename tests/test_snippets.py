"""Every Python snippet in README.md and docs/ stands on its own: its imports exist and it names
nothing it does not define (checked by ruff's pyflakes rules, then each import is resolved)."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

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
