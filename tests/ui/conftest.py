"""A real api-server (simple auth manager, everyone admin) and headless Debian Chromium.

The deployment is the integration tests' own (PostgreSQL, Redis, Celery), with connection
testing enabled for these tests only. ``MAGI_SCREENSHOTS`` names a folder for the pictures
(``make screenshots`` points it at docs/images); otherwise they go to a temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack import ROOT, AirflowStack, require_services

CANARY = "canary-ui-key-7f3c2a91"
POOL = "magi"
# The flags that keep Chromium off the network (this machine has none) and out of a sandbox
# that needs privileges a CI container does not give.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    found = os.environ.get("MAGI_CHROMIUM") or shutil.which("chromium")
    if found:
        return found
    message = "Debian's chromium is not installed: `make browser` installs it (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="package")
def ui_stack() -> Iterator[AirflowStack]:
    require_services()
    dag_files = [
        ROOT / "example_dags" / "example_magi_text_to_video.py",
        ROOT / "example_dags" / "example_magi_daily.py",
    ]
    deployment = AirflowStack(
        dag_files,
        api_key=CANARY,
        worker_concurrency=4,
        extra_env={"AIRFLOW__CORE__TEST_CONNECTION": "Enabled", "MAGI_POOL": POOL},
    )
    try:
        deployment.start()
        deployment.add_connection("magi_default", CANARY)
        deployment.rest(
            "POST",
            "/pools",
            json={"name": POOL, "slots": 2, "description": "MAGI-1 generations", "include_deferred": True},
        )
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture(scope="package")
def browser(ui_stack: AirflowStack) -> Iterator[Any]:
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, ui_stack: AirflowStack) -> Iterator[Any]:
    from playwright.sync_api import expect

    # Generous waits: the UI loads its translations lazily, and this machine is shared.
    expect.set_options(timeout=30_000)
    context = browser.new_context(viewport={"width": 1280, "height": 720}, base_url=ui_stack.api)
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="package")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("MAGI_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_api_answers(page: Any) -> list[str]:
    """Every answer the browser gets from the api-server from now on, to hunt the key in."""
    seen: list[str] = []

    def keep(response: Any) -> None:
        if "/api/" in response.url or "/ui/" in response.url:
            with contextlib.suppress(Exception):  # a redirect has no body to read
                seen.append(str(response.text()))

    page.on("response", keep)
    return seen
