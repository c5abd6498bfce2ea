"""A DAG run seen in the UI: the grid, the task's extra link, its log and rendered prompt."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack import AirflowStack
from tests.ui.conftest import CANARY, POOL, record_api_answers

pytestmark = pytest.mark.integration

TEXT_TO_VIDEO = "example_magi_text_to_video"
DAILY = "example_magi_daily"


def test_task_page_links_the_prediction_and_logs_its_progress(
    page: Any, ui_stack: AirflowStack, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    run_id = ui_stack.trigger(TEXT_TO_VIDEO)
    assert ui_stack.wait_for_run(TEXT_TO_VIDEO, run_id, timeout=180) == "success"
    prediction_id = ui_stack.xcom(TEXT_TO_VIDEO, run_id, "generate", key="prediction_id")
    answers = record_api_answers(page)

    page.goto(f"/dags/{TEXT_TO_VIDEO}/runs/{run_id}/tasks/generate")
    expect(page.get_by_text(f"Submitted prediction {prediction_id}")).to_be_visible()
    # Each status change once, with the time spent so far; the worker logs the first, the
    # triggerer the rest.
    changes = page.get_by_text(re.compile(rf"^Prediction {prediction_id} is \w+ after \d+s"))
    expect(changes.first).to_be_visible()
    statuses = [re.search(r" is (\w+) after", text).group(1) for text in changes.all_inner_texts()]  # type: ignore[union-attr]
    assert statuses[0] in ("created", "processing") and statuses[-1] == "completed", statuses
    assert len(statuses) == len(set(statuses)), statuses
    expect(page.get_by_text(re.compile(r"completed after \d+s \(inference [\d.]+s\)"))).to_be_visible()
    # What the video cost, read from WaveSpeed's billing when the task resumed (README's picture).
    expect(page.get_by_text(re.compile(rf"Prediction {prediction_id} cost \$\d+\.\d\d"))).to_be_visible()
    page.screenshot(path=screenshots / "task-log.png")
    assert CANARY not in page.content()

    page.get_by_role("link", name="Details", exact=True).click()
    link = page.get_by_role("link", name="WaveSpeed prediction")
    # The local server's page for the prediction: the API's result URL answers a browser 401.
    expect(link).to_have_attribute("href", f"{ui_stack.wavespeed}/_testing/predictions/{prediction_id}")
    assert CANARY not in page.content()
    assert answers and not any(CANARY in answer for answer in answers)


def test_daily_runs_fill_the_grid_with_dated_prompts(
    page: Any, ui_stack: AirflowStack, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    ui_stack.wait_for_dag(DAILY)  # unpaused on arrival: the scheduler adds the latest daily run itself
    dates = ["2026-11-24", "2026-11-25", "2026-11-26"]
    created = [
        ui_stack.rest("POST", f"/dags/{DAILY}/dagRuns", json={"logical_date": f"{day}T00:00:00Z"})
        for day in dates
    ]
    run_ids = [run["dag_run_id"] for run in created]
    runs: list[dict[str, Any]] = []

    def all_finished() -> bool:
        runs[:] = ui_stack.rest("GET", f"/dags/{DAILY}/dagRuns")["dag_runs"]
        return len(runs) == 4 and all(run["state"] in ("success", "failed") for run in runs)

    ui_stack.wait_until(all_finished, timeout=300, what="four daily runs to finish")
    assert [run["state"] for run in runs] == ["success"] * 4, [(r["dag_run_id"], r["state"]) for r in runs]

    page.goto(f"/dags/{DAILY}/runs")
    expect(page.get_by_text("4 Dag Runs")).to_be_visible()
    expect(page.locator(f"a[href^='/dags/{DAILY}/runs/'][href$='/tasks/generate']")).to_have_count(4)
    expect(page.locator(f"a[href^='/dags/{DAILY}/runs/'][href$='/tasks/download']")).to_have_count(4)
    page.mouse.move(316, 600)  # widen the grid panel so every run shows in the picture
    page.mouse.down()
    page.mouse.move(500, 600, steps=10)
    page.mouse.up()
    page.screenshot(path=screenshots / "dag-grid.png")

    page.goto(f"/dags/{DAILY}/runs/{run_ids[1]}/tasks/generate")
    page.get_by_role("link", name="Rendered Templates", exact=True).click()
    expect(page.get_by_text(f"Morning over a harbour town on {dates[1]}:", exact=False)).to_be_visible()
    page.get_by_role("link", name="Details", exact=True).click()
    pool_row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="Pool", exact=True))
    expect(pool_row).to_contain_text(POOL)
