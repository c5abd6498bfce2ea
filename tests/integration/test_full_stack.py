"""The provider on a real deployment: scheduler, triggerer, Celery worker, PostgreSQL, Redis.

Scenarios run in order on one deployment; each counts what the local WaveSpeed server saw.
"""

from __future__ import annotations

import io
import signal
from pathlib import Path
from typing import Any

import av
import pytest

from tests.integration.conftest import CANARY
from tests.integration.stack import AirflowStack

pytestmark = pytest.mark.integration


def submits(stack: AirflowStack, status: int | None = 200) -> int:
    return sum(
        1
        for r in stack.server_requests()
        if r["route"] == "submit" and (status is None or r["status"] == status)
    )


def task_log(stack: AirflowStack, dag_id: str) -> str:
    logs = stack.home.joinpath("logs")
    return "\n".join(
        p.read_text(errors="replace") for p in logs.rglob("*.log") if f"dag_id={dag_id}" in str(p)
    )


def states(stack: AirflowStack, dag_id: str, run_id: str) -> list[tuple[str, Any, str, int]]:
    return [
        (t["task_id"], t["map_index"], t["state"], t["try_number"])
        for t in stack.task_instances(dag_id, run_id)
    ]


def test_happy_path_across_processes(stack: AirflowStack, scenario: dict) -> None:
    run_id = stack.trigger("example_magi_text_to_video")
    assert stack.wait_for_run("example_magi_text_to_video", run_id, timeout=180) == "success"
    assert sorted(states(stack, "example_magi_text_to_video", run_id)) == [
        ("download", -1, "success", 1),
        ("generate", -1, "success", 1),
    ]
    (written,) = stack.xcom("example_magi_text_to_video", run_id, "download")
    with av.open(io.BytesIO(Path(written["path"]).read_bytes())) as container:
        assert sum(1 for _ in container.decode(video=0)) == 48
    logs = stack.log_text()
    assert "Pausing task as DEFERRED" in logs or "deferred" in logs.lower()
    assert f"Prediction {written['prediction_id']} is completed after" in logs  # polled by the triggerer

    # The download emitted an asset event: the consumer DAG ran on it.
    def consumer_done() -> bool:
        runs = stack.rest("GET", "/dags/example_magi_consume_videos/dagRuns")["dag_runs"]
        return any(r["state"] == "success" and r["run_type"] == "asset_triggered" for r in runs)

    stack.wait_until(consumer_done, 120, "the asset-triggered consumer DAG")
    assert submits(stack) == 1
    scenario["result"] = "ok"


def test_triggerer_killed_while_20_predictions_wait(stack: AirflowStack, scenario: dict) -> None:
    before = submits(stack)
    run_id = stack.trigger("magi_it_wait_many")

    def all_deferred() -> bool:
        tis = stack.task_instances("magi_it_wait_many", run_id)
        return len(tis) == 20 and all(t["state"] == "deferred" for t in tis)

    stack.wait_until(all_deferred, 120, "20 deferred generate tasks")
    stack.kill("triggerer", signal.SIGKILL)
    stack.start_component("triggerer")
    assert stack.wait_for_run("magi_it_wait_many", run_id, timeout=240) == "success"
    assert submits(stack) - before == 20
    assert {s[2:] for s in states(stack, "magi_it_wait_many", run_id)} == {("success", 1)}
    scenario["result"] = "ok"


def test_worker_killed_after_submit_reattaches(stack: AirflowStack, scenario: dict) -> None:
    before = submits(stack)
    run_id = stack.trigger("magi_it_worker_crash")
    stack.wait_until(lambda: submits(stack) - before == 1, 120, "the worker to submit")
    # Kill once the task has recorded the id (its "Submitted prediction" line follows the ledger
    # write); the instant between WaveSpeed's answer and that write is the next scenario's.
    stack.wait_until(
        lambda: "Submitted prediction" in task_log(stack, "magi_it_worker_crash"), 60, "the id to be stored"
    )
    stack.kill("worker", signal.SIGKILL)
    stack.start_component("worker")
    assert stack.wait_for_run("magi_it_worker_crash", run_id, timeout=240) == "success"
    assert states(stack, "magi_it_worker_crash", run_id) == [("generate", -1, "success", 2)]
    assert submits(stack) - before == 1  # the retry reattached instead of paying again
    # Still running when the retry starts: reattached; already done by then: reused.
    retry_log = task_log(stack, "magi_it_worker_crash")
    assert "Reattached to prediction" in retry_log or "Reusing completed prediction" in retry_log
    scenario["result"] = "ok"


