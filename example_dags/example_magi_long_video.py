"""A long video, the MAGI way: four scenes, each starting from the last frame of the one before,
joined into one MP4 (waiting in the triggerer; each scene paid for once, whatever is retried).

Needs the ``[video]`` extra on the workers: ``pip install "airflow-provider-magi[video]"``.
Runs against the real API with a ``magi_default`` connection, or against the bundled local
server, whose image-to-video clips really start from the frame they are given.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset

from airflow_provider_magi.operators.long_video import MagiLongVideoOperator

MAGI_LONG_VIDEOS = Asset("magi_long_videos")
OUTPUT_DIR = os.environ.get("MAGI_OUTPUT_DIR", "/tmp/magi-videos")
POLL_INTERVAL = float(os.environ.get("MAGI_POLL_INTERVAL", "10"))

with DAG(
    dag_id="example_magi_long_video",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # A retry is free (the ledger reattaches to what was paid) and covers Airflow's resume race
    # (README: "A batch resumes once per wave").
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["example", "magi"],
    doc_md=__doc__,
):
    MagiLongVideoOperator(
        task_id="long_video",
        scenes=[
            "A paper boat is set down on a rain-filled gutter, close-up, soft morning light",
            "The paper boat drifts along the gutter, raindrops rippling the water around it",
            {"prompt": "The boat tips over a small waterfall into a storm drain", "seed": 42},
            "The boat floats out of a pipe onto a wide, calm river at sunrise",
        ],
        destination=OUTPUT_DIR,
        filename="long_video/{run_id}/paper_boat.mp4",
        poll_interval=POLL_INTERVAL,
        timeout=1800,  # per scene
        outlets=[MAGI_LONG_VIDEOS],
    )
