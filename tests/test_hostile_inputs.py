"""#13 items 7-9: a first frame is an image or nothing is sent; the key is cleaned or refused
and never quoted; numbers that are not finite are refused before sending and named on arrival."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from airflow_provider_magi.exceptions import (
    MagiAuthError,
    MagiInputError,
    MagiRejectedError,
    MagiResponseError,
)
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.testing import LocalWaveSpeedServer
from airflow_provider_magi.triggers.magi import MagiPredictionTrigger
from airflow_provider_magi.validation import MAX_IMAGE_BYTES, check_image, magi_inputs
from tests.helpers import CANARY_KEY, connection_json, run_dag, run_triggers, task_instance
from tests.hostile import HostileServer, Seen, envelope

PARAMS = {"prompt": "x", "seed": None, "image": None, "extra_inputs": None}
IMAGES = {
    "png": (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png"),
    "jpg": (b"\xff\xd8\xff\xe0" + b"\0" * 64, "image/jpeg"),
    "webp": (b"RIFF\x40\0\0\0WEBPVP8 " + b"\0" * 64, "image/webp"),
    "gif": (b"GIF89a" + b"\0" * 64, "image/gif"),
}


@pytest.mark.parametrize("kind", list(IMAGES))
def test_a_real_image_file_is_read_with_its_true_type(tmp_path: Path, kind: str) -> None:
    content, content_type = IMAGES[kind]
    path = tmp_path / "frame.bin"  # the name says nothing: the bytes decide
    path.write_bytes(content)
    image = check_image(str(path))
    assert not isinstance(image, str) and image is not None
    read = image.read()
    assert (read.content, read.content_type, read.name) == (content, content_type, "frame.bin")


def hostile_paths(tmp_path: Path) -> dict[str, str]:
    secret = tmp_path / "api-key.txt"
    secret.write_text(CANARY_KEY)
    link = tmp_path / "frame.png"
    link.symlink_to(secret)
    fifo = tmp_path / "frame-fifo.png"
    os.mkfifo(fifo)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    huge = tmp_path / "huge.png"
    with huge.open("wb") as handle:  # a PNG header, then more than the limit
        handle.write(IMAGES["png"][0])
        handle.truncate(MAX_IMAGE_BYTES + 1)
    return {
        "/etc/passwd": "/etc/passwd",
        "/proc/self/environ": "/proc/self/environ",
        "/dev/zero": "/dev/zero",
        "symlink to a secret": str(link),
        "fifo": str(fifo),
        "directory": str(tmp_path),
        "empty file": str(empty),
        "over the limit": str(huge),
        "missing": str(tmp_path / "missing.png"),
    }


EXPECTED = {
    "/etc/passwd": "is not a PNG, JPEG, WebP or GIF image",
    "/proc/self/environ": "is a kernel or device file",
    "/dev/zero": "is a kernel or device file",
    "symlink to a secret": "is not a PNG, JPEG, WebP or GIF image",
    "fifo": "is not a regular file",
    "directory": "is not a regular file",
    "empty file": "is not a PNG, JPEG, WebP or GIF image",
    "over the limit": "over the 20 MiB upload limit",
    "missing": "does not exist",
}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_anything_but_an_image_file_is_refused(tmp_path: Path, case: str) -> None:
    image = check_image(hostile_paths(tmp_path)[case])
    assert image is not None and not isinstance(image, str)
    with pytest.raises(MagiInputError) as caught:
        image.read()
    message = str(caught.value)
    assert message.startswith("Invalid image: ") and EXPECTED[case] in message and "Fix: " in message
    assert CANARY_KEY not in message


@pytest.mark.parametrize("case", ["/proc/self/environ", "symlink to a secret", "fifo"])
def test_a_hostile_first_frame_sends_nothing(
    dag_bag, magi_conn: LocalWaveSpeedServer, tmp_path: Path, case: str
) -> None:
    dag_run = run_dag(dag_bag, "magi_test_params", **{**PARAMS, "image": hostile_paths(tmp_path)[case]})
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "generate").try_number == 1  # bad input: not retried
    assert magi_conn.requests == []
    assert magi_conn.app.media == {}


def test_the_image_example_takes_only_https_urls_from_the_run_conf(dag_bag) -> None:
    param = dag_bag.get_dag("example_magi_image_to_video").params.get_param("image_url")
    for value in ("/proc/self/environ", "file:///etc/passwd", "http://10.0.0.1/x.png", "https://a b"):
        with pytest.raises(Exception, match="does not match"):
            param.resolve(value)
    assert param.resolve("https://cdn.example/frame.png") == "https://cdn.example/frame.png"


@pytest.mark.parametrize("stray", ["\n", "\r\n", " ", "\t"])
def test_a_key_with_surrounding_whitespace_works(
    magi_conn: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, stray: str
) -> None:
    conn = json.loads(connection_json(magi_conn))
    conn["password"] = f"{stray}{CANARY_KEY}{stray}"
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", json.dumps(conn))
    assert MagiHook().create_prediction({"prompt": "x"}).id
    assert MagiHook().test_connection()[0] is True


@pytest.mark.parametrize("bad", ["\n", "\x00", "\x7f", " ", "é"])
def test_a_key_with_an_inner_control_character_is_refused_without_quoting_it(
    magi_conn: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    key = CANARY_KEY[:8] + bad + CANARY_KEY[8:]
    conn = json.loads(connection_json(magi_conn))
    conn["password"] = key
    monkeypatch.setenv("AIRFLOW_CONN_MY_MAGI", json.dumps(conn))
    with pytest.raises(MagiAuthError) as caught:
        MagiHook("my_magi").create_prediction({"prompt": "x"})
    ok, message = MagiHook("my_magi").test_connection()
    assert not ok
    for text in (str(caught.value), message, repr(caught.value)):
        assert "connection 'my_magi'" in text and "Fix:" in text
        assert CANARY_KEY[:8] not in text and CANARY_KEY[8:] not in text
        assert "may have accepted" not in text
    assert magi_conn.requests == []


def test_text_the_server_sends_back_is_scrubbed_of_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    def respond(seen: Seen) -> bytes:
        echoed = seen.headers.get("authorization", "")
        if seen.method == "POST":
            return envelope(None, status=400, message=f"bad request from {echoed}")
        data = {"id": "p1", "status": "failed", "error": f"denied for {echoed} ({json.dumps(echoed)})"}
        return envelope(data)

    with HostileServer(respond) as server:
        conn = {"conn_type": "magi", "host": server.base_url, "password": CANARY_KEY}
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", json.dumps(conn))
        with pytest.raises(MagiRejectedError) as caught:
            MagiHook().create_prediction({"prompt": "x"})
        ((event,),) = run_triggers([MagiPredictionTrigger("p1", poll_interval=0.1)])
    assert "bad request from Bearer ***" in str(caught.value)
    assert "denied for Bearer ***" in event["message"]
    assert CANARY_KEY not in str(caught.value) + json.dumps(event)


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_extra_inputs_are_refused_before_any_request(
    magi_conn: LocalWaveSpeedServer, number: float
) -> None:
    with pytest.raises(MagiInputError, match=r"Invalid extra_inputs: is not strict JSON.*Fix: "):
        magi_inputs(prompt="x", extra_inputs={"guidance": {"scale": [1.0, number]}})
    with pytest.raises(MagiInputError, match="not strict JSON"):  # the hook refuses it too
        MagiHook().create_prediction({"prompt": "x", "guidance": number})
    assert magi_conn.requests == []


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "9" * 400])
def test_non_finite_numbers_in_an_answer_are_a_response_error(
    monkeypatch: pytest.MonkeyPatch, number: str
) -> None:
    raw = (
        '{"code": 200, "message": "success", "data": {"id": "p1", "status": "completed", '
        '"outputs": ["https://cdn.example/v.mp4"], "timings": {"inference": ' + number + "}}}"
    )

    def respond(seen: Seen) -> bytes:
        return envelope(None, raw=raw)

    with HostileServer(respond) as server:
        conn = {"conn_type": "magi", "host": server.base_url, "password": CANARY_KEY}
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", json.dumps(conn))
        with pytest.raises(MagiResponseError, match=r"'timings\.inference' is not a number of milliseconds"):
            MagiHook().get_prediction("p1")
        with pytest.raises(MagiResponseError, match=r"timings\.inference"):
            asyncio.run(MagiHook().aget_prediction("p1"))
        # In a trigger the same answer is a failed poll, not an exception out of run().
        (events,) = run_triggers([MagiPredictionTrigger("p1", poll_interval=0.1, deadline=_soon())])
    assert [event["status"] for event in events] == ["timeout"]


def _soon() -> float:
    import time

    return time.time() + 0.5
