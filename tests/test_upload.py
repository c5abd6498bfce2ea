"""A local first frame is checked before anything is sent, uploaded, and submitted by URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from airflow_provider_magi.exceptions import MagiInputError, MagiRejectedError, MagiResponseError
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.testing import Fault, LocalWaveSpeedServer
from airflow_provider_magi.validation import ImageFile, LocalImage, check_image
from tests.helpers import CANARY_KEY, run_dag
from tests.hostile import HostileServer, Seen, envelope, http_answer

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
    # Two steps, as WaveSpeed's SDK uploads; the PUT goes without the key.
    assert [(r.method, r.route, r.sent_authorization) for r in magi_conn.requests if r.route != "media"] == [
        ("POST", "upload_ticket", True),
        ("PUT", "upload_put", False),
    ]


def test_upload_is_resent_after_5xx_because_nothing_is_billed(
    magi_conn: LocalWaveSpeedServer, frame: Path
) -> None:
    magi_conn.set_faults(
        [
            Fault(route="upload_ticket", kind="status", status=503, times=1),
            Fault(route="upload_put", kind="status", status=503, times=1),
        ]
    )
    MagiHook().upload_media(read(frame))
    assert [(r.route, r.status) for r in magi_conn.requests] == [
        ("upload_ticket", 503),
        ("upload_ticket", 200),
        ("upload_put", 503),
        ("upload_put", 200),
    ]


def test_the_multipart_upload_is_used_only_where_the_two_step_one_answers_404(
    magi_conn: LocalWaveSpeedServer, frame: Path
) -> None:
    magi_conn.set_faults([Fault(route="upload_ticket", kind="status", status=404, times=1)])
    url = MagiHook().upload_media(read(frame))
    assert [(r.route, r.status) for r in magi_conn.requests if r.route != "media"] == [
        ("upload_ticket", 404),
        ("upload", 200),
    ]
    assert requests.get(url, timeout=5).content == PNG

    magi_conn.set_faults([Fault(route="upload_ticket", kind="status", status=400, times=1)])
    with pytest.raises(MagiRejectedError):  # any other refusal is not a reason to switch
        MagiHook().upload_media(read(frame))
    assert magi_conn.count("upload") == 1


def test_the_put_target_gets_the_bytes_and_its_headers_never_the_key(
    frame: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with HostileServer(lambda seen: http_answer(200, b"")) as storage:

        def api(seen: Seen) -> bytes:
            upload = {
                "method": "PUT",
                "url": f"{storage.base_url}/bucket/f.png",
                "headers": {"x-amz-acl": "private"},
            }
            return envelope({"upload": upload, "download_url": "https://cdn.example/f.png"})

        with HostileServer(api) as wavespeed:
            conn = {"conn_type": "magi", "host": wavespeed.base_url, "password": CANARY_KEY}
            monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", json.dumps(conn))
            assert MagiHook().upload_media(read(frame)) == "https://cdn.example/f.png"
    (ticket,) = wavespeed.seen
    assert json.loads(ticket.body) == {
        "filename": "first frame.png",
        "size": len(PNG),
        "content_type": "image/png",
    }
    assert ticket.headers["authorization"] == f"Bearer {CANARY_KEY}"
    (put,) = storage.seen
    assert (put.method, put.path, put.body) == ("PUT", "/bucket/f.png", PNG)
    assert put.headers["x-amz-acl"] == "private"
    assert "authorization" not in put.headers
    assert CANARY_KEY not in json.dumps(put.headers)


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/", "http://10.0.0.1/bucket/f.png", "https://user:pw@cdn.example/f"],
)
def test_a_put_target_no_bytes_may_go_to_is_refused(
    frame: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    def api(seen: Seen) -> bytes:
        return envelope(
            {"upload": {"method": "PUT", "url": target}, "download_url": "https://cdn.example/f.png"}
        )

    with HostileServer(api) as wavespeed:
        conn = {"conn_type": "magi", "host": wavespeed.base_url, "password": CANARY_KEY}
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", json.dumps(conn))
        with pytest.raises(MagiResponseError, match="points where no bytes may go"):
            MagiHook().upload_media(read(frame))
    assert len(wavespeed.seen) == 1


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
    assert [r.route for r in magi_conn.requests][:3] == ["upload_ticket", "upload_put", "submit"]


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"Transfer-Encoding": "chunked", "Content-Length": "3"}, "is not one a presigned upload needs"),
        ({"Host": "evil.example"}, "is not one a presigned upload needs"),
        ({"X Amz Acl": "private"}, "is not a valid header name"),
        ({"x-amz-meta-a": "a\x00b"}, "not printable ASCII"),
        ({"x-amz-meta-a": "€"}, "not printable ASCII"),
        ({"Content-Type": 7}, "is not text"),
    ],
)
def test_an_upload_instruction_with_headers_a_put_must_not_send_is_refused(
    headers: dict, problem: str
) -> None:
    from airflow_provider_magi.exceptions import MagiResponseError
    from airflow_provider_magi.uploads import parse_ticket

    data = {
        "upload": {"method": "PUT", "url": "https://s.example/u", "headers": headers},
        "download_url": "https://d/x",
    }
    with pytest.raises(MagiResponseError, match=problem):
        parse_ticket(data, "Uploading")


def test_the_headers_a_presigned_put_needs_are_kept() -> None:
    from airflow_provider_magi.uploads import parse_ticket

    headers = {
        "Content-Type": "image/png",
        "x-amz-acl": "private",
        "x-goog-meta-a": "b",
        "Content-MD5": "q==",
    }
    data = {
        "upload": {"method": "PUT", "url": "https://s.example/u", "headers": headers},
        "download_url": "https://d/x",
    }
    assert parse_ticket(data, "Uploading").headers == headers
