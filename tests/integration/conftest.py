"""The deployment the integration scenarios share, and the table of results printed at the end."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.stack import ROOT, AirflowStack, require_services

CANARY = "canary-it-key-4d1b7e9a"
RESULTS: list[tuple[str, str, float]] = []


@pytest.fixture(scope="package")  # torn down before tests/ui starts its own deployment
def stack() -> Iterator[AirflowStack]:
    require_services()
    dag_files = [
        ROOT / "example_dags" / "example_magi_text_to_video.py",
        ROOT / "example_dags" / "example_magi_consume_videos.py",
        ROOT / "tests" / "integration" / "dags" / "magi_it_dags.py",
    ]
    deployment = AirflowStack(
        dag_files, api_key=CANARY, worker_concurrency=int(os.environ.get("MAGI_IT_WORKERS", "8"))
    )
    started = time.monotonic()
    try:
        deployment.start()
        deployment.add_connection("magi_default", CANARY)
        deployment.add_connection("magi_bad_key", CANARY[::-1])
        RESULTS.append(("stack start (6 processes, fresh PostgreSQL DB)", "ok", time.monotonic() - started))
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Times a scenario and records its outcome for the summary table."""
    started = time.monotonic()
    outcome = {"result": "failed"}
    yield outcome
    RESULTS.append((request.node.name.removeprefix("test_"), outcome["result"], time.monotonic() - started))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    terminalreporter.section("full-stack scenarios")
    width = max(len(name) for name, _, _ in RESULTS)
    for name, result, seconds in RESULTS:
        terminalreporter.write_line(f"{name:<{width}}  {result:<8}  {seconds:6.1f}s")
