"""DAGs the MAGI-2 tests run with ``dag.test()``: one per operator shape, every input from the run's
conf (``params``), so one test can try each input on each shape."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_provider_magi.operators.batch import MagiBatchOperator
from airflow_provider_magi.operators.long_video import MagiLongVideoOperator
from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator

OUTPUT_DIR = os.environ.get("MAGI_TEST_OUTPUT_DIR", "/tmp/magi-test-output")
FAST = {"poll_interval": 0.1, "max_poll_interval": 0.2}
START = datetime(2026, 1, 1)
TEXT_TO_VIDEO = "sand-ai/magi-2/text-to-video"


def _dag(dag_id: str, **params: object) -> DAG:
    return DAG(
        dag_id,
        schedule=None,
        start_date=START,
        catchup=False,
        params={
            name: Param(value, type=["null", "string", "integer", "array", "object"])
            for name, value in params.items()
        },
    )


with _dag(
    "magi2_test_video",
    model=TEXT_TO_VIDEO,
    prompt="a lighthouse at dusk [[duration: 0.3]]",
    image="",
    duration=4,
    aspect_ratio="",
    last_image="",
):
    MagiGenerateVideoOperator(
        task_id="video",
        model="{{ params.model }}",
        prompt="{{ params.prompt }}",
        image="{{ params.image }}",
        duration="{{ params.duration }}",
        aspect_ratio="{{ params.aspect_ratio }}",
        last_image="{{ params.last_image }}",
        deferrable=True,
        **FAST,
    )

with _dag(
    "magi2_test_long_video",
    model=TEXT_TO_VIDEO,
    scenes=[{"prompt": f"scene {k} [[duration: 0.3]]", "duration": 4} for k in (1, 2, 3)],
):
    MagiLongVideoOperator(
        task_id="long_video",
        model="{{ params.model }}",
        scenes="{{ params.scenes | tojson }}",
        destination=OUTPUT_DIR,
        filename="{{ dag.dag_id }}/{run_id}.mp4",
        **FAST,
    )

with _dag(
    "magi2_test_batch",
    model=TEXT_TO_VIDEO,
    inputs=[{"prompt": f"item {k} [[duration: 0.3]]", "duration": 4 + k} for k in range(3)],
):
    MagiBatchOperator(
        task_id="batch",
        model="{{ params.model }}",
        inputs="{{ params.inputs | tojson }}",
        destination=OUTPUT_DIR,
        max_in_flight=3,
        **FAST,
    )
