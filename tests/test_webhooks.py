"""Webhook pass-through and the signature helper."""

from __future__ import annotations

import json

import pytest

from airflow_provider_magi.exceptions import MagiInputError
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.testing import LocalWaveSpeedServer
from airflow_provider_magi.validation import check_webhook_url
from airflow_provider_magi.webhooks import MagiWebhookError, sign_webhook, verify_webhook
from tests.helpers import wait_until

SECRET = "whsec_5f2b8c0e9a7d4e1f"
BODY = json.dumps({"id": "p1", "status": "completed", "outputs": ["https://cdn.example/p1.mp4"]}).encode()
NOW = 1_800_000_000


def headers(body: bytes = BODY, timestamp: int = NOW, secret: str = SECRET) -> dict[str, str]:
    return {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(timestamp),
        "Webhook-Signature": sign_webhook(secret, "msg_1", timestamp, body),
    }


def test_genuine_call_is_accepted() -> None:
    assert verify_webhook(headers(), BODY, SECRET, now=NOW + 10)["status"] == "completed"
    assert verify_webhook(headers(), BODY, SECRET.removeprefix("whsec_"), now=NOW)["id"] == "p1"


def test_signature_is_the_documented_hmac() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"5f2b8c0e9a7d4e1f", b"msg_1.1800000000." + BODY, hashlib.sha256).hexdigest()
    assert sign_webhook(SECRET, "msg_1", NOW, BODY) == f"v3,{expected}"


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: verify_webhook(headers(), BODY + b" ", SECRET, now=NOW), "does not match"),
        (lambda: verify_webhook(headers(secret="whsec_other"), BODY, SECRET, now=NOW), "does not match"),
        (lambda: verify_webhook(headers(), BODY, SECRET, now=NOW + 301), "outside the 300s tolerance"),
        (lambda: verify_webhook({"Webhook-Id": "x"}, BODY, SECRET, now=NOW), "without webhook-timestamp"),
        (
            lambda: verify_webhook({**headers(), "Webhook-Timestamp": "soon"}, BODY, SECRET, now=NOW),
            "Unix seconds",
        ),
    ],
)
def test_forged_or_stale_calls_are_refused(call, reason: str) -> None:
    with pytest.raises(MagiWebhookError, match=reason):
        call()


def test_webhook_url_is_sent_as_a_query_parameter(magi_conn: LocalWaveSpeedServer) -> None:
    prediction = MagiHook().create_prediction(
        {"prompt": "x"}, webhook_url="https://hooks.example/magi?team=a"
    )
    assert magi_conn.app.predictions[prediction.id].webhook == "https://hooks.example/magi?team=a"
    assert magi_conn.app.predictions[prediction.id].inputs == {"prompt": "x"}  # not in the body


def test_webhook_url_must_be_https() -> None:
    assert check_webhook_url(None) is None
    assert check_webhook_url("https://hooks.example/x") == "https://hooks.example/x"
    with pytest.raises(MagiInputError, match="Invalid webhook_url: is not an https URL"):
        check_webhook_url("http://hooks.example/x")


# ---------------------------------------------------------------- #13 item 13: hostile calls


def forged_with_empty_secret(secret: str) -> dict[str, str]:
    """What an attacker signs when the receiver's secret is empty: an HMAC with an empty key."""
    import hashlib
    import hmac

    digest = hmac.new(b"", b"msg_1.1800000000." + BODY, hashlib.sha256).hexdigest()
    return {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(NOW), "Webhook-Signature": f"v3,{digest}"}


@pytest.mark.parametrize("secret", ["", "whsec_", "   ", "whsec_  "])
def test_an_empty_secret_is_refused_not_used(secret: str) -> None:
    with pytest.raises(MagiWebhookError, match="secret is empty"):
        verify_webhook(forged_with_empty_secret(secret), BODY, secret, now=NOW)
    with pytest.raises(MagiWebhookError, match="secret is empty"):
        sign_webhook(secret, "msg_1", NOW, BODY)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"Webhook-Timestamp": "9" * 400}, "Unix seconds"),
        ({"Webhook-Timestamp": "-5"}, "Unix seconds"),
        ({"Webhook-Timestamp": "1e9"}, "Unix seconds"),
        ({"Webhook-Timestamp": "١٨٠٠٠٠٠٠٠٠"}, "Unix seconds"),  # digits, but not ASCII ones
        ({"Webhook-Signature": 42}, "header of type int"),
    ],
)
def test_malformed_headers_raise_the_webhook_error(changes: dict, reason: str) -> None:
    with pytest.raises(MagiWebhookError, match=reason):
        verify_webhook({**headers(), **changes}, BODY, SECRET, now=NOW)


