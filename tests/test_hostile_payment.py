"""#13 items 4-6: never pay twice, never lose what was paid.

A submit whose answer names an id keeps that id whatever else is wrong with the answer; a stored
prediction is reused only for the inputs it was made for; after the submit, nothing local can
fail the task.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_magi.exceptions import MagiSubmitUncertainError
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.helpers import CANARY_KEY, run_dag, task_instance, xcom
from tests.hostile import HostileServer, Seen, envelope, http_answer

SUBMIT_PATH = "/api/v3/wavespeed-ai/magi-1-24b"

# Every test here proves a rule about what is paid for: `make test` runs them on every Airflow minor.
pytestmark = pytest.mark.money

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def conn_json(base_url: str) -> str:
    extra = {"max_retries": 2, "max_retry_wait": 0.1, "read_timeout": 5}
    return json.dumps({"conn_type": "magi", "host": base_url, "password": CANARY_KEY, "extra": extra})


MALFORMED_SUBMIT_ANSWERS = {
    "nsfw flags as text": '"has_nsfw_contents": ["false"]',
    "inference is Infinity": '"timings": {"inference": Infinity}',
    "inference is 1e999": '"timings": {"inference": 1e999}',
    "inference is NaN": '"timings": {"inference": NaN}',
    "inference has 400 digits": '"timings": {"inference": ' + "9" * 400 + "}",
    "no status": '"status": null',
    "outputs not a list": '"outputs": "none yet"',
}


def api_with_a_malformed_submit_answer(malformed_field: str) -> HostileServer:
    """A WaveSpeed whose submit answers a valid id beside one malformed field; polls complete."""

    def respond(seen: Seen) -> bytes:
        if seen.method == "POST" and seen.path == SUBMIT_PATH:
            text = '{"code": 200, "message": "success", "data": {"id": "paid-1", "status": "created", '
            text += malformed_field + "}}"
            return envelope(None, raw=text)
        if seen.path.startswith("/api/v3/predictions/paid-1/result"):
            return envelope({"id": "paid-1", "status": "completed", "outputs": ["https://cdn.example/v.mp4"]})
        return http_answer(404, b"{}")

    return HostileServer(respond)


@pytest.mark.parametrize(
    "malformed", list(MALFORMED_SUBMIT_ANSWERS.values()), ids=list(MALFORMED_SUBMIT_ANSWERS)
)
def test_an_id_in_a_malformed_submit_answer_is_kept(monkeypatch: pytest.MonkeyPatch, malformed: str) -> None:
    with api_with_a_malformed_submit_answer(malformed) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        prediction = MagiHook().create_prediction({"prompt": "x"})
    assert prediction.id == "paid-1"
    assert [seen.method for seen in server.seen] == ["POST"]


@pytest.mark.parametrize(
    "malformed", ['"has_nsfw_contents": ["false"]', '"timings": {"inference": Infinity}']
)
def test_a_retry_after_a_malformed_submit_answer_does_not_pay_again(
    dag_bag, monkeypatch: pytest.MonkeyPatch, malformed: str
) -> None:
    with api_with_a_malformed_submit_answer(malformed) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        dag_run = run_dag(dag_bag, "magi_test_params", prompt="x", seed=None, image=None, extra_inputs=None)
    assert dag_run.state == "success"
    # Paid POSTs: the billing search after completion (a free read, answered 404 here) is not one.
    assert sum(seen.method == "POST" and seen.path == SUBMIT_PATH for seen in server.seen) == 1
    assert xcom(dag_run, "generate")["prediction_id"] == "paid-1"


def test_a_success_answer_without_an_id_is_uncertain_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    def respond(seen: Seen) -> bytes:
        return envelope({"status": "created"})

    with HostileServer(respond) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        with pytest.raises(MagiSubmitUncertainError, match="without a prediction id"):
            MagiHook().create_prediction({"prompt": "x"})
    assert sum(s.path == "/api/v3/wavespeed-ai/magi-1-24b" for s in server.seen) == 1  # never resent


def test_a_prompt_edited_before_the_retry_makes_a_new_video(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs
) -> None:
    dag_run = run_dag(dag_bag, "magi_test_prompt_edited_before_retry")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "generate").try_number == 2
    assert magi_conn.count("submit") == 2
    prompts = {p.id: p.inputs["prompt"] for p in magi_conn.app.predictions.values()}
    result = xcom(dag_run, "generate")
    assert prompts[result["prediction_id"]].startswith("second")  # the video is of what was asked
    assert result["inputs"]["prompt"].startswith("second")
    assert "was made for other inputs" in task_logs()


@pytest.mark.parametrize("then_retry", [False, True])
def test_a_first_frame_deleted_after_the_submit_cannot_fail_the_paid_task(
    dag_bag, magi_conn: LocalWaveSpeedServer, tmp_path: Path, then_retry: bool
) -> None:
    frame = tmp_path / "frame.png"
    frame.write_bytes(PNG)
    suffix = "_then_retry" if then_retry else ""
    dag_run = run_dag(dag_bag, f"magi_test_frame_deleted_after_submit{suffix}", image=str(frame))
    assert not frame.exists()
    assert dag_run.state == "success"
    assert task_instance(dag_run, "generate").try_number == (2 if then_retry else 1)
    assert magi_conn.count("submit") == 1
    assert xcom(dag_run, "generate")["inputs"]["image"] == str(frame)