def test_worker_killed_between_the_post_and_the_ledger_write_pays_once(
    stack: AirflowStack, scenario: dict
) -> None:
    before = submits(stack)
    run_id = stack.trigger("magi_it_killed_before_ledger_write")
    # The retry waits out the intent's settle time (30 s), then finds the prediction in the history.
    state = stack.wait_for_run("magi_it_killed_before_ledger_write", run_id, timeout=240)
    assert state == "success", task_log(stack, "magi_it_killed_before_ledger_write")[-4000:]
    assert states(stack, "magi_it_killed_before_ledger_write", run_id) == [("generate", -1, "success", 2)]
    assert submits(stack) - before == 1
    assert "the only prediction of" in task_log(stack, "magi_it_killed_before_ledger_write")
    scenario["result"] = "ok"


def test_a_manual_clear_reuses_the_paid_video(stack: AirflowStack, scenario: dict) -> None:
    before = submits(stack)
    run_id = stack.trigger("magi_it_cleared")
    assert stack.wait_for_run("magi_it_cleared", run_id, timeout=180) == "success"
    stack.rest(
        "POST",
        "/dags/magi_it_cleared/clearTaskInstances",
        json={"dag_run_id": run_id, "task_ids": ["generate"], "dry_run": False, "only_failed": False},
    )

    def ran_again() -> bool:
        return states(stack, "magi_it_cleared", run_id) == [("generate", -1, "success", 2)]

    stack.wait_until(ran_again, 180, "the cleared task to run again")
    assert submits(stack) - before == 1  # the clear reused the video it had paid for
    assert "Reusing completed prediction" in task_log(stack, "magi_it_cleared")
    scenario["result"] = "ok"


def test_a_mapped_list_reordered_by_a_clear_is_delivered_once_and_paid_again_at_most_once(
    stack: AirflowStack, scenario: dict
) -> None:
    """[X, Y] paid (single videos and one-item batches), then a clear of the whole run brings
    the list back as [Y, X], the map indexes running at once on the workers: each map index
    delivers a prediction of its own new input, never another's, and of the two map indexes of a
    shape at least one takes the other's (each releases before it looks), so at most one is paid
    again per shape, whatever the timing."""
    import json as json_

    from tests.integration.dags.magi_it_dags import REORDERED_X, REORDERED_Y

    dag_id = "magi_it_mapped_reordered"
    before = submits(stack)
    run_id = stack.trigger(dag_id)
    assert stack.wait_for_run(dag_id, run_id, timeout=300) == "success"
    assert submits(stack) - before == 4
    stack.rest(
        "POST",
        f"/dags/{dag_id}/clearTaskInstances",
        json={
            "dag_run_id": run_id,
            "task_ids": ["make_prompts"],
            "include_downstream": True,
            "dry_run": False,
            "only_failed": False,
        },
    )

    def ran_again() -> bool:
        found = states(stack, dag_id, run_id)
        return len(found) == 6 and all(state == "success" and tries == 2 for _, _, state, tries in found)

    stack.wait_until(ran_again, 300, "the cleared run to finish again")
    prompts = {
        r["prediction_id"]: r["json"]["prompt"]
        for r in stack.server_requests()
        if r["route"] == "submit" and r["status"] == 200 and r["prediction_id"] and r["json"]
    }
    videos = [stack.xcom(dag_id, run_id, "videos", map_index=i)["prediction_id"] for i in (0, 1)]
    batches = []
    for i in (0, 1):
        manifest = stack.xcom(dag_id, run_id, "batches", map_index=i)["manifest_path"]
        (line,) = [json_.loads(one) for one in Path(manifest).read_text().splitlines()]
        assert line["status"] == "completed" and Path(line["paths"][0]).stat().st_size > 0
        batches.append(line["prediction_id"])
    assert [prompts[p] for p in videos] == [REORDERED_Y, REORDERED_X]
    assert [prompts[p] for p in batches] == [f"batch {REORDERED_Y}", f"batch {REORDERED_X}"]
    assert len(set(videos)) == 2 and len(set(batches)) == 2  # never one prediction twice
    paid_again = submits(stack) - before - 4
    assert paid_again <= 2, paid_again  # at most one per shape
    scenario["result"] = f"ok, paid again: {paid_again} of 4"


