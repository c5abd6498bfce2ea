"""Text to video: generate with MAGI-1 24B (waiting in the triggerer), then land the MP4.

Runs against the real API with a ``magi_default`` connection, or against the bundled local
server (``make demo`` sets that up).
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
    dag_id="example_magi_text_to_video",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "magi"],
    params={
        "prompt": Param(
            "A red fox runs across a snowy meadow at dawn, cinematic, shallow depth of field",
            type="string",
            minLength=1,
        ),
        "seed": Param(42, type="integer", minimum=-1, maximum=2147483647),
    },
    doc_md=__doc__,
):
    generate = MagiGenerateVideoOperator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        seed="{{ params.seed }}",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
    download = MagiDownloadOutputsOperator(
        task_id="download",
        prediction=generate.output,
        destination=OUTPUT_DIR,
        outlets=[MAGI_VIDEOS],
    )
