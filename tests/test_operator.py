"""MagiGenerateVideoOperator and MagiPredictionSensor in real DAG runs (dag.test) over loopback."""

from __future__ import annotations

import pytest

from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.helpers import CANARY_KEY, DAG_TEST_LOGS_EXCEPTIONS, run_dag, task_instance, xcom

# dag.test(run_conf=...) leaves its values on the (session-wide) DAG's params: always pass all.
PARAMS = {"prompt": "x", "seed": None, "image": None, "extra_inputs": None}


@pytest.mark.parametrize("mode", ["deferrable", "sync"])
def test_generate_and_download(dag_bag, magi_conn: LocalWaveSpeedServer, mode: str) -> None:
    dag_run = run_dag(dag_bag, f"magi_test_generate_{mode}")
    assert dag_run.state == "success"
    generate = task_instance(dag_run, "generate")
    assert generate.try_number == 1
    prediction_id = xcom(dag_run, "generate", key="prediction_id")
    assert prediction_id in magi_conn.app.predictions
    assert magi_conn.app.predictions[prediction_id].inputs["seed"] == 42  # "{{ 40 + 2 }}" became an int
    result = xcom(dag_run, "generate")
    assert result["prediction_id"] == prediction_id
    assert result["status"] == "completed"
    assert result["outputs"] == [f"{magi_conn.base_url}/outputs/{prediction_id}/0.mp4"]
    assert result["inputs"]["prompt"].startswith("a kite")
    assert xcom(dag_run, "generate", key="prediction_result_url").endswith(
        f"/predictions/{prediction_id}/result"
    )
    assert magi_conn.count("submit") == 1
    files = xcom(dag_run, "download")
    assert len(files) == 1 and files[0]["size"] > 20000 and len(files[0]["sha256"]) == 64


def test_deferrable_wait_happens_in_the_trigger(dag_bag, magi_conn: LocalWaveSpeedServer, task_logs) -> None:
    dag_run = run_dag(dag_bag, "magi_test_generate_deferrable")
    assert dag_run.state == "success"
    logs = task_logs()
    assert "Pausing task as DEFERRED" in logs or "running trigger in line" in logs
    assert "airflow_provider_magi.triggers.magi.MagiPredictionTrigger" in logs  # the polls ran there
    assert "is completed after" in logs


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"prompt": "   "}, "Invalid prompt: is empty"),
        ({"prompt": "x", "seed": 2147483648}, "Invalid seed: is out of range"),
        ({"prompt": "x", "seed": True}, "Invalid seed: must be an integer, not a boolean"),
        ({"prompt": "x", "image": "/nonexistent/no-such-frame.png"}, "Invalid image: does not exist"),
        ({"prompt": "x", "image": "no-such-frame.png"}, "Invalid image: is a relative path"),
        ({"prompt": "x", "extra_inputs": {"seed": 1}}, "repeats the named parameter(s) seed"),
    ],
)
def test_bad_input_fails_before_any_request_without_retries(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs, conf: dict, message: str
) -> None:
    dag_run = run_dag(dag_bag, "magi_test_params", **{**PARAMS, **conf})
    assert dag_run.state == "failed"
    ti = task_instance(dag_run, "generate")
    assert ti.state == "failed"
    assert ti.try_number == 1  # retries=2, but a retry cannot fix bad input
    assert not DAG_TEST_LOGS_EXCEPTIONS or message in task_logs()
    assert magi_conn.requests == []


def test_params_render_to_a_valid_request(dag_bag, magi_conn: LocalWaveSpeedServer) -> None:
    conf = {
        "prompt": "a tram [[duration: 0.1]]",
        "seed": "7",
        "image": "https://example.com/f.png",
        "extra_inputs": {"resolution": "720p"},
    }
    dag_run = run_dag(dag_bag, "magi_test_params", **{**PARAMS, **conf})
    assert dag_run.state == "success"
    (prediction,) = magi_conn.app.predictions.values()
    assert prediction.inputs == {
        "prompt": "a tram [[duration: 0.1]]",
        "seed": 7,
        "image": "https://example.com/f.png",
        "resolution": "720p",
    }


