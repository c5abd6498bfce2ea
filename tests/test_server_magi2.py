"""#33: the local server serves MAGI-2 (text-to-video and image-to-video) as WaveSpeed would:
inputs checked, billed per second of video, outputs of the asked length at 25 fps with sound."""

from __future__ import annotations

import io
import math
from array import array
from typing import Any

import av
import pytest
import requests

from airflow_provider_magi.testing import Fault, LocalWaveSpeedServer, clips
from airflow_provider_magi.testing.video import sample_video
from tests.helpers import CANARY_KEY, wait_until

AUTH = {"Authorization": f"Bearer {CANARY_KEY}"}
T2V = "sand-ai/magi-2/text-to-video"
I2V = "sand-ai/magi-2/image-to-video"
MAGI_1 = "wavespeed-ai/magi-1-24b"
FAST = " [[duration: 0.05]]"  # the prediction's run time on the server, not the video's length
CODEC_NOISE = 4.0  # mean absolute difference per channel of two encodes of one picture (CRF 18)


def submit(server: LocalWaveSpeedServer, model: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{server.base_url}/api/v3/{model}", json=body, headers=AUTH, timeout=5)


def completed(server: LocalWaveSpeedServer, model: str, body: dict[str, Any]) -> dict[str, Any]:
    """Submit, then poll until the prediction ends; its last answer."""
    answer = submit(server, model, body)
    assert answer.status_code == 200, answer.text
    url = answer.json()["data"]["urls"]["get"]
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen.update(requests.get(url, headers=AUTH, timeout=5).json()["data"])
        return seen["status"] in ("completed", "failed")

    wait_until(done, timeout=10)
    return seen


def download(data: dict[str, Any]) -> bytes:
    (url,) = data["outputs"]
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200
    return answer.content


def rgb_frames(video: bytes) -> list[Any]:
    with av.open(io.BytesIO(video)) as container:
        return [frame.reformat(format="rgb24") for frame in container.decode(video=0)]


def pixels(frame: Any) -> bytes:
    plane = frame.planes[0]
    data = bytes(plane)
    return b"".join(
        data[y * plane.line_size : y * plane.line_size + frame.width * 3] for y in range(frame.height)
    )


def difference(a: bytes, b: bytes) -> float:
    assert len(a) == len(b)
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def png(width: int, height: int, shade: int) -> tuple[bytes, bytes]:
    """A PNG picture with detail in it, and its RGB bytes."""
    rgb = bytes(
        value
        for y in range(height)
        for x in range(width)
        for value in (
            (x * 200 // width + shade) % 256,
            (y * 200 // height + shade) % 256,
            60 + (x // 32 + y // 32) % 2 * 80,
        )
    )
    frame = av.VideoFrame(width, height, "rgb24")
    frame.planes[0].update(
        b"".join(
            rgb[y * width * 3 : (y + 1) * width * 3] + bytes(frame.planes[0].line_size - width * 3)
            for y in range(height)
        )
    )
    encoder: Any = av.CodecContext.create("png", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "rgb24"
    return b"".join(bytes(packet) for packet in [*encoder.encode(frame), *encoder.encode(None)]), rgb


def upload(server: LocalWaveSpeedServer, data: bytes, name: str) -> str:
    files = {"file": (name, data, "image/png")}
    answer = requests.post(
        f"{server.base_url}/api/v3/media/upload/binary", files=files, headers=AUTH, timeout=5
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["data"]["download_url"])


def billed(server: LocalWaveSpeedServer, prediction_id: str) -> list[dict[str, Any]]:
    query = {"page": 1, "page_size": 100, "prediction_uuids": [prediction_id]}
    answer = requests.post(f"{server.base_url}/api/v3/billings/search", json=query, headers=AUTH, timeout=5)
    assert answer.status_code == 200
    return list(answer.json()["data"]["items"])


# ---------------------------------------------------------------- the endpoints and the video


def test_ten_seconds_of_text_to_video_at_25_fps_with_sound_bill_080(server: LocalWaveSpeedServer) -> None:
    data = completed(server, T2V, {"prompt": "a lighthouse at dusk" + FAST, "duration": 10, "seed": 42})
    assert data["status"] == "completed" and data["model"] == T2V
    video = download(data)
    with av.open(io.BytesIO(video)) as container:
        stream, sound = container.streams.video[0], container.streams.audio[0]
        assert stream.average_rate == 25 and stream.codec_context.name == "h264"
        assert float(stream.duration * stream.time_base) == 10.0
        assert sound.codec_context.name == "aac"
        assert float(sound.duration * sound.time_base) == 10.0  # exactly as long as the video
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 250
    with av.open(io.BytesIO(video)) as container:
        rate = container.streams.audio[0].rate
        samples = sum(frame.samples for frame in container.decode(audio=0))
    # An AAC decoder that ignores the track's end trim adds up to one frame of encoder padding.
    assert 10 * rate <= samples < 10 * rate + 1024
    (record,) = billed(server, data["id"])
    assert record["price"] == 0.8 and record["prediction"]["model_uuid"] == T2V
    assert server.balance == pytest.approx(100.0 - 0.8)


def test_the_sound_is_one_deterministic_tone_from_the_first_sample_to_the_last(
    server: LocalWaveSpeedServer,
) -> None:
    data = completed(server, T2V, {"prompt": "rain" + FAST, "duration": 4})
    hz = clips.tone_hz(data["id"])
    assert hz % 25 == 0  # a whole number of cycles per frame: at phase 0 on every frame boundary
    samples = array("f")
    with av.open(io.BytesIO(download(data))) as container:
        for frame in container.decode(audio=0):
            samples.frombytes(bytes(frame.planes[0])[: frame.samples * 4])
    rate = clips.AUDIO_RATE
    expected = [0.2 * math.sin(2 * math.pi * hz * i / rate) for i in range(4 * rate)]
    worst = max(abs(a - b) for a, b in zip(samples, expected, strict=False))
    assert worst < 0.02  # AAC's error on a pure tone (measured: below 0.005): no gap, click or shift


def test_the_default_length_is_5_seconds_and_bills_040(server: LocalWaveSpeedServer) -> None:
    data = completed(server, T2V, {"prompt": "a fox" + FAST})
    assert len(rgb_frames(download(data))) == 125
    assert [float(r.price) for r in server.billings] == [0.4]
    assert server.price_of(T2V) == 0.4 and server.price_of(T2V, 10) == 0.8 and server.price_of(I2V, 30) == 2.4


def test_usage_stats_give_the_per_second_price_and_the_total(server: LocalWaveSpeedServer) -> None:
    completed(server, T2V, {"prompt": "a" + FAST, "duration": 4})
    completed(server, T2V, {"prompt": "b" + FAST, "duration": 6})
    now = server.now()
    from datetime import UTC, datetime

    query = {
        "start_time": datetime.fromtimestamp(now - 3600, UTC).isoformat(),
        "end_time": datetime.fromtimestamp(now + 60, UTC).isoformat(),
    }
    answer = requests.post(f"{server.base_url}/api/v3/user/usage_stats", json=query, headers=AUTH, timeout=5)
    (usage,) = answer.json()["data"]["per_model_usage"]
    assert usage["model_uuid"] == T2V and usage["unit_price"] == 0.08
    assert usage["total_cost"] == 0.8 and usage["total_count"] == 2


def test_image_to_video_starts_from_the_image_and_ends_on_the_last_image(
    server: LocalWaveSpeedServer,
) -> None:
    first_png, first_rgb = png(256, 144, 0)
    last_png, last_rgb = png(256, 144, 120)
    body = {
        "image": upload(server, first_png, "first.png"),
        "last_image": upload(server, last_png, "last.png"),
        "prompt": "the tide comes in" + FAST,
        "duration": 4,
    }
    data = completed(server, I2V, body)
    frames = rgb_frames(download(data))
    assert len(frames) == 100 and (frames[0].width, frames[0].height) == (256, 144)
    assert difference(pixels(frames[0]), first_rgb) < CODEC_NOISE
    assert difference(pixels(frames[-1]), last_rgb) < CODEC_NOISE
    assert difference(pixels(frames[50]), first_rgb) > 3 * CODEC_NOISE  # it moves in between
    assert [float(r.price) for r in server.billings] == [0.32]


def test_image_to_video_keeps_the_image_shape_or_takes_the_aspect_ratio(server: LocalWaveSpeedServer) -> None:
    image = upload(server, png(200, 300, 7)[0], "tall.png")
    own = rgb_frames(download(completed(server, I2V, {"image": image, "duration": 4})))
    assert (own[0].width, own[0].height) == (144, 216)  # the image's 2:3, its short side 144
    square = rgb_frames(
        download(completed(server, I2V, {"image": image, "duration": 4, "aspect_ratio": "1:1"}))
    )
    assert (square[0].width, square[0].height) == (144, 144)
    wide = rgb_frames(
        download(completed(server, T2V, {"prompt": "x" + FAST, "duration": 4, "aspect_ratio": "21:9"}))
    )
    assert (wide[0].width, wide[0].height) == (336, 144)


def test_an_image_the_server_cannot_read_still_gives_the_asked_length(server: LocalWaveSpeedServer) -> None:
    data = completed(server, I2V, {"image": "https://example.com/frame.png", "duration": 4})
    assert len(rgb_frames(download(data))) == 100  # a made-up picture: nothing off this machine is fetched


def test_without_pyav_the_sample_clip_is_served(
    server: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clips, "has_encoder", lambda: False)
    data = completed(server, T2V, {"prompt": "x" + FAST, "duration": 10})
    assert download(data) == sample_video()
    assert [float(r.price) for r in server.billings] == [0.8]  # billed as asked, whatever was served


# ---------------------------------------------------------------- inputs checked as WaveSpeed would


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (T2V, {}, "prompt is required"),
        (T2V, {"prompt": "   "}, "prompt is required"),
        (T2V, {"prompt": 5}, "prompt"),
        (T2V, {"prompt": "x", "duration": 3}, "duration must be a whole number from 4 to 30"),
        (T2V, {"prompt": "x", "duration": 31}, "duration must be a whole number from 4 to 30"),
        (T2V, {"prompt": "x", "duration": 5.5}, "duration"),
        (T2V, {"prompt": "x", "duration": "10"}, "duration"),
        (T2V, {"prompt": "x", "duration": True}, "duration"),
        (T2V, {"prompt": "x", "aspect_ratio": "2:1"}, "aspect_ratio must be one of"),
        (T2V, {"prompt": "x", "seed": 2**31}, "seed"),
        (I2V, {"prompt": "x"}, "image is required"),
        (I2V, {"image": "frame.png"}, "image must be a URL"),
        (I2V, {"last_image": "https://example.com/b.png"}, "last_image needs image"),
        (I2V, {"image": "https://example.com/a.png", "last_image": "b.png"}, "last_image must be a URL"),
        (I2V, {"image": "https://example.com/a.png", "duration": 0}, "duration"),
        (I2V, {"image": "https://example.com/a.png", "aspect_ratio": "16/9"}, "aspect_ratio"),
    ],
)
def test_bad_inputs_answer_400_naming_the_field(
    server: LocalWaveSpeedServer, model: str, body: dict[str, Any], field: str
) -> None:
    answer = submit(server, model, body)
    assert answer.status_code == 400
    assert field in answer.json()["message"]
    assert server.app.predictions == {} and server.billings == []


def test_every_allowed_value_is_taken(server: LocalWaveSpeedServer) -> None:
    for aspect in ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9"):
        assert submit(server, T2V, {"prompt": "x [[never]]", "aspect_ratio": aspect}).status_code == 200
    for seconds in (4, 30):
        assert (
            submit(server, I2V, {"image": "https://example.com/a.png", "duration": seconds}).status_code
            == 200
        )
    # Fields the catalogue does not name pass through, as WaveSpeed takes extra fields.
    assert submit(server, T2V, {"prompt": "x [[never]]", "generate_audio": False}).status_code == 200


# ---------------------------------------------------------------- faults, directives, balance, counts


def test_directives_and_faults_work_as_for_magi_1(server: LocalWaveSpeedServer) -> None:
    failed = completed(
        server, T2V, {"prompt": "x [[fail: GPU out of memory]] [[duration: 0.05]]", "duration": 8}
    )
    assert failed["status"] == "failed" and failed["error"] == "GPU out of memory"
    server.set_faults([Fault(route="submit", kind="status", status=503, times=1)])
    assert submit(server, I2V, {"image": "https://example.com/a.png"}).status_code == 503
    # [[duration]] is the run time here; the duration input is the video's length.
    data = completed(
        server, I2V, {"image": "https://example.com/a.png", "prompt": "[[duration: 0.05]]", "duration": 6}
    )
    assert data["timings"]["inference"] == 50
    assert len(rgb_frames(download(data))) == 150
    assert [float(r.price) for r in server.billings] == [0.48]  # the failed one is not billed


def test_a_balance_short_of_the_length_asked_refuses_the_submit(server: LocalWaveSpeedServer) -> None:
    server.set_balance(0.5)
    refused = submit(server, T2V, {"prompt": "x", "duration": 10})
    assert refused.status_code == 403 and "Insufficient balance" in refused.json()["message"]
    assert submit(server, T2V, {"prompt": "x", "duration": 6}).status_code == 200  # $0.48


def test_submits_are_counted_per_model(server: LocalWaveSpeedServer) -> None:
    for _ in range(2):
        submit(server, T2V, {"prompt": "x [[never]]"})
    submit(server, I2V, {"image": "https://example.com/a.png", "prompt": "[[never]]"})
    submit(server, MAGI_1, {"prompt": "x [[never]]"})
    submit(server, T2V, {"duration": 5})  # refused: counted with its status
    assert server.count("submit") == 5
    assert server.count("submit", model=T2V) == 3 and server.count("submit", model=T2V, status=200) == 2
    assert server.count("submit", model=I2V) == 1 and server.count("submit", model=MAGI_1) == 1
    seen = requests.get(f"{server.base_url}/_testing/requests", timeout=5).json()
    assert [r["model"] for r in seen] == [T2V, T2V, I2V, MAGI_1, T2V]


def test_per_second_prices_and_a_flat_price_can_be_set() -> None:
    with LocalWaveSpeedServer(api_key=CANARY_KEY, per_second_prices={T2V: 0.1}, prices={I2V: 1.5}) as server:
        assert server.price_of(T2V, 10) == 1.0
        assert server.price_of(I2V, 10) == 1.5  # a flat price wins over the per-second rule
        assert server.price_of(MAGI_1) == 0.3


def test_only_the_models_asked_for_are_served() -> None:
    with LocalWaveSpeedServer(api_key=CANARY_KEY, models=[MAGI_1]) as server:
        answer = submit(server, T2V, {"prompt": "x"})
        assert answer.status_code == 404 and T2V in answer.json()["message"]
