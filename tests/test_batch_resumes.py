"""A batch resumes once per wave, not once per finished video: each resume costs a worker slot and
meets Airflow 3.3's LocalExecutor race (apache/airflow#66374). bench/batch_resumes.py measures
the count for 1,000 inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.operators.batch import resume_after
from airflow_provider_magi.testing import LocalWaveSpeedServer
from airflow_provider_magi.triggers.batch import MagiBatchTrigger
from tests.helpers import run_triggers

MAGI = "wavespeed-ai/magi-1-24b"


@pytest.mark.parametrize(
    ("running", "pending", "max_in_flight", "expected"),
    [
        (50, 950, 50, 25),  # a full batch waits for half its slots
        (30, 950, 50, 5),  # 20 slots are free already (a budget or 429 held a wave back): 5 more
        (50, 3, 50, 3),  # three inputs left: three free slots are the whole wave
        (10, 0, 50, 10),  # nothing left to submit: one last resume when all ended
        (5, 3, 50, 1),  # more slots free than inputs left: the next that ends
        (1, 100, 1, 1),
    ],
)
def test_a_batch_resumes_when_a_waves_worth_of_slots_is_free(
    running: int, pending: int, max_in_flight: int, expected: int
) -> None:
    assert resume_after(running, pending, max_in_flight) == expected


def test_the_trigger_waits_for_resume_after_not_for_the_first_that_ended(
    magi_conn: LocalWaveSpeedServer,
) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    hook = MagiHook()
    ids = [hook.create_prediction({"prompt": f"scene [[duration: {d}]]"}).id for d in (0.2, 0.2, 1.5)]
    (events,) = run_triggers(
        [MagiBatchTrigger(ids, MAGI, since.isoformat(), resume_after=3, poll_interval=0.1)], timeout=60
    )
    (event,) = events
    # The rule until now fired 0.1 s after the first ended: with two of three.
    assert sorted(r["prediction_id"] for r in event["ended"]) == sorted(ids)


def test_a_resume_latency_still_fires_before_resume_after_when_asked(magi_conn: LocalWaveSpeedServer) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    hook = MagiHook()
    quick = hook.create_prediction({"prompt": "scene [[duration: 0.2]]"}).id
    slow = hook.create_prediction({"prompt": "scene [[duration: 120]]"}).id
    trigger = MagiBatchTrigger(
        [quick, slow], MAGI, since.isoformat(), resume_after=2, resume_latency=0.3, poll_interval=0.1
    )
    (events,) = run_triggers([trigger], timeout=60)
    assert [r["prediction_id"] for r in events[0]["ended"]] == [quick]
    assert events[0]["running_span"] is not None
