"""DAGs for issue 26's checks before paying, long-video safety and counted costs
(tests/test_checks_before_paying.py, tests/test_long_video_safety.py, tests/test_costs_counted.py)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

import requests
from airflow.sdk import DAG

from airflow_provider_magi.operators.download import MagiDownloadOutputsOperator
from airflow_provider_magi.operators.long_video import MagiLongVideoOperator
from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator
from airflow_provider_magi.sensors.magi import MagiPredictionSensor

OUTPUT_DIR = os.environ.get("MAGI_TEST_OUTPUT_DIR", "/tmp/magi-test-output")
FAST = {"poll_interval": 0.1, "max_poll_interval": 0.2}
SCENES = [f"scene {k} of a harbour [[duration: 0.2]]" for k in range(1, 5)]


def _dag(dag_id: str, **kwargs: Any) -> DAG:
    return DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, **kwargs)


# A new user's long video: scene 2 is empty.
with _dag("magi_r2_long_video_empty_scene"):
    MagiLongVideoOperator(
        task_id="long_video", scenes=["a boat [[duration: 0.2]]", ""], destination=OUTPUT_DIR, **FAST
    )

# A destination whose filesystem package is not installed, known only once rendered.
with _dag("magi_r2_long_video_s3", params={"destination": "s3://magi-test-bucket/videos"}):
    MagiLongVideoOperator(
        task_id="long_video", scenes=SCENES[:2], destination="{{ params.destination }}", **FAST
    )

# Four scenes under a budget that holds two of them.
with _dag("magi_r2_long_video_budget"):
    MagiLongVideoOperator(task_id="long_video", scenes=SCENES, destination=OUTPUT_DIR, **FAST)

# Three mapped long videos: with the default filename, and with one name for all of them.
with _dag("magi_r2_long_video_mapped"):
    MagiLongVideoOperator.partial(task_id="long_video", destination=OUTPUT_DIR, **FAST).expand(
        scenes=[[f"map {k}, scene {n} [[duration: 0.2]]" for n in (1, 2)] for k in range(3)]
    )

with _dag("magi_r2_long_video_mapped_one_name"):
    MagiLongVideoOperator.partial(
        task_id="long_video", destination=OUTPUT_DIR, filename="shared/{dag_id}/film.mp4", **FAST
    ).expand(scenes=[[f"map {k}, scene {n} [[duration: 0.2]]" for n in (1, 2)] for k in range(3)])


class LosesScene2sAnswer(MagiLongVideoOperator):
    """Scene 2's submit never reaches the server and its connection is dropped (the server's
    ``drop`` fault): the client cannot tell whether it started. Scene 1 is then the only
    prediction of the model created around it."""

    def submit_job(self, context: Any, ledger: Any) -> str:
        if self._scene_number == 2:
            base = self.hook.settings.base_url
            fault = {"route": "submit", "kind": "drop", "times": 1}
            requests.post(f"{base}/_testing/faults", json=fault, timeout=5).raise_for_status()
        return super().submit_job(context, ledger)


with _dag("magi_r2_long_video_lost_scene_answer"):
    LosesScene2sAnswer(
        task_id="long_video",
        scenes=SCENES[:2],
        destination=OUTPUT_DIR,
        attach_to_single_candidate=True,
        deferrable=False,
        **FAST,
    )

# The batch example's shape: submit without waiting, the sensor waits, then the download.
for deferrable in (True, False):
    with _dag(f"magi_r2_sensor_cost_{'deferrable' if deferrable else 'poke'}"):
        submit = MagiGenerateVideoOperator(
            task_id="submit", prompt="a sensed video [[duration: 0.2]]", wait_for_completion=False, **FAST
        )
        wait = MagiPredictionSensor(
            task_id="wait", prediction_id=submit.output, deferrable=deferrable, **FAST
        )
        MagiDownloadOutputsOperator(task_id="download", prediction=wait.output, destination=OUTPUT_DIR)


class DiesAfterCosting(MagiGenerateVideoOperator):
    """Try 1 dies right after its result (and cost) was made; try 2 reattaches to the completed
    prediction, as a retry or a clear of a finished task does."""

    def _result(self, result: dict[str, Any]) -> dict[str, Any]:
        costed = super()._result(result)
        if self._context_try == 1:
            raise RuntimeError("simulated crash after the cost was counted")
        return costed

    def execute(self, context: Any) -> Any:
        self._context_try = context["ti"].try_number
        return super().execute(context)


with _dag("magi_r2_cost_reattached"):
    DiesAfterCosting(
        task_id="generate",
        prompt="a video costed once [[duration: 0.2]]",
        deferrable=False,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

# Billed only after the generating task ended: its connection does not wait for the price
# (cost_lookup_seconds=0), the download's does.
with _dag("magi_r2_cost_billed_later"):
    generate = MagiGenerateVideoOperator(
        task_id="generate",
        prompt="a video billed later [[duration: 0.2]]",
        magi_conn_id="magi_no_cost_lookup",
        deferrable=False,
        **FAST,
    )
    MagiDownloadOutputsOperator(task_id="download", prediction=generate.output, destination=OUTPUT_DIR)

# Six videos one after another while billing lags completion (the daily budget's case).
with _dag("magi_r2_budget_billing_lags"):
    MagiGenerateVideoOperator.partial(task_id="generate", deferrable=False, **FAST).expand(
        prompt=[f"video {k} of the day [[duration: 0.2]]" for k in range(6)]
    )
