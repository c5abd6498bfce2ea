"""MagiPredictionTrigger run to each of its events against the local server."""

from __future__ import annotations

import json
import time

import pytest

from airflow_provider_magi.exceptions import (
    MagiPredictionFailedError,
    MagiRejectedError,
    MagiTimeoutError,
)
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.testing import Fault, LocalWaveSpeedServer
from airflow_provider_magi.triggers.magi import MagiPredictionTrigger, result_from_event
from tests.helpers import CANARY_KEY, run_triggers


def run_all(ids: list[str], timeout: float) -> list[list[dict]]:
    """One trigger per prediction in one event loop, as a triggerer does; their events."""
    return run_triggers([MagiPredictionTrigger(i, poll_interval=0.1) for i in ids], timeout)


def submit(prompt: str) -> str:
    return MagiHook().create_prediction({"prompt": prompt}).id


def run_trigger(trigger: MagiPredictionTrigger) -> list[dict]:
    (events,) = run_triggers([trigger])
    return events


def test_serialize_round_trip_carries_no_secret(magi_conn: LocalWaveSpeedServer) -> None:
    trigger = MagiPredictionTrigger("p1", magi_conn_id="magi_default", poll_interval=5, deadline=123.0)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_magi.triggers.magi.MagiPredictionTrigger"
    text = json.dumps(kwargs)
    assert CANARY_KEY not in text
    assert set(kwargs) == {
        "prediction_id",
        "magi_conn_id",
        "poll_interval",
        "deadline",
        "max_poll_interval",
        "started_at",
        "deadline_reason",
        "last_status",
        "try_number",  # Airflow 3.0 may hand the event to a later try (#26 item 12)
    }
    again = MagiPredictionTrigger(**json.loads(text))
    assert again.serialize() == (classpath, kwargs)


@pytest.mark.parametrize("worker_saw", [None, "processing"])
def test_the_trigger_logs_only_changes_from_the_status_the_worker_logged(
    magi_conn: LocalWaveSpeedServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    worker_saw: str | None,
) -> None:
    """A status seen by the worker before the deferral and again by the trigger is logged once
    (the task log showed "created" twice when the machine was slow to hand over)."""
    prediction_id = submit("held [[status: processing]]")
    with caplog.at_level("INFO"):
        (event,) = run_trigger(
            MagiPredictionTrigger(
                prediction_id, poll_interval=0.1, deadline=time.time() + 0.5, last_status=worker_saw
            )
        )
    assert event["status"] == "timeout"
    out, err = capfd.readouterr()  # Airflow's structured logs go to stdout, others to logging
    logged = f"Prediction {prediction_id} is processing after" in out + err + caplog.text
    assert logged == (worker_saw is None)


def test_success_event(magi_conn: LocalWaveSpeedServer) -> None:
    prediction_id = submit("a comet [[duration: 0.3]]")
    events = run_trigger(MagiPredictionTrigger(prediction_id, poll_interval=0.1))
    assert len(events) == 1
    assert events[0]["status"] == "success"
    result = result_from_event(events[0])
    assert result["prediction_id"] == prediction_id
    assert result["outputs"] == [f"{magi_conn.base_url}/outputs/{prediction_id}/0.mp4"]


def test_failed_event_carries_the_api_error(magi_conn: LocalWaveSpeedServer) -> None:
    prediction_id = submit("x [[duration: 0.1]] [[fail: content policy violation]]")
    (event,) = run_trigger(MagiPredictionTrigger(prediction_id, poll_interval=0.1))
    assert event["status"] == "failed"
    with pytest.raises(MagiPredictionFailedError, match=f"{prediction_id} failed: content policy violation"):
        result_from_event(event)


def test_timeout_event_for_a_never_finishing_prediction(magi_conn: LocalWaveSpeedServer) -> None:
    prediction_id = submit("x [[never]]")
    started = time.time()
    (event,) = run_trigger(
        MagiPredictionTrigger(prediction_id, poll_interval=0.1, deadline=time.time() + 0.6)
    )
    assert time.time() - started >= 0.5  # never before the deadline (run_trigger bounds the rest)
    assert event["status"] == "timeout"
    with pytest.raises(MagiTimeoutError, match="may still run and be billed"):
        result_from_event(event)


