"""The contract as code: envelope parsing, Retry-After, and the one rule for resending."""

from __future__ import annotations

import json

import pytest

from airflow_provider_magi.api import (
    ConnectFailure,
    ExchangeFailure,
    HTTPAnswer,
    Prediction,
    final_result,
    is_retryable,
    parse_prediction,
    parse_retry_after,
    raise_for_answer,
)
from airflow_provider_magi.exceptions import (
    MagiAPIError,
    MagiAuthError,
    MagiPredictionFailedError,
    MagiRejectedError,
    MagiResponseError,
)


def answer(status: int, body: object, content_type: str = "application/json") -> HTTPAnswer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HTTPAnswer(status_code=status, content_type=content_type, body=raw)


DATA = {
    "id": "p1",
    "model": "wavespeed-ai/magi-1-24b",
    "status": "completed",
    "outputs": ["https://cdn.example/p1.mp4"],
    "has_nsfw_contents": [False],
    "error": "",
    "created_at": "2026-01-01T00:00:00.000Z",
    "timings": {"inference": 1234},
    "urls": {"get": "https://api.example/api/v3/predictions/p1/result"},
}


def test_parses_a_completed_prediction() -> None:
    data = raise_for_answer(
        answer(200, {"code": 200, "message": "success", "data": DATA}), what="x", conn_id="c"
    )
    prediction = parse_prediction(data)
    assert prediction == Prediction(
        id="p1",
        model="wavespeed-ai/magi-1-24b",
        status="completed",
        outputs=("https://cdn.example/p1.mp4",),
        has_nsfw_contents=(False,),
        error="",
        created_at="2026-01-01T00:00:00.000Z",
        inference_ms=1234,
        result_url="https://api.example/api/v3/predictions/p1/result",
    )
    assert prediction.is_terminal and prediction.is_completed and not prediction.is_failed
    assert Prediction.from_result(prediction.to_result()) == prediction


def test_http_200_with_error_code_in_envelope_is_an_error() -> None:
    with pytest.raises(MagiAPIError) as caught:
        raise_for_answer(
            answer(200, {"code": 500, "message": "boom", "data": None}), what="Reading", conn_id="c"
        )
    assert caught.value.http_status == 500
    assert "boom" in str(caught.value)


def test_html_error_page_says_what_arrived() -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    with pytest.raises(MagiAPIError) as caught:
        raise_for_answer(answer(502, page, "text/html"), what="Reading p1", conn_id="c")
    text = str(caught.value)
    assert "502" in text and "text/html" in text and "Bad Gateway" in text


def test_malformed_json_in_200_is_a_response_error() -> None:
    with pytest.raises(MagiResponseError, match="expected a JSON envelope"):
        raise_for_answer(answer(200, b'{"code": 200, "data": {"id": '), what="Reading", conn_id="c")


def test_401_names_the_connection() -> None:
    with pytest.raises(MagiAuthError, match="connection 'my_conn'"):
        raise_for_answer(
            answer(401, {"code": 401, "message": "bad key", "data": None}), what="x", conn_id="my_conn"
        )


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_client_errors_are_rejections(status: int) -> None:
    with pytest.raises(MagiRejectedError) as caught:
        raise_for_answer(
            answer(status, {"code": status, "message": "nope", "data": None}), what="x", conn_id="c"
        )
    assert caught.value.http_status == status


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"status": "completed"}, "'id'"),
        ({"id": "p"}, "'status'"),
        ({"id": "p", "status": "completed", "outputs": "u"}, "'outputs'"),
        ({"id": "p", "status": "completed", "has_nsfw_contents": ["no"]}, "'has_nsfw_contents'"),
    ],
)
def test_strict_prediction_parsing(data: dict, field: str) -> None:
    with pytest.raises(MagiResponseError, match=field):
        parse_prediction(data)


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)


def api_error(status: int) -> MagiAPIError:
    return MagiAPIError("x", status_code=status)


@pytest.mark.parametrize(
    ("method", "error", "expected"),
    [
        ("GET", api_error(429), True),
        ("GET", api_error(500), True),
        ("GET", api_error(502), True),
        ("GET", api_error(503), True),
        ("GET", api_error(504), True),
        ("GET", api_error(404), False),
        ("GET", MagiAuthError("x", status_code=401), False),
        ("GET", ExchangeFailure("reset"), True),
        ("GET", ConnectFailure("refused"), True),
        ("POST", api_error(429), True),
        ("POST", ConnectFailure("refused"), True),
        ("POST", api_error(500), False),
        ("POST", api_error(502), False),
        ("POST", api_error(503), False),
        ("POST", api_error(504), False),
        ("POST", ExchangeFailure("timeout after send"), False),
        ("POST", MagiResponseError("junk"), False),
    ],
)
def test_retry_rule(method: str, error: BaseException, expected: bool) -> None:
    assert is_retryable(method, error) is expected


def test_final_result() -> None:
    done = parse_prediction(DATA)
    assert final_result(done)["outputs"] == ["https://cdn.example/p1.mp4"]
    with pytest.raises(MagiPredictionFailedError, match="p1 failed: GPU melted"):
        final_result(parse_prediction({**DATA, "status": "failed", "error": "GPU melted", "outputs": []}))
    with pytest.raises(MagiPredictionFailedError, match="without any outputs"):
        final_result(parse_prediction({**DATA, "outputs": []}))
    unknown = parse_prediction({**DATA, "status": "paused"})
    assert not unknown.is_terminal and not unknown.is_known_status
