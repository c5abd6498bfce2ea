"""Downloads land whole or not at all, never carry the key, and follow the NSFW policy."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests

from airflow_provider_magi.downloads import check_output_url, download
from airflow_provider_magi.exceptions import MagiDownloadError, MagiInputError
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.operators.download import destination_path, render_filename
from airflow_provider_magi.testing import Fault, LocalWaveSpeedServer
from airflow_provider_magi.testing.video import iter_video
from tests.helpers import DAG_TEST_LOGS_EXCEPTIONS, run_dag, task_instance, xcom


def completed_output(server: LocalWaveSpeedServer, directives: str = "") -> str:
    hook = MagiHook()
    prediction = hook.create_prediction({"prompt": f"x [[duration: 0]] {directives}"})
    return hook.get_prediction(prediction.id).outputs[0]


def leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


def test_download_is_whole_and_checksummed(magi_conn: LocalWaveSpeedServer, tmp_path: Path) -> None:
    url = completed_output(magi_conn, "[[size: 3000000]]")
    target = tmp_path / "a" / "video.mp4"
    result = MagiHook().download_output(url, target, checksum=True, allow_insecure_loopback=True)
    expected = b"".join(iter_video(3_000_000))
    assert target.read_bytes() == expected
    assert result.size == 3_000_000
    assert result.sha256 == hashlib.sha256(expected).hexdigest()
    assert leftovers(tmp_path) == [target]
    assert not any(r.sent_authorization for r in magi_conn.requests if r.route == "output")


def test_broken_transfer_resumes_with_range(magi_conn: LocalWaveSpeedServer, tmp_path: Path) -> None:
    # Broken halfway through 5 MB: the whole 1 MiB chunks that arrived are kept.
    url = completed_output(magi_conn, "[[size: 5000000]]")
    magi_conn.set_faults([Fault(route="output", kind="truncate", times=1)])
    target = tmp_path / "v.mp4"
    MagiHook().download_output(url, target, allow_insecure_loopback=True)
    assert target.read_bytes() == b"".join(iter_video(5_000_000))
    assert [r.status for r in magi_conn.requests if r.route == "output"] == [200, 206]


def test_always_truncated_download_leaves_nothing(magi_conn: LocalWaveSpeedServer, tmp_path: Path) -> None:
    url = completed_output(magi_conn, "[[size: 500000]]")
    magi_conn.set_faults([Fault(route="output", kind="truncate")])
    with pytest.raises(MagiDownloadError, match="download incomplete after 4 attempts"):
        MagiHook().download_output(
            url, tmp_path / "v.mp4", allow_insecure_loopback=True, label="Prediction p output 0"
        )
    assert leftovers(tmp_path) == []


def test_expired_url_is_a_clear_error(magi_conn: LocalWaveSpeedServer, tmp_path: Path) -> None:
    url = completed_output(magi_conn, "[[expire]]")
    with pytest.raises(
        MagiDownloadError, match=r"Prediction p1 output 0: the output URL answered 403.*expire"
    ):
        MagiHook().download_output(
            url, tmp_path / "v.mp4", allow_insecure_loopback=True, label="Prediction p1 output 0"
        )
    assert leftovers(tmp_path) == []
    assert magi_conn.count("output") == 1  # a 403 is not retried


def test_existing_file_is_replaced_only_when_the_new_one_is_whole(
    magi_conn: LocalWaveSpeedServer, tmp_path: Path
) -> None:
    target = tmp_path / "v.mp4"
    target.write_bytes(b"previous video")
    url = completed_output(magi_conn)
    magi_conn.set_faults([Fault(route="output", kind="truncate")])  # every answer breaks off
    with pytest.raises(MagiDownloadError):
        MagiHook().download_output(url, target, allow_insecure_loopback=True)
    assert target.read_bytes() == b"previous video"
    assert leftovers(tmp_path) == [target]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://cdn.example/v.mp4", True),
        ("http://127.0.0.1:1/v.mp4", True),
        ("http://localhost:1/v.mp4", True),
        ("http://cdn.example/v.mp4", False),
        ("ftp://cdn.example/v.mp4", False),
        ("file:///etc/passwd", False),
    ],
)
def test_only_https_or_allowed_loopback(url: str, allowed: bool) -> None:
    if allowed:  # no resolution: the names are not real, and no test asks a resolver
        check_output_url(url, allow_insecure_loopback=True, resolve=False)
    else:
        with pytest.raises(MagiDownloadError):
            check_output_url(url, allow_insecure_loopback=True, resolve=False)
    with pytest.raises(MagiDownloadError):
        check_output_url("http://127.0.0.1:1/v.mp4", allow_insecure_loopback=False)


def test_refused_url_sends_nothing(tmp_path: Path) -> None:
    with requests.Session() as session, pytest.raises(MagiDownloadError, match="not an https URL"):
        download(session, "http://10.0.0.1/v.mp4", tmp_path / "v.mp4")
    assert leftovers(tmp_path) == []


def test_filenames_are_sanitised() -> None:
    values = {
        "dag_id": "d",
        "run_id": "manual__2026-01-01T00:00:00+00:00",
        "prediction_id": "../../etc",
        "index": 0,
    }
    assert render_filename("{dag_id}/{run_id}/{prediction_id}_{index}.mp4", values) == (
        "d/manual__2026-01-01T00_00_00_00_00/etc_0.mp4"
    )
    assert render_filename("{prediction_id}.mp4", {"prediction_id": "a\nb\x00c"}) == "a_b_c.mp4"
    with pytest.raises(MagiInputError, match="unknown field"):
        render_filename("{nope}.mp4", values)
    with pytest.raises(MagiInputError, match=r"without '\.\.'"):
        render_filename("../{index}.mp4", values)


def test_destination_forms(tmp_path: Path) -> None:
    assert destination_path(str(tmp_path)) == tmp_path
    assert str(destination_path(f"file://{tmp_path}/videos")) == f"file://{tmp_path}/videos"
    with pytest.raises(MagiInputError, match="Invalid destination"):
        destination_path("")


@pytest.mark.parametrize(
    ("policy", "files", "state"), [("keep", 2, "success"), ("skip", 0, "success"), ("fail", 0, "failed")]
)
def test_nsfw_policies(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs, policy: str, files: int, state: str
) -> None:
    dag_run = run_dag(dag_bag, f"magi_test_nsfw_{policy}")
    assert dag_run.state == state
    written = xcom(dag_run, "download") or []
    assert len(written) == files
    assert all(item["nsfw"] for item in written)
    assert magi_conn.count("output") == files
    if policy == "fail":
        assert not DAG_TEST_LOGS_EXCEPTIONS or "is flagged NSFW (nsfw_policy='fail')" in task_logs()
        assert task_instance(dag_run, "download").try_number == 1  # not retried despite retries=1


def test_expired_outputs_fail_the_download_naming_the_prediction(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs
) -> None:
    dag_run = run_dag(dag_bag, "magi_test_expired_outputs")
    assert dag_run.state == "failed"
    (prediction_id,) = magi_conn.app.predictions
    assert magi_conn.count("output") == 1
    if DAG_TEST_LOGS_EXCEPTIONS:
        assert f"Prediction {prediction_id} output 0: the output URL answered 403" in task_logs()


def test_download_to_object_storage_with_asset_event(dag_bag, magi_conn: LocalWaveSpeedServer) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.sdk import ObjectStoragePath
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag_run = run_dag(dag_bag, "magi_test_download_to_memory")
    assert dag_run.state == "success"
    written = xcom(dag_run, "download")
    assert [Path(item["path"]).name for item in written] == ["0.mp4", "1.mp4"]
    for item in written:
        stored = ObjectStoragePath(item["path"])
        assert stored.read_bytes()[:12] == b"".join(iter_video(None))[:12]
        assert stored.stat()["size"] == item["size"]
        assert not [p for p in stored.parent.iterdir() if p.name.endswith(".part")]
    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "magi_test_videos", AssetEvent.source_run_id == dag_run.run_id)
        ).all()
        assert len(events) == 1
        extra = events[0].extra
    (prediction_id,) = magi_conn.app.predictions
    assert extra["prediction_id"] == prediction_id
    assert extra["prompt"].startswith("x [[duration")
    assert extra["paths"] == [item["path"] for item in written]
