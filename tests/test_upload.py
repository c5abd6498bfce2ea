"""A local first frame is checked before anything is sent, uploaded, and submitted by URL."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from airflow_provider_magi.exceptions import MagiInputError
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.testing import Fault, LocalWaveSpeedServer
from airflow_provider_magi.validation import ImageFile, LocalImage, check_image
from tests.helpers import run_dag

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


@pytest.fixture
def frame(tmp_path: Path) -> Path:
    path = tmp_path / "first frame.png"
    path.write_bytes(PNG)
    return path


def read(frame: Path) -> ImageFile:
    image = check_image(frame)
    assert isinstance(image, LocalImage)
    return image.read()


def test_upload_returns_a_url_serving_the_same_bytes(magi_conn: LocalWaveSpeedServer, frame: Path) -> None:
    url = MagiHook().upload_media(read(frame))
    assert url.startswith(f"{magi_conn.base_url}/media/") and url.endswith("/first_frame.png")
    assert requests.get(url, timeout=5).content == PNG
    (stored,) = magi_conn.app.media.values()
    assert stored == ("first_frame.png", PNG, "image/png")


def test_upload_is_resent_after_5xx_because_nothing_is_billed(
    magi_conn: LocalWaveSpeedServer, frame: Path
) -> None:
    magi_conn.set_faults([Fault(route="upload", kind="status", status=503, times=1)])
    MagiHook().upload_media(read(frame))
    assert [r.status for r in magi_conn.requests if r.route == "upload"] == [503, 200]


def test_local_paths_are_checked_before_anything_is_sent(frame: Path, tmp_path: Path) -> None:
    assert read(frame).content == PNG
    assert isinstance(check_image(str(frame)), LocalImage)
    assert check_image("https://example.com/f.png") == "https://example.com/f.png"
    with pytest.raises(MagiInputError, match="Invalid image: does not exist"):
        read(tmp_path / "missing.png")
    with pytest.raises(MagiInputError, match="is not a regular file"):
        read(tmp_path)
    big = tmp_path / "huge.png"
    with big.open("wb") as handle:
        handle.write(PNG)
        handle.truncate(21 * 2**20)
    with pytest.raises(MagiInputError, match=r"over the 20 MiB upload limit.*Fix: resize"):
        read(big)
    with pytest.raises(MagiInputError, match="is not an http\\(s\\) URL"):
        check_image("ftp://example.com/f.png")


def test_object_storage_path_is_accepted(frame: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    checked = check_image(f"file://{frame}")
    assert isinstance(checked, LocalImage)
    assert isinstance(checked.path, ObjectStoragePath)
    assert checked.read().content == PNG


def test_operator_uploads_then_submits_the_url(dag_bag, magi_conn: LocalWaveSpeedServer, frame: Path) -> None:
    conf = {
        "prompt": "a door opens [[duration: 0.1]]",
        "seed": None,
        "image": str(frame),
        "extra_inputs": None,
    }
    dag_run = run_dag(dag_bag, "magi_test_params", **conf)
    assert dag_run.state == "success"
    (prediction,) = magi_conn.app.predictions.values()
    (media_id,) = magi_conn.app.media
    assert prediction.inputs["image"] == f"{magi_conn.base_url}/media/{media_id}/first_frame.png"
    assert [r.route for r in magi_conn.requests][:2] == ["upload", "submit"]
