"""A video a day: the shape of production use.

Runs daily with ``catchup=False`` (a paused week is not billed as seven videos when it resumes),
the prompt templated with the run's date, and every generation in the ``magi`` pool. Create the
pool once, counting deferred tasks, so it caps videos rendering at WaveSpeed, not only tasks
holding a worker slot::

    airflow pools set magi 2 "MAGI-1 generations at once" --include-deferred
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset

from airflow_provider_magi.operators.download import MagiDownloadOutputsOperator
from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator

MAGI_VIDEOS = Asset("magi_videos")
MAGI_POOL = os.environ.get("MAGI_POOL", "magi")
OUTPUT_DIR = os.environ.get("MAGI_OUTPUT_DIR", "/tmp/magi-videos")
POLL_INTERVAL = float(os.environ.get("MAGI_POLL_INTERVAL", "10"))

with DAG(
    dag_id="example_magi_daily",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["example", "magi"],
    doc_md=__doc__,
):
    generate = MagiGenerateVideoOperator(
        task_id="generate",
        prompt="Morning over a harbour town on {{ ds }}: fishing boats leave, gulls circle, soft light",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        pool=MAGI_POOL,
    )
    MagiDownloadOutputsOperator(
        task_id="download",
        prediction=generate.output,
        destination=OUTPUT_DIR,
        filename="daily/{ds}.mp4",
        outlets=[MAGI_VIDEOS],
    )
