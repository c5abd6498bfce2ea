"""Image to video: the first frame comes from a URL; the task waits in the worker (not deferred).

The run's ``image_url`` must be an https URL: a value from ``dag_run.conf`` is whatever whoever
triggers the run typed, and the operator would upload a local path (any image file the worker can
read). Accept local paths from trusted DAG code, not from a run's conf.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, Asset, Param

from airflow_provider_magi.operators.download import MagiDownloadOutputsOperator
from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator

MAGI_VIDEOS = Asset("magi_videos")
OUTPUT_DIR = os.environ.get("MAGI_OUTPUT_DIR", "/tmp/magi-videos")
POLL_INTERVAL = float(os.environ.get("MAGI_POLL_INTERVAL", "10"))

with DAG(
    dag_id="example_magi_image_to_video",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "magi"],
    params={
        "image_url": Param(
            "https://example.com/first-frame.png",
            type="string",
            pattern=r"^https://[^\s]+$",
            description="https URL of the first frame (local paths are not accepted from a run's conf)",
        ),
        "prompt": Param("The camera slowly pushes in while leaves drift past", type="string"),
    },
    doc_md=__doc__,
):
    generate = MagiGenerateVideoOperator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        image="{{ params.image_url }}",
        seed=-1,
        deferrable=False,
        poll_interval=POLL_INTERVAL,
        timeout=1800,
    )
    MagiDownloadOutputsOperator(
        task_id="download",
        prediction=generate.output,
        destination=OUTPUT_DIR,
        filename="image_to_video/{run_id}/{prediction_id}_{index}.mp4",
        checksum=True,
        outlets=[MAGI_VIDEOS],
    )
