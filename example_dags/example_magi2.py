"""MAGI-2 on WaveSpeed: a 20 s text-to-video clip with sound, and a long video of three 10 s scenes.

MAGI-2 is priced per second ($0.08/s, sound included): the 20 s clip costs $1.60 and the long
video $2.40, and the connection's daily budget and balance floor count those prices before any
bill exists. The long video makes scene 1 from text and scenes 2 and 3 with MAGI-2's
image-to-video endpoint from the last frame before them; the join keeps one sound track.
Needs the ``[video]`` extra on the workers for the long video. Runs against the real API with a
``magi_default`` connection, or against the bundled local server (small frames, 25 fps, a tone).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_magi.operators.download import MagiDownloadOutputsOperator
from airflow_provider_magi.operators.long_video import MagiLongVideoOperator
from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator

MAGI_2 = "sand-ai/magi-2/text-to-video"
OUTPUT_DIR = os.environ.get("MAGI_OUTPUT_DIR", "/tmp/magi-videos")
POLL_INTERVAL = float(os.environ.get("MAGI_POLL_INTERVAL", "10"))

with DAG(
    dag_id="example_magi2",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # A retry is free: the ledger reattaches to what was paid.
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["example", "magi", "magi-2"],
    doc_md=__doc__,
):
    clip = MagiGenerateVideoOperator(
        task_id="clip_20s",
        model=MAGI_2,
        prompt="A lighthouse keeper climbs the spiral stairs at dusk, wind and waves outside",
        duration=20,
        aspect_ratio="16:9",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
    MagiDownloadOutputsOperator(
        task_id="download_clip",
        prediction=clip.output,
        destination=OUTPUT_DIR,
        filename="magi2/{run_id}/lighthouse.mp4",
    )
    MagiLongVideoOperator(
        task_id="long_video",
        model=MAGI_2,
        scenes=[
            {"prompt": "A fishing boat leaves a harbour at dawn, gulls calling", "duration": 10},
            {"prompt": "The boat rides long ocean swells under a clearing sky", "duration": 10},
            {"prompt": "The boat returns at sunset, its crew waving to the quay", "duration": 10},
        ],
        destination=OUTPUT_DIR,
        filename="magi2/{run_id}/fishing_boat.mp4",
        poll_interval=POLL_INTERVAL,
        timeout=1800,  # per scene
    )