def test_mapped_batch_under_rate_limits_and_5xx(stack: AirflowStack, scenario: dict) -> None:
    from tests.integration.dags.magi_it_dags import BATCH

    before_submits = submits(stack)
    before_outputs = sum(1 for r in stack.server_requests() if r["route"] == "output")
    # WaveSpeed's default account level: a low submit rate (429 with Retry-After above it); and
    # 5% of result polls answer 5xx.
    stack.set_faults(
        [
            {"route": "submit", "kind": "rate_limit", "limit": 3, "window": 1.0},
            {"route": "result", "kind": "status", "status": 503, "probability": 0.05},
        ]
    )
    try:
        run_id = stack.trigger("magi_it_batch")
        assert stack.wait_for_run("magi_it_batch", run_id, timeout=900) == "success"
    finally:
        stack.set_faults([])
    seen = stack.server_requests()
    assert submits(stack) - before_submits == BATCH  # exactly one accepted POST per prompt
    assert any(r["route"] == "submit" and r["status"] == 429 for r in seen)  # the limit did bite
    assert any(r["route"] == "result" and r["status"] == 503 for r in seen)
    paths = [stack.xcom("magi_it_batch", run_id, "download", map_index=i)[0]["path"] for i in range(BATCH)]
    assert len(set(paths)) == BATCH and all(Path(p).stat().st_size > 20000 for p in paths)
    outputs = sum(1 for r in seen if r["route"] == "output") - before_outputs
    assert outputs == BATCH  # none lost, none fetched twice
    scenario["result"] = "ok"


@pytest.mark.parametrize(
    ("dag_id", "message"),
    [
        ("magi_it_failed", "failed: GPU out of memory"),
        ("magi_it_bad_key", "check the API key (password) of Airflow connection 'magi_bad_key'"),
        ("magi_it_timeout", "did not finish within the timeout"),
    ],
    ids=["failed_prediction", "rejected_key", "never_finishes"],
)
def test_hard_failures_fail_once_with_the_reason(
    stack: AirflowStack, scenario: dict, dag_id: str, message: str
) -> None:
    before = submits(stack, status=None)
    run_id = stack.trigger(dag_id)
    assert stack.wait_for_run(dag_id, run_id, timeout=180) == "failed"
    assert states(stack, dag_id, run_id) == [("generate", -1, "failed", 1)]  # retries=2, none used
    assert message in task_log(stack, dag_id) or message in stack.log_text()
    assert submits(stack, status=None) - before == 1
    scenario["result"] = "ok"


def test_canary_key_is_nowhere(stack: AirflowStack, scenario: dict) -> None:
    import psycopg2

    leaks = []
    for path in stack.home.rglob("*"):
        if path.is_file() and path.suffix in (".log", ".out") and CANARY in path.read_text(errors="replace"):
            leaks.append(str(path))
    conn = psycopg2.connect(dbname=stack.database, host="127.0.0.1", user="postgres")
    try:
        with conn.cursor() as cursor:
            tables = [
                "xcom",
                "trigger",
                "task_instance",
                "rendered_task_instance_fields",
                "dag_run",
                "variable",
            ]
            cursor.execute("SELECT to_regclass('task_state_store') IS NOT NULL")
            if cursor.fetchone()[0]:  # Airflow 3.3+: where the ledger lives
                tables.append("task_state_store")
            for table in tables:
                cursor.execute(f"SELECT count(*) FROM {table} t WHERE t::text LIKE %s", (f"%{CANARY}%",))
                if cursor.fetchone()[0]:
                    leaks.append(f"table {table}")
            cursor.execute("SELECT count(*) FROM trigger")
            assert cursor.fetchone()[0] >= 0
            cursor.execute("SELECT count(*) FROM xcom")
            assert cursor.fetchone()[0] > 0  # there was something to search
    finally:
        conn.close()
    for dag_id in ("example_magi_text_to_video", "magi_it_worker_crash"):
        for run in stack.rest("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]:
            base = f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances"
            answers = [stack.rest("GET", base)]
            for ti in answers[0]["task_instances"]:
                answers.append(stack.rest("GET", f"{base}/{ti['task_id']}/xcomEntries"))
                answers.append(stack.rest("GET", f"{base}/{ti['task_id']}/-1"))
            if CANARY in repr(answers):
                leaks.append(f"REST answers for {dag_id}")
    assert leaks == []
    scenario["result"] = "ok"
