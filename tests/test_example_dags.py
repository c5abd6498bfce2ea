"""The example DAGs parse cleanly and run end to end against the local server."""

from __future__ import annotations

import io
import warnings
from datetime import UTC, datetime
from pathlib import Path

import av
import pytest

from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.conftest import ROOT
from tests.helpers import run_dag, task_instance, xcom

EXAMPLES = sorted((ROOT / "example_dags").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_parses_without_errors_or_warnings(path: Path) -> None:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(str(path))
    assert bag.import_errors == {}
    assert len(bag.dags) == 1
    ours = [
        w for w in caught if "example_dags" in str(w.filename) or "airflow_provider_magi" in str(w.filename)
    ]
    assert ours == [], [str(w.message) for w in ours]


def plays(path: str) -> bool:
    with av.open(io.BytesIO(Path(path).read_bytes())) as container:
        return sum(1 for _ in container.decode(video=0)) > 0


def test_text_to_video(dag_bag, magi_conn: LocalWaveSpeedServer) -> None:
    dag_run = run_dag(dag_bag, "example_magi_text_to_video")
    assert dag_run.state == "success"
    (written,) = xcom(dag_run, "download")
    assert plays(written["path"])
    assert magi_conn.count("submit") == 1


def test_daily_prompt_and_file_carry_the_run_date(dag_bag, magi_conn: LocalWaveSpeedServer) -> None:
    dag_run = run_dag(dag_bag, "example_magi_daily", logical_date=datetime(2026, 11, 27, tzinfo=UTC))
    assert dag_run.state == "success"
    (prediction,) = magi_conn.app.predictions.values()
    assert prediction.inputs["prompt"].startswith("Morning over a harbour town on 2026-11-27:")
    (written,) = xcom(dag_run, "download")
    assert written["path"].endswith("/daily/2026-11-27.mp4") and plays(written["path"])
    assert task_instance(dag_run, "generate").pool == "magi"


def test_image_to_video(dag_bag, magi_conn: LocalWaveSpeedServer) -> None:
    dag_run = run_dag(dag_bag, "example_magi_image_to_video")
    assert dag_run.state == "success"
    (prediction,) = magi_conn.app.predictions.values()
    assert prediction.inputs["image"] == "https://example.com/first-frame.png"
    (written,) = xcom(dag_run, "download")
    assert "image_to_video" in written["path"] and len(written["sha256"]) == 64


def test_mapped_batch_with_sensor(dag_bag, magi_conn: LocalWaveSpeedServer) -> None:
    dag_run = run_dag(dag_bag, "example_magi_batch")
    assert dag_run.state == "success"
    assert magi_conn.count("submit") == 3
    paths = {xcom(dag_run, "download", map_index=i)[0]["path"] for i in range(3)}
    assert len(paths) == 3
    assert all(plays(path) for path in paths)
    ids = {xcom(dag_run, "submit", map_index=i) for i in range(3)}
    assert ids == set(magi_conn.app.predictions)


def test_long_video(dag_bag, magi_conn: LocalWaveSpeedServer) -> None:
    dag_run = run_dag(dag_bag, "example_magi_long_video")
    assert dag_run.state == "success"
    result = xcom(dag_run, "long_video")
    assert magi_conn.count("submit") == 4 and len(result["prediction_ids"]) == 4
    assert result["path"].endswith("/paper_boat.mp4") and plays(result["path"])


def test_magi2_clip_and_long_video(dag_bag, magi_conn: LocalWaveSpeedServer) -> None:
    dag_run = run_dag(dag_bag, "example_magi2")
    assert dag_run.state == "success"
    assert magi_conn.count("submit", model="sand-ai/magi-2/text-to-video") == 2  # the clip, scene 1
    assert magi_conn.count("submit", model="sand-ai/magi-2/image-to-video") == 2  # scenes 2 and 3
    assert xcom(dag_run, "clip_20s")["cost_usd"] == 1.6
    (written,) = xcom(dag_run, "download_clip")
    assert plays(written["path"])
    long_video = xcom(dag_run, "long_video")
    assert long_video["cost_usd"] == 2.4 and plays(long_video["path"])
