"""Conformance: WaveSpeed's official Python SDK drives the local server through its public API.

Nobody here wrote the SDK, and it does reach the real service: where it and the local server
disagree, the server is wrong (or the protocol moved: a new SDK release fails here first). The
SDK version is pinned in pyproject.toml's test extra; raise it deliberately and read the diff.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest
import requests

from airflow_provider_magi.testing import Fault, LocalWaveSpeedServer
from tests.helpers import CANARY_KEY

wavespeed = pytest.importorskip("wavespeed", reason="the SDK is a test dependency")

MAGI = "wavespeed-ai/magi-1-24b"
MAGI_2_T2V = "sand-ai/magi-2/text-to-video"
MAGI_2_I2V = "sand-ai/magi-2/image-to-video"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16


@pytest.fixture
def server() -> LocalWaveSpeedServer:
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.3, sync_mode_limit=1.0) as running:
        yield running


@pytest.fixture
def client(server: LocalWaveSpeedServer) -> object:
    return wavespeed.Client(api_key=CANARY_KEY, base_url=server.base_url, retry_interval=0.05)


def plays(url: str) -> int:
    """The number of video frames in the MP4 behind ``url``: it downloads and decodes."""
    data = requests.get(url, timeout=10).content
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_text_to_video(client: object, server: LocalWaveSpeedServer) -> None:
    output = client.run(MAGI, {"prompt": "a fox at dawn", "seed": 7}, poll_interval=0.05)  # type: ignore[attr-defined]
    (url,) = output["outputs"]
    assert plays(url) > 10
    (prediction,) = server.app.predictions.values()
    assert prediction.inputs == {"prompt": "a fox at dawn", "seed": 7}


def test_image_to_video_from_a_url(client: object, server: LocalWaveSpeedServer) -> None:
    output = client.run(  # type: ignore[attr-defined]
        MAGI, {"prompt": "leaves drift past", "image": "https://example.com/frame.png"}, poll_interval=0.05
    )
    assert plays(output["outputs"][0]) > 10
    (prediction,) = server.app.predictions.values()
    assert prediction.inputs["image"] == "https://example.com/frame.png"


def test_upload_then_image_to_video(client: object, server: LocalWaveSpeedServer, tmp_path: Path) -> None:
    frame = tmp_path / "frame.png"
    frame.write_bytes(PNG)
    image_url = client.upload(str(frame))  # type: ignore[attr-defined]
    assert requests.get(image_url, timeout=5).content == PNG
    output = client.run(MAGI, {"prompt": "the door opens", "image": image_url}, poll_interval=0.05)  # type: ignore[attr-defined]
    assert plays(output["outputs"][0]) > 10
    put = [r for r in server.requests if r.route == "upload_put"]
    assert len(put) == 1 and not put[0].sent_authorization  # the SDK's PUT carries no key either


def test_a_failed_prediction_raises_with_the_reason(client: object) -> None:
    with pytest.raises(RuntimeError, match=r"Prediction failed .*GPU out of memory"):
        client.run(MAGI, {"prompt": "x [[fail: GPU out of memory]]"}, poll_interval=0.05)  # type: ignore[attr-defined]


def test_sync_mode_answers_the_finished_prediction_in_one_request(
    client: object, server: LocalWaveSpeedServer
) -> None:
    output = client.run(MAGI, {"prompt": "quick"}, enable_sync_mode=True)  # type: ignore[attr-defined]
    assert plays(output["outputs"][0]) > 10
    assert server.count("submit") == 1 and server.count("result") == 0


def test_sync_mode_times_out_as_the_sdk_expects(client: object, server: LocalWaveSpeedServer) -> None:
    with pytest.raises(RuntimeError, match=r"Sync mode timed out \(task_id: [0-9a-f]{32}\)"):
        client.run(MAGI, {"prompt": "slow [[never]]"}, enable_sync_mode=True)  # type: ignore[attr-defined]
    assert len(server.app.predictions) == 1  # it keeps running, to be polled later


def test_polling_rides_through_429s_and_503s(client: object, server: LocalWaveSpeedServer) -> None:
    server.set_faults(
        [
            Fault(route="result", kind="status", status=429, retry_after=0, times=2),
            Fault(route="result", kind="status", status=503, times=2),
        ]
    )
    output = client.run(MAGI, {"prompt": "through the storm"}, poll_interval=0.05)  # type: ignore[attr-defined]
    assert output["outputs"]
    statuses = [r.status for r in server.requests if r.route == "result"]
    assert statuses[:4] == [429, 429, 503, 503] and statuses[-1] == 200


def test_a_mistyped_model_is_refused_and_never_runs(client: object, server: LocalWaveSpeedServer) -> None:
    with pytest.raises(RuntimeError, match="HTTP 404"):
        client.run("wavespeed-ai/magi-1-42b", {"prompt": "x"}, poll_interval=0.05)  # type: ignore[attr-defined]
    assert server.app.predictions == {}


def test_magi_2_through_the_sdk(client: object, server: LocalWaveSpeedServer, tmp_path: Path) -> None:
    """The SDK's own client names MAGI-2's three-part ids; the server answers both endpoints."""
    output = client.run(  # type: ignore[attr-defined]
        MAGI_2_T2V,
        {"prompt": "a lighthouse at dusk", "duration": 4, "aspect_ratio": "9:16"},
        poll_interval=0.05,
    )
    assert plays(output["outputs"][0]) == 100  # 4 s at 25 fps
    frame = tmp_path / "frame.png"
    frame.write_bytes(PNG)
    image_url = client.upload(str(frame))  # type: ignore[attr-defined]
    output = client.run(MAGI_2_I2V, {"image": image_url, "duration": 5}, poll_interval=0.05)  # type: ignore[attr-defined]
    assert plays(output["outputs"][0]) == 125
    assert server.count("submit", model=MAGI_2_T2V) == 1 and server.count("submit", model=MAGI_2_I2V) == 1
    assert [float(record.price) for record in server.billings] == [0.32, 0.4]
    with pytest.raises(RuntimeError, match=r"HTTP 400.*duration"):
        client.run(MAGI_2_T2V, {"prompt": "x", "duration": 31}, poll_interval=0.05)  # type: ignore[attr-defined]