@pytest.mark.money
@pytest.mark.parametrize("crash_in", ["poll", "result"])
def test_retry_reattaches_instead_of_paying_twice(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs, crash_in: str
) -> None:
    dag_run = run_dag(dag_bag, f"magi_test_crash_in_{crash_in}")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "generate").try_number == 2
    assert magi_conn.count("submit") == 1  # the retry reused the first try's prediction
    assert not DAG_TEST_LOGS_EXCEPTIONS or "simulated worker crash" in task_logs()
    expected = "Reattached to prediction" if crash_in == "poll" else "Reusing completed prediction"
    assert expected in task_logs()
    (prediction_id,) = magi_conn.app.predictions
    assert xcom(dag_run, "generate")["prediction_id"] == prediction_id


@pytest.mark.money
def test_retry_resubmits_after_a_failed_prediction(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs
) -> None:
    dag_run = run_dag(dag_bag, "magi_test_failed_then_resubmitted")
    assert dag_run.state == "failed"  # the fresh prediction fails too ([[fail]] in the prompt)
    assert magi_conn.count("submit") == 2
    assert "paid for by an earlier try is failed: submitting afresh" in task_logs()


@pytest.mark.money
def test_retry_resubmits_when_the_prediction_no_longer_exists(
    dag_bag, magi_conn: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_test_forgotten_then_resubmitted")
    assert dag_run.state == "success"
    assert magi_conn.count("submit") == 2
    assert len(magi_conn.app.predictions) == 1  # the forgotten one is gone, the new one completed


def test_failed_prediction_fails_once_with_the_api_error(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs
) -> None:
    dag_run = run_dag(dag_bag, "magi_test_failed")
    assert dag_run.state == "failed"
    ti = task_instance(dag_run, "generate")
    assert ti.try_number == 1
    (prediction_id,) = magi_conn.app.predictions
    assert f"Prediction {prediction_id} failed: GPU out of memory" in task_logs()
    assert magi_conn.count("submit") == 1


def test_never_finishing_prediction_times_out_once(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs
) -> None:
    dag_run = run_dag(dag_bag, "magi_test_never")
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "generate").try_number == 1
    assert "did not finish within the timeout" in task_logs()
    assert magi_conn.count("submit") == 1


def test_submit_without_waiting_then_sensors(dag_bag, magi_conn: LocalWaveSpeedServer) -> None:
    dag_run = run_dag(dag_bag, "magi_test_no_wait_then_sensor")
    assert dag_run.state == "success"
    prediction_id = xcom(dag_run, "submit")
    assert isinstance(prediction_id, str) and prediction_id in magi_conn.app.predictions
    for task_id in ("wait_deferred", "wait_poke"):
        result = xcom(dag_run, task_id)
        assert result["prediction_id"] == prediction_id
        assert result["status"] == "completed"
        assert xcom(dag_run, task_id, key="prediction_result_url").endswith(f"/{prediction_id}/result")


def test_sensor_fails_on_a_failed_prediction_without_retries(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs
) -> None:
    dag_run = run_dag(dag_bag, "magi_test_sensor_failed")
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "wait").try_number == 1
    assert not DAG_TEST_LOGS_EXCEPTIONS or "failed: bad frame" in task_logs()


def test_no_secret_in_xcom_or_rendered_fields(dag_bag, magi_conn: LocalWaveSpeedServer) -> None:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag_run = run_dag(dag_bag, "magi_test_generate_deferrable")
    assert dag_run.state == "success"
    with create_session() as session:
        xcoms = session.scalars(select(XComModel).where(XComModel.run_id == dag_run.run_id)).all()
        rendered = session.scalars(
            select(RenderedTaskInstanceFields).where(RenderedTaskInstanceFields.run_id == dag_run.run_id)
        ).all()
        assert xcoms and rendered
        text = repr([(x.key, x.value) for x in xcoms]) + repr([r.rendered_fields for r in rendered])
    assert CANARY_KEY not in text