def test_unknown_status_is_still_running_until_the_deadline(magi_conn: LocalWaveSpeedServer) -> None:
    prediction_id = submit("x [[status: paused]]")
    (event,) = run_trigger(
        MagiPredictionTrigger(prediction_id, poll_interval=0.1, deadline=time.time() + 0.5)
    )
    assert event["status"] == "timeout"
    assert "paused" in event["message"]


def test_transient_errors_are_retried_inside_the_trigger(magi_conn: LocalWaveSpeedServer) -> None:
    prediction_id = submit("x [[duration: 0.2]]")
    # 6 failures outlast the hook's own 3 retries: the trigger keeps polling regardless.
    magi_conn.set_faults([Fault(route="result", kind="status", status=503, times=6)])
    (event,) = run_trigger(MagiPredictionTrigger(prediction_id, poll_interval=0.1))
    assert event["status"] == "success"
    assert magi_conn.count("result", status=503) == 6


def test_error_event_for_a_deleted_prediction(magi_conn: LocalWaveSpeedServer) -> None:
    (event,) = run_trigger(MagiPredictionTrigger("no-such-id", poll_interval=0.1))
    assert event["status"] == "error" and event["fatal"]
    assert "no-such-id" in event["message"]
    with pytest.raises(MagiRejectedError):
        result_from_event(event)


def test_many_triggers_share_one_connection_pool(magi_conn: LocalWaveSpeedServer) -> None:
    # Long enough that every trigger polls more than once however slowly the 50 submits go.
    ids = [submit(f"clip {i} [[duration: 3]]") for i in range(50)]

    results = run_all(ids, timeout=30)
    assert all(events[0]["status"] == "success" for events in results)
    polls = [request for request in magi_conn.requests if request.route == "result"]
    assert {request.path for request in polls} == {f"/api/v3/predictions/{i}/result" for i in ids}
    connections = {request.client for request in polls}
    # One pooled client for all 50 triggers: connections are reused, not opened per poll, and
    # never more than the pool's 64 however many triggers wait.
    assert len(polls) >= 2 * len(ids)
    assert len(connections) <= 50


def test_unexpected_event_is_an_error() -> None:
    with pytest.raises(Exception, match="Unexpected event"):
        result_from_event({"nope": 1})


def test_triggers_sharing_a_key_stay_within_its_poll_budget(
    magi_conn: LocalWaveSpeedServer, monkeypatch
) -> None:
    from tests.helpers import connection_json

    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(magi_conn, max_polls_per_second=10))
    ids = [submit(f"clip {i} [[duration: 2]]") for i in range(30)]

    started = time.monotonic()
    results = run_all(ids, timeout=60)
    elapsed = time.monotonic() - started
    assert all(events[0]["status"] == "success" for events in results)
    polls = [r for r in magi_conn.requests if r.route == "result"]
    # Unthrottled, 30 triggers polling every 0.1 s would send ~300 a second. The shared budget
    # hands out one slot per 0.1 s after a first burst of 10, whatever the event loop's stalls,
    # so every poll of the run fits in 10 + 10 per second of it.
    assert len(polls) >= 30
    assert len(polls) <= 10 + 10 * elapsed + 1


def test_after_the_first_429_triggers_sharing_a_key_stay_under_the_servers_limit(
    magi_conn: LocalWaveSpeedServer, monkeypatch
) -> None:
    from tests.helpers import connection_json

    # The configured budget (1000/s) is far above what the server allows (20 per second); the
    # first 429 teaches every trigger on the key the real limit.
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(magi_conn, max_retries=20))
    ids = [submit(f"clip {i} [[duration: 3]]") for i in range(30)]
    magi_conn.set_faults([Fault(route="result", kind="rate_limit", limit=20, window=1.0)])

    results = run_all(ids, timeout=60)
    assert all(events[0]["status"] == "success" for events in results)
    polls = [r for r in magi_conn.requests if r.route == "result"]
    refused = [r for r in polls if r.status == 429]
    # Measured: without the budget's back-off, 191 of 276 polls were refused; with it, the first
    # burst's overflow (10 of 30) and then nothing (10 of 92).
    assert len(polls) - len(refused) >= 30
    assert len(refused) <= 30, f"{len(refused)} of {len(polls)} polls refused"
