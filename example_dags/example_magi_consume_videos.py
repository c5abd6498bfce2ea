"""Runs whenever new MAGI videos land: scheduled on the asset the download tasks update."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Asset, task

MAGI_VIDEOS = Asset("magi_videos")

with DAG(
    dag_id="example_magi_consume_videos",
    schedule=[MAGI_VIDEOS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "magi"],
    doc_md=__doc__,
):

    @task
    def catalogue(triggering_asset_events=None) -> list[dict]:
        """List each new video with its prediction, prompt and size."""
        rows = []
        for event in triggering_asset_events[MAGI_VIDEOS]:
            extra = event.extra or {}
            for path, size in zip(extra.get("paths", []), extra.get("sizes", []), strict=True):
                local = Path(path)
                if local.is_absolute() and local.exists() and local.stat().st_size != size:
                    raise ValueError(f"{path} has {local.stat().st_size} bytes, expected {size}")
                rows.append(
                    {
                        "path": path,
                        "size": size,
                        "prediction_id": extra.get("prediction_id"),
                        "prompt": extra.get("prompt"),
                    }
                )
        print(f"{len(rows)} new video(s): {rows}")
        return rows

    catalogue()
