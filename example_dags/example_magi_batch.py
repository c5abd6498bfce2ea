"""A batch: submit one prediction per prompt (mapped), wait for each with the deferrable sensor.

Submitting and waiting are separate mapped tasks, so no worker slot is held while the videos
render, and each video is downloaded as soon as its own wait ends. Cap concurrent generations
with ``max_active_tis_per_dagrun`` or an Airflow pool (WaveSpeed's default account level runs
two tasks at once and queues the rest).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset

from airflow_provider_magi.operators.download import MagiDownloadOutputsOperator
from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator
from airflow_provider_magi.sensors.magi import MagiPredictionSensor

MAGI_VIDEOS = Asset("magi_videos")
OUTPUT_DIR = os.environ.get("MAGI_OUTPUT_DIR", "/tmp/magi-videos")
POLL_INTERVAL = float(os.environ.get("MAGI_POLL_INTERVAL", "10"))
PROMPTS = [
    "A paper boat drifts down a rain-soaked street, macro lens",
    "Timelapse of clouds rolling over a mountain ridge at sunset",
    "A hummingbird hovers at a red flower, slow motion",
]

with DAG(
    dag_id="example_magi_batch",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # A retry is free (the ledger reattaches to what was paid) and covers Airflow's resume race
    # (README: "A batch resumes once per wave").
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["example", "magi"],
    doc_md=__doc__,
):
    submit = MagiGenerateVideoOperator.partial(
        task_id="submit",
        wait_for_completion=False,
        max_active_tis_per_dagrun=2,
    ).expand(prompt=PROMPTS)

    wait = MagiPredictionSensor.partial(
        task_id="wait",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=3600,
    ).expand(prediction_id=submit.output)

    MagiDownloadOutputsOperator.partial(
        task_id="download",
        destination=OUTPUT_DIR,
        filename="batch/{run_id}/{map_index}_{prediction_id}.mp4",
        outlets=[MAGI_VIDEOS],
    ).expand(prediction=wait.output)