def test_headers_and_body_as_bytes_are_read_as_a_server_gives_them() -> None:
    raw = {key.encode(): value.encode() for key, value in headers().items()}
    assert verify_webhook(raw, BODY, SECRET, now=NOW)["id"] == "p1"
    with pytest.raises(MagiWebhookError, match="raw request body as bytes"):
        verify_webhook(headers(), BODY.decode(), SECRET, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(MagiWebhookError, match="does not match"):
        verify_webhook({**raw, b"Webhook-Signature": b"v3,\xff\xfe"}, BODY, SECRET, now=NOW)


# ---------------------------------------------------------------- #14 item 4: delivered, end to end


@pytest.fixture
def receiver():
    """Your own webhook receiver, on loopback: answers 500 as often as told, then 200."""
    from tests.hostile import HostileServer, http_answer

    failures = {"left": 0}

    def respond(seen):
        if failures["left"] > 0:
            failures["left"] -= 1
            return http_answer(500, b"try again")
        return http_answer(200, b"ok")

    with HostileServer(respond) as server:
        server.failures = failures  # type: ignore[attr-defined]
        yield server


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_a_dag_run_gets_a_signed_call_the_helper_verifies(
    dag_bag, magi_conn: LocalWaveSpeedServer, receiver, outcome: str
) -> None:
    from tests.helpers import CANARY_KEY, run_dag

    prompt = "a bell rings [[duration: 0.2]]" + (" [[fail: the bell cracked]]" if outcome == "failed" else "")
    dag_run = run_dag(
        dag_bag, "magi_test_webhook", receiver=f"{receiver.base_url}/hooks/wavespeed", prompt=prompt
    )
    assert dag_run.state == ("success" if outcome == "completed" else "failed")
    wait_until(lambda: len(receiver.seen) == 1, timeout=15)
    (call,) = receiver.seen
    secret = MagiHook().get_webhook_secret()
    prediction = verify_webhook(call.headers, call.body, secret)
    (prediction_id,) = magi_conn.app.predictions
    assert (prediction["id"], prediction["status"]) == (prediction_id, outcome)
    assert call.path == "/hooks/wavespeed"
    assert "authorization" not in call.headers
    assert CANARY_KEY not in json.dumps(call.headers) + call.body.decode()


def test_a_corrupted_signature_is_refused_and_a_failing_receiver_is_retried(
    magi_conn: LocalWaveSpeedServer, receiver
) -> None:
    from airflow_provider_magi.testing import Fault

    receiver.failures["left"] = 2
    magi_conn.set_faults([Fault(route="webhook", kind="corrupt_signature", times=1)])
    MagiHook().create_prediction(
        {"prompt": "x [[duration: 0.1]]"}, webhook_url=f"{receiver.base_url}/hooks/wavespeed"
    )
    wait_until(lambda: len(receiver.seen) == 3, timeout=15)
    # The receiver sees the third call before the sender has recorded its answer.
    wait_until(lambda: len(magi_conn.app.webhooks.deliveries) == 3, timeout=15)
    assert [d.status for d in magi_conn.app.webhooks.deliveries] == [500, 500, 200]
    secret = MagiHook().get_webhook_secret()
    first, _, last = receiver.seen
    with pytest.raises(MagiWebhookError, match="does not match"):
        verify_webhook(first.headers, first.body, secret)  # the corrupted one
    assert verify_webhook(last.headers, last.body, secret)["status"] == "completed"


def test_the_local_server_refuses_a_webhook_that_is_not_https(magi_conn: LocalWaveSpeedServer) -> None:
    from airflow_provider_magi.exceptions import MagiRejectedError

    with pytest.raises(MagiRejectedError, match="webhook must be an https URL"):
        MagiHook().create_prediction({"prompt": "x"}, webhook_url="http://hooks.example/wavespeed")
    assert magi_conn.app.predictions == {}
