"""The local WaveSpeed server is product: it must behave like the documented API."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
import requests

from airflow_provider_magi.testing import Fault, LocalWaveSpeedServer
from airflow_provider_magi.testing.video import iter_video, sample_video
from tests.helpers import CANARY_KEY, wait_until

AUTH = {"Authorization": f"Bearer {CANARY_KEY}"}
SUBMIT = "/api/v3/wavespeed-ai/magi-1-24b"


def submit(server: LocalWaveSpeedServer, body: object) -> requests.Response:
    return requests.post(server.base_url + SUBMIT, json=body, headers=AUTH, timeout=5)


def result(server: LocalWaveSpeedServer, prediction_id: str) -> dict:
    response = requests.get(
        f"{server.base_url}/api/v3/predictions/{prediction_id}/result", headers=AUTH, timeout=5
    )
    assert response.status_code == 200
    return response.json()["data"]


def decode_frames(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        return sum(1 for _ in container.decode(video=0))


def test_lifecycle_created_processing_completed(server: LocalWaveSpeedServer) -> None:
    response = submit(server, {"prompt": "waves [[duration: 0.6]]", "seed": 1})
    assert response.status_code == 200
    envelope = response.json()
    assert envelope["code"] == 200 and envelope["message"] == "success"
    data = envelope["data"]
    assert data["status"] == "created" and data["outputs"] == []
    assert data["urls"]["get"].endswith(f"/api/v3/predictions/{data['id']}/result")
    # The stage follows the prediction's clock; it is moved here, not slept through, so a busy
    # machine cannot skip a stage between two reads.
    stored = server.app.predictions[data["id"]]
    stored.started = time.monotonic() + 60  # not started yet, however long the read takes
    assert result(server, data["id"])["status"] == "created"
    stored.duration = 3600.0
    stored.started = time.monotonic() - 60  # past the queue, an hour from done
    assert result(server, data["id"])["status"] == "processing"
    stored.started = time.monotonic() - stored.duration - 1
    done = result(server, data["id"])
    assert done["status"] == "completed"
    assert len(done["outputs"]) == 1 and done["has_nsfw_contents"] == [False]
    assert done["timings"]["inference"] > 0 and done["error"] == ""


def test_output_is_a_playable_mp4(server: LocalWaveSpeedServer) -> None:
    prediction_id = submit(server, {"prompt": "x [[duration: 0]]"}).json()["data"]["id"]
    url = result(server, prediction_id)["outputs"][0]
    video = requests.get(url, timeout=5)
    assert video.headers["Content-Type"] == "video/mp4"
    assert video.content == sample_video()
    assert decode_frames(video.content) == 48  # 2 s at 24 fps


def test_padded_output_is_still_playable() -> None:
    data = b"".join(iter_video(3_000_000))
    assert len(data) == 3_000_000
    assert decode_frames(data) == 48


def test_range_requests_resume(server: LocalWaveSpeedServer) -> None:
    prediction_id = submit(server, {"prompt": "x [[duration: 0]] [[size: 100000]]"}).json()["data"]["id"]
    url = result(server, prediction_id)["outputs"][0]
    full = requests.get(url, timeout=5).content
    tail = requests.get(url, headers={"Range": "bytes=60000-"}, timeout=5)
    assert tail.status_code == 206
    assert tail.headers["Content-Range"] == "bytes 60000-99999/100000"
    assert full[60000:] == tail.content


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "prompt is required"),
        ({"prompt": "  "}, "prompt is required"),
        ({"prompt": "x", "seed": "7"}, "seed must be an integer"),
        ({"prompt": "x", "seed": True}, "seed must be an integer"),
        ({"prompt": "x", "seed": -2}, "seed must be an integer"),
        ({"prompt": "x", "image": "frame.png"}, "image must be a URL"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_validates_inputs_like_the_service(server: LocalWaveSpeedServer, body: object, message: str) -> None:
    response = submit(server, body)
    assert response.status_code == 400
    assert message in response.json()["message"]
    assert server.app.predictions == {}


def test_requires_the_bearer_key(server: LocalWaveSpeedServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": CANARY_KEY}):
        response = requests.post(server.base_url + SUBMIT, json={"prompt": "x"}, headers=headers, timeout=5)
        assert response.status_code == 401
        assert CANARY_KEY not in response.text
    assert server.app.predictions == {}


def test_per_prediction_directives(server: LocalWaveSpeedServer) -> None:
    failed = submit(server, {"prompt": "x [[duration: 0]] [[fail: GPU out of memory]]"}).json()["data"]["id"]
    never = submit(server, {"prompt": "x [[duration: 0]] [[never]]"}).json()["data"]["id"]
    nsfw = submit(server, {"prompt": "x [[duration: 0]] [[nsfw]] [[outputs: 2]]"}).json()["data"]["id"]
    odd = submit(server, {"prompt": "x [[status: paused]]"}).json()["data"]["id"]
    time.sleep(0.05)
    assert result(server, failed)["status"] == "failed"
    assert result(server, failed)["error"] == "GPU out of memory"
    assert result(server, never)["status"] == "processing"
    assert result(server, nsfw)["has_nsfw_contents"] == [True, True]
    assert result(server, odd)["status"] == "paused"


def test_expired_and_truncated_outputs(server: LocalWaveSpeedServer) -> None:
    expired = submit(server, {"prompt": "x [[duration: 0]] [[expire]]"}).json()["data"]["id"]
    truncated = submit(server, {"prompt": "x [[duration: 0]] [[truncate]]"}).json()["data"]["id"]
    assert requests.get(result(server, expired)["outputs"][0], timeout=5).status_code == 403
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(result(server, truncated)["outputs"][0], timeout=5).content


def test_rate_limit_fault_sends_retry_after(server: LocalWaveSpeedServer) -> None:
    server.set_faults([Fault(route="submit", kind="rate_limit", limit=2, window=10.0)])
    statuses = [submit(server, {"prompt": "x"}) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert float(statuses[2].headers["Retry-After"]) > 0
    assert len(server.app.predictions) == 2


def test_admin_endpoints_configure_a_separate_process(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_magi.testing",
            "--port",
            "0",
            "--api-key",
            "k",
            "--completion-seconds",
            "0",
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ},
    )
    try:
        # A guard, not a measurement: a loaded machine can take many seconds to start Python.
        wait_until(lambda: port_file.exists() and bool(port_file.read_text()), timeout=120)
        base = f"http://127.0.0.1:{port_file.read_text()}"
        faults = [{"route": "submit", "kind": "status", "status": 503, "times": 1}]
        assert requests.put(f"{base}/_testing/faults", data=json.dumps(faults), timeout=5).status_code == 200
        headers = {"Authorization": "Bearer k"}
        first = requests.post(f"{base}{SUBMIT}", json={"prompt": "x"}, headers=headers, timeout=5)
        second = requests.post(f"{base}{SUBMIT}", json={"prompt": "x"}, headers=headers, timeout=5)
        assert (first.status_code, second.status_code) == (503, 200)
        log = requests.get(f"{base}/_testing/requests", timeout=5).json()
        assert [(r["route"], r["status"]) for r in log] == [("submit", 503), ("submit", 200)]
        bad = requests.put(
            f"{base}/_testing/faults", data=json.dumps([{"route": "nowhere", "kind": "drop"}]), timeout=5
        )
        assert bad.status_code == 400 and "fault route" in bad.json()["error"]
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0


def test_output_download_never_needs_the_key(server: LocalWaveSpeedServer) -> None:
    prediction_id = submit(server, {"prompt": "x [[duration: 0]]"}).json()["data"]["id"]
    url = result(server, prediction_id)["outputs"][0]
    assert requests.get(url, timeout=5).status_code == 200
    output_requests = [r for r in server.requests if r.route == "output"]
    assert output_requests and not any(r.sent_authorization for r in output_requests)


def test_the_newer_result_path_and_execution_time(server: LocalWaveSpeedServer) -> None:
    prediction_id = submit(server, {"prompt": "x [[duration: 0]]"}).json()["data"]["id"]
    newer = requests.get(f"{server.base_url}/api/v3/predictions/{prediction_id}", headers=AUTH, timeout=5)
    assert newer.status_code == 200
    data = newer.json()["data"]
    assert data == result(server, prediction_id) | {"status": data["status"]}
    assert data["executionTime"] == data["timings"]["inference"]


def test_a_submit_that_is_not_json_is_refused(server: LocalWaveSpeedServer) -> None:
    body = json.dumps({"prompt": "x"})
    answer = requests.post(server.base_url + SUBMIT, data=body, headers=AUTH, timeout=5)  # no Content-Type
    assert answer.status_code == 400
    assert answer.json()["message"] == "Content-Type must be application/json"
    assert server.app.predictions == {}


def test_uploads_take_only_image_video_and_audio(server: LocalWaveSpeedServer) -> None:
    files = {"file": ("notes.txt", b"not media", "text/plain")}
    answer = requests.post(
        f"{server.base_url}/api/v3/media/upload/binary", files=files, headers=AUTH, timeout=5
    )
    assert answer.status_code == 400
    ticket = {"filename": "notes.txt", "size": 9, "content_type": "text/plain"}
    answer = requests.post(f"{server.base_url}/api/v3/media/uploads", json=ticket, headers=AUTH, timeout=5)
    assert answer.status_code == 400 and "image, video and audio" in answer.json()["message"]
    big = {"filename": "f.png", "size": 21 * 2**20, "content_type": "image/png"}
    assert (
        requests.post(
            f"{server.base_url}/api/v3/media/uploads", json=big, headers=AUTH, timeout=5
        ).status_code
        == 413
    )
    assert server.app.media == {}


def test_the_command_line_help_shows_every_default() -> None:
    import subprocess
    import sys

    shown = subprocess.run(
        [sys.executable, "-m", "airflow_provider_magi.testing", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "(default: 127.0.0.1)" in shown and "(default: 8765)" in shown and "(default: 100.0)" in shown
    assert "(default 127.0.0.1) (default" not in shown  # said once, not twice


def test_hostile_requests_get_a_4xx_not_a_dropped_connection(server: LocalWaveSpeedServer) -> None:
    import requests

    key = {"Authorization": f"Bearer {server.app.config.api_key}"}
    submitted = requests.post(
        f"{server.base_url}/api/v3/wavespeed-ai/magi-1-24b",
        json={"prompt": "x [[duration: 0.1]]"},
        headers=key,
        timeout=10,
    ).json()["data"]["id"]
    answers = {
        "huge output index": requests.get(
            f"{server.base_url}/outputs/{submitted}/{'9' * 5000}.mp4", timeout=10
        ),
        "nested JSON": requests.post(
            f"{server.base_url}/api/v3/wavespeed-ai/magi-1-24b",
            data=b"[" * 100_000 + b"]" * 100_000,
            headers={**key, "Content-Type": "application/json"},
            timeout=10,
        ),
        "fault times as text": requests.post(
            f"{server.base_url}/_testing/faults",
            json={"route": "result", "kind": "drop", "times": "3"},
            timeout=10,
        ),
    }
    assert {name: answer.status_code for name, answer in answers.items()} == {
        "huge output index": 404,
        "nested JSON": 400,
        "fault times as text": 400,
    }


def test_the_server_keeps_a_bounded_amount_of_uploads() -> None:
    from airflow_provider_magi.testing import app as app_module

    with LocalWaveSpeedServer(api_key="k") as running:
        chunk = b"\x89PNG" + b"\0" * (20 * 2**20 - 4)
        for number in range(5):
            running.app._keep_media(f"m{number}", ("f.png", chunk, "image/png"))
        kept = sum(len(entry[1]) for entry in running.app.media.values())
    assert kept <= app_module.MAX_MEDIA_KEPT_BYTES
    assert "m4" in running.app.media and "m0" not in running.app.media  # the oldest went first


def test_the_request_log_shows_what_a_submit_carried_never_the_key(server: LocalWaveSpeedServer) -> None:
    import requests

    requests.post(
        f"{server.base_url}/api/v3/wavespeed-ai/magi-1-24b?webhook=https%3A%2F%2Fhooks.example%2Fw",
        json={"prompt": "a fox", "seed": 7},
        headers={"Authorization": f"Bearer {server.app.config.api_key}"},
        timeout=10,
    )
    (seen,) = requests.get(f"{server.base_url}/_testing/requests", timeout=10).json()
    assert seen["json"] == {"prompt": "a fox", "seed": 7}
    assert seen["query"] == {"webhook": "https://hooks.example/w"}
    assert seen["sent_authorization"] is True
    assert server.app.config.api_key not in json.dumps(seen)


@pytest.mark.parametrize(
    ("advertise", "expected_host"), [(None, "http://127.0.0.1:"), ("http://10.9.8.7:1", "http://10.9.8.7:1")]
)
def test_a_wildcard_bind_advertises_an_address_a_client_can_reach(
    advertise: str | None, expected_host: str
) -> None:
    import requests

    with LocalWaveSpeedServer(
        api_key="k", host="0.0.0.0", completion_seconds=0.1, advertise_url=advertise
    ) as running:
        assert running.base_url.startswith(expected_host)
        port = running._http.port
        answer = requests.post(
            f"http://127.0.0.1:{port}/api/v3/wavespeed-ai/magi-1-24b",
            json={"prompt": "x"},
            headers={"Authorization": "Bearer k"},
            timeout=10,
        ).json()["data"]
    assert answer["urls"]["get"].startswith(expected_host)
    assert "0.0.0.0" not in json.dumps(answer)
