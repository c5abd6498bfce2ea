"""#13 items 1-3: a wait ends at its deadline, whatever the server asks and whichever limit is
sooner, and a sensor's soft_fail means the same thing in every mode."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator
from airflow_provider_magi.sensors.magi import MagiPredictionSensor
from airflow_provider_magi.testing import Fault, LocalWaveSpeedServer
from airflow_provider_magi.triggers.magi import MagiPredictionTrigger
from tests.helpers import CANARY_KEY, run_dag, run_triggers, task_instance
from tests.hostile import HostileServer, Seen, http_answer


def conn_json(base_url: str, **extra: object) -> str:
    return json.dumps({"conn_type": "magi", "host": base_url, "password": CANARY_KEY, "extra": extra})


@pytest.mark.parametrize("retry_after", ["3600", "Fri, 31 Dec 2100 23:59:59 GMT", "1e999", "nan"])
def test_a_429_asking_for_hours_cannot_carry_triggers_past_their_deadline(
    monkeypatch: pytest.MonkeyPatch, retry_after: str
) -> None:
    def respond(seen: Seen) -> bytes:
        body = b'{"code": 429, "message": "Too many requests", "data": null}'
        return http_answer(429, body, {"Content-Type": "application/json", "Retry-After": retry_after})

    with HostileServer(respond) as server:
        # The user allows long waits; the deadline must still win.
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url, max_retry_wait=3600))
        deadline = time.time() + 1.0
        # Before the fix the triggers slept on the server's hour: only this guard ended the test.
        events = run_triggers(
            [MagiPredictionTrigger(pid, poll_interval=0.1, deadline=deadline) for pid in ("p1", "p2")],
            timeout=60,
        )
    assert [[event["status"] for event in trigger_events] for trigger_events in events] == [
        ["timeout"],
        ["timeout"],
    ]
    assert server.seen, "the triggers polled"


def test_the_hold_after_a_429_is_capped_like_any_other_wait(magi_conn: LocalWaveSpeedServer) -> None:
    from airflow_provider_magi.hooks.magi import MagiHook

    prediction_id = MagiHook().create_prediction({"prompt": "x [[duration: 0.2]]"}).id
    # One 429 asking for an hour; the test connection caps waits at max_retry_wait=0.2 s.
    magi_conn.set_faults([Fault(route="result", kind="status", status=429, retry_after=3600, times=1)])
    (events,) = run_triggers([MagiPredictionTrigger(prediction_id, poll_interval=0.1)], timeout=60)
    assert [event["status"] for event in events] == ["success"]
    assert magi_conn.count("result", status=429) == 1


def test_deferral_carries_what_is_left_of_execution_timeout() -> None:
    from airflow.providers.common.compat.sdk import TaskDeferred

    operator = MagiGenerateVideoOperator(
        task_id="t", prompt="x", timeout=3600, execution_timeout=timedelta(seconds=30), deferrable=True
    )
    from airflow_provider_magi.paying.deadline import XCOM_TRY_STARTED

    # The try's execute began 10 s ago (so recorded); the task instance's start_date is a day
    # back (a try queued behind a loaded worker): only the execute's start counts.
    started = time.time() - 10
    ti = SimpleNamespace(
        task_id="t",
        map_index=-1,
        try_number=1,
        start_date=datetime.now(UTC) - timedelta(days=1),
        xcom_pull=lambda **_: {"try_number": 1, "started": started},
        xcom_push=lambda **_: pytest.fail(f"{XCOM_TRY_STARTED} was recorded already"),
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.defer_to_trigger(operator._waiter("p1"), {"ti": ti})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    # 30 s from the try's execute, not from now nor from start_date, and before the own hour.
    assert trigger.deadline == pytest.approx(started + 30)
    assert trigger.deadline_reason == "execution_timeout"
    # Airflow's own backstop: what was left then, plus the grace.
    assert timedelta(seconds=60) <= deferred.value.timeout <= timedelta(seconds=80.5)

    sensor = MagiPredictionSensor(task_id="s", prediction_id="p1", timeout=5, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.defer_to_trigger(sensor_waiter := operator._waiter("p1"), {"ti": None})  # type: ignore[arg-type]
    assert sensor_waiter.deadline_reason == "timeout"  # no execution_timeout: the own timeout stays


@pytest.mark.parametrize("task", ["generate", "sensor"])
def test_execution_timeout_ends_a_deferred_wait(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs, task: str
) -> None:
    dag_run = run_dag(dag_bag, f"magi_test_execution_timeout_{task}")
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "wait").state == "failed"
    # The 6 s execution_timeout ended the wait, not the 600 s timeout.
    assert "did not finish within the task's execution_timeout" in task_logs()
    assert magi_conn.count("submit") == 1


@pytest.mark.parametrize("outcome", ["failed", "timeout"])
@pytest.mark.parametrize("mode", ["deferrable", "poke"])
def test_soft_fail_skips_in_every_mode(
    dag_bag, magi_conn: LocalWaveSpeedServer, outcome: str, mode: str
) -> None:
    dag_run = run_dag(dag_bag, f"magi_test_sensor_soft_fail_{outcome}_{mode}")
    assert task_instance(dag_run, "wait").state == "skipped"
    assert task_instance(dag_run, "submit").state == "success"


@pytest.mark.parametrize("operator_class", ["sensor", "long_video"])
def test_an_event_from_an_earlier_try_starts_the_try_afresh(
    monkeypatch: pytest.MonkeyPatch, operator_class: str
) -> None:
    """Airflow 3.0 resumes a retry with the earlier try's event (apache/airflow#56704): the
    sensor and the long video start afresh (the ledger reattaches) instead of failing on it."""
    from airflow_provider_magi.operators.long_video import MagiLongVideoOperator

    operator: Any = (
        MagiPredictionSensor(task_id="s", prediction_id="p1", deferrable=True)
        if operator_class == "sensor"
        else MagiLongVideoOperator(task_id="l", scenes=["a", "b"], destination="/tmp/x")
    )
    monkeypatch.setattr(operator, "execute", lambda context: "started afresh")
    stale = {"status": "timeout", "prediction_id": "p1", "try_number": 1, "message": "old try"}
    context: Any = {"ti": SimpleNamespace(try_number=2)}
    assert operator.execute_complete(context, stale) == "started afresh"
    this_try: Any = {"ti": SimpleNamespace(try_number=1)}
    with pytest.raises(Exception, match=r"old try|timeout|did not finish"):
        operator.execute_complete(this_try, stale)
