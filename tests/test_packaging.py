"""#13 items 14-16: the package declares what really installs and what it imports, the test
command has no check that can fail by timing, and the connection and model are templated."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from airflow_provider_magi.operators.download import MagiDownloadOutputsOperator
from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator
from airflow_provider_magi.sensors.magi import MagiPredictionSensor
from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.helpers import run_dag, xcom

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [Requirement(text) for text in PROJECT["dependencies"]]
# Modules imported only when an extra is installed (lineage.py, by the OpenLineage listener).
_EXTRAS = PROJECT["optional-dependencies"]
# Modules that import only what an extra brings (each imports it lazily, with an install hint).
OPTIONAL = {
    "lineage.py": [Requirement(text) for text in _EXTRAS["openlineage"]],
    "media.py": [Requirement(text) for text in _EXTRAS["video"]],
    "clips.py": [Requirement(text) for text in _EXTRAS["video"]],  # the local server's clips
}
PYTHONS = [Version(f"3.{minor}") for minor in range(8, 20)]


def test_the_oldest_python_we_admit_installs_every_dependency() -> None:
    """pip on the oldest admitted Python must find the dependencies, not fail on one of them.

    Only the floor is judged: requires-python carries no cap (a cap would block installs on a
    future Python that Airflow comes to support), and newer Pythons are served by newer releases
    of Airflow than the one installed here.
    """
    ours = SpecifierSet(PROJECT["requires-python"])
    oldest = min(python for python in PYTHONS if python in ours)
    for requirement in REQUIREMENTS:
        theirs = importlib.metadata.metadata(requirement.name).get("Requires-Python")
        if theirs:
            assert oldest in SpecifierSet(theirs), (
                f"requires-python {ours} admits Python {oldest}, which {requirement.name} "
                f"{importlib.metadata.version(requirement.name)} refuses ({theirs})"
            )


def test_python_classifiers_match_requires_python() -> None:
    ours = SpecifierSet(PROJECT["requires-python"])
    claimed = [
        Version(c.rsplit(":: ", 1)[1])
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert claimed, "no Python version classifiers"
    assert all(version in ours for version in claimed)
    running = Version(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert running in claimed, f"the tests run on Python {running}, which the classifiers do not list"


def test_project_urls_are_declared() -> None:
    urls = PROJECT.get("urls", {})
    assert {"Source", "Changelog", "Documentation"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())


def imported_distributions() -> dict[str, set[str]]:
    """Each distribution the package's code imports directly, with the modules that import it."""
    stdlib = set(sys.stdlib_module_names)
    owners = importlib.metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    for path in (ROOT / "airflow_provider_magi").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in stdlib or top == "airflow_provider_magi":
                    continue
                if name.startswith("airflow.providers.common.compat"):
                    dists = ["apache-airflow-providers-common-compat"]
                elif name.startswith("airflow.providers.openlineage"):
                    dists = ["apache-airflow-providers-openlineage"]
                elif top == "airflow":
                    dists = ["apache-airflow"]
                else:
                    dists = owners.get(top, [top])
                for dist in dists:
                    found.setdefault(dist.lower(), set()).add(path.name)
    return found


def test_every_directly_imported_distribution_is_declared_with_a_floor() -> None:
    declared = {requirement.name.lower(): requirement for requirement in REQUIREMENTS}
    for dist, modules in imported_distributions().items():
        extras = {r.name.lower(): r for module in modules for r in OPTIONAL.get(module, [])}
        if dist not in declared and dist in extras and all(m in OPTIONAL for m in modules):
            declared[dist] = extras[dist]  # imported only by a module of an extra
        assert dist in declared, f"{sorted(modules)} import {dist}, which pyproject.toml does not declare"
        assert any(spec.operator in (">=", "~=", "==") for spec in declared[dist].specifier), (
            f"{dist} is declared without a lower bound"
        )


def test_urllib3_floor_has_what_the_hook_imports() -> None:
    # NameResolutionError, which the hook imports to tell "never sent" from "maybe sent", first
    # shipped in urllib3 2.0; 1.26 lacks it.
    (urllib3,) = [r for r in REQUIREMENTS if r.name == "urllib3"]
    assert all(Version("1.26.20") not in SpecifierSet(str(s)) for s in urllib3.specifier)
    from urllib3.exceptions import NameResolutionError  # noqa: F401


def test_no_check_in_the_test_command_can_fail_by_timing() -> None:
    """``cmd | grep -q`` under pipefail fails when grep exits before cmd has written everything."""
    scripts = [
        ROOT / ".ci" / "run",
        ROOT / "Makefile",
        *(ROOT / "ci").glob("*.sh"),
        *(ROOT / "scripts").glob("*.sh"),
    ]
    early_exit = re.compile(r"\|\s*(grep\s+(-\w*[qlm]\w*\b|--quiet|--max-count)|head\b)")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in scripts
        if path.exists()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if early_exit.search(line) and not line.lstrip().startswith("#")
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("operator", "fields"),
    [
        (MagiGenerateVideoOperator, {"magi_conn_id", "model"}),
        (MagiPredictionSensor, {"magi_conn_id"}),
        (MagiDownloadOutputsOperator, {"magi_conn_id"}),
    ],
)
def test_connection_and_model_are_template_fields(operator: type, fields: set[str]) -> None:
    assert fields <= set(operator.template_fields)


def test_templated_connection_and_model_render_in_a_dag_run(
    dag_bag, magi_conn: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setenv("AIRFLOW_CONN_MAGI_FROM_PARAMS", os.environ["AIRFLOW_CONN_MAGI_DEFAULT"])
    monkeypatch.delenv("AIRFLOW_CONN_MAGI_DEFAULT")
    dag_run = run_dag(
        dag_bag,
        "magi_test_templated_connection_and_model",
        conn="magi_from_params",
        model="wavespeed-ai/magi-1-24b",
    )
    assert dag_run.state == "success"
    (prediction,) = magi_conn.app.predictions.values()
    assert prediction.model == "wavespeed-ai/magi-1-24b"
    assert len(xcom(dag_run, "download")) == 1
    assert magi_conn.count("output") == 1


def test_a_templated_model_that_is_not_a_model_id_is_refused_before_any_request(
    dag_bag, magi_conn: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(
        dag_bag, "magi_test_templated_connection_and_model", conn="magi_default", model="../../etc"
    )
    assert dag_run.state == "failed"
    assert magi_conn.requests == []


def test_the_long_description_has_only_absolute_links() -> None:
    """PyPI shows README.md as the project's page, where a relative link or image is broken."""
    readme = (ROOT / "README.md").read_text()
    relative = [
        target
        for target in re.findall(r"\]\(([^)\s]+)\)", readme)
        if not target.startswith(("https://", "http://", "#", "mailto:"))
    ]
    assert relative == []
