"""A table of prompts in, one video per row, a manifest out: the whole batch is one task.

``export_table`` stands in for the query of a real pipeline: it writes the night's rows as JSON
Lines (one ``{"prompt": ..., "seed": ...}`` per line) and hands the batch the file's path, so a
table of thousands never passes through XCom. ``MagiBatchOperator`` checks every row before it
pays for the first video, keeps at most ``max_in_flight`` predictions running (set it to your
WaveSpeed account level's concurrency), waits for all of them with one trigger, and writes each
video and a ``manifest.jsonl`` (one line per row, in row order) under ``MAGI_OUTPUT_DIR``.
``publish`` reads the manifest, as a downstream system would.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, task

from airflow_provider_magi.operators.batch import MagiBatchOperator

OUTPUT_DIR = os.environ.get("MAGI_OUTPUT_DIR", "/tmp/magi-videos")
POLL_INTERVAL = float(os.environ.get("MAGI_POLL_INTERVAL", "10"))
PRODUCTS = [
    ("a ceramic teapot", 11),
    ("a pair of trail running shoes", 12),
    ("a hand-stitched leather wallet", 13),
    ("a glass desk lamp", 14),
]

with DAG(
    dag_id="example_magi_batch_table",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # A retry is free (the ledger reattaches to what was paid) and covers Airflow's resume race
    # (README: "A batch resumes once per wave").
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["example", "magi"],
    doc_md=__doc__,
):

    @task
    def export_table(run_id: str | None = None) -> str:
        """The night's rows as JSON Lines; returns the file's absolute path."""
        folder = Path(OUTPUT_DIR) / "tables"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"products_{''.join(c if c.isalnum() else '_' for c in str(run_id))}.jsonl"
        rows = [
            {"prompt": f"Studio product shot of {name}, slow turntable, soft light", "seed": seed}
            for name, seed in PRODUCTS
        ]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return str(path)

    batch = MagiBatchOperator(
        task_id="batch",
        inputs=export_table(),
        destination=OUTPUT_DIR,
        max_in_flight=2,
        poll_interval=POLL_INTERVAL,
        outlets=[Asset("magi_product_videos")],
    )

    @task
    def publish(summary: dict[str, Any]) -> list[str]:
        """Read the manifest: the completed rows' files, in row order."""
        from airflow.sdk import ObjectStoragePath

        where = summary["manifest_path"]
        manifest = ObjectStoragePath(where) if "://" in where else Path(where)
        lines = [json.loads(line) for line in manifest.read_text().splitlines()]
        return [path for line in lines if line["status"] == "completed" for path in line["paths"]]

    publish(batch.output)
