"""Download parameters that would lose data or fail after payment are refused as early as possible."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_provider_magi.exceptions import MagiInputError
from airflow_provider_magi.operators.download import MagiDownloadOutputsOperator
from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.helpers import DAG_TEST_LOGS_EXCEPTIONS, run_dag, task_instance


def test_a_filename_field_typo_is_refused_when_the_dag_is_parsed() -> None:
    with pytest.raises(
        MagiInputError, match=r"unknown field \{prediciton_id\}.*did you mean \{prediction_id\}"
    ):
        MagiDownloadOutputsOperator(
            task_id="d", prediction="p", destination="/tmp/x", filename="{prediciton_id}.mp4"
        )
    # Jinja's double braces are not fields: a templated pattern passes the same check.
    MagiDownloadOutputsOperator(
        task_id="d", prediction="p", destination="/tmp/x", filename="{{ ds }}/{prediction_id}_{index}.mp4"
    )


def test_a_destination_whose_filesystem_is_not_installed_is_refused_when_the_dag_is_parsed() -> None:
    with pytest.raises(MagiInputError, match=r"no filesystem for s3:// .*apache-airflow-providers-amazon"):
        MagiDownloadOutputsOperator(task_id="d", prediction="p", destination="s3://bucket/videos")
    MagiDownloadOutputsOperator(task_id="d", prediction="p", destination="file:///tmp/videos")
    MagiDownloadOutputsOperator(task_id="d", prediction="p", destination="{{ var.value.bucket }}")


def test_a_scheme_fsspec_knows_but_airflow_does_not_gets_the_provider_s_hint_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`memory://` is built into fsspec, so it passes the parse; Airflow's ObjectStoragePath
    opens only registered or attached schemes and failed at the first write with a bare
    "No filesystem registered for scheme memory". The task now refuses it before any request."""
    import fsspec
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io.store import _STORE_CACHE

    from airflow_provider_magi.operators.download import destination_path

    # Nothing attached for memory:// here (the test DAG folder attaches one when it is parsed).
    unattached = {alias: store for alias, store in _STORE_CACHE.items() if store.protocol != "memory"}
    monkeypatch.setattr("airflow.sdk.io.store._STORE_CACHE", unattached)
    operator = MagiDownloadOutputsOperator(task_id="d", prediction="p1", destination="memory://bucket/videos")
    monkeypatch.setattr(MagiDownloadOutputsOperator, "hook", property(lambda _: pytest.fail("a request")))
    hint = r"no filesystem for memory:// is registered with Airflow.*Fix: .*attach\(protocol='memory'"
    with pytest.raises(MagiInputError, match=hint):
        operator.execute({})  # type: ignore[arg-type]
    with pytest.raises(MagiInputError, match=hint):
        destination_path(ObjectStoragePath("memory://bucket/videos"))
    # Attached where the task runs, it is Airflow's to open: accepted.
    from airflow.sdk.io import attach

    attach(protocol="memory", fs=fsspec.filesystem("memory"))
    assert str(destination_path("memory://bucket/videos")).endswith("bucket/videos")


def test_two_outputs_on_one_path_are_refused_before_anything_is_written(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs
) -> None:
    # The output folder is shared with other tests of this process (an example writes daily/
    # too): what matters is that this run added nothing to it.
    daily = Path(os.environ["MAGI_TEST_OUTPUT_DIR"]) / "daily"
    before = set(daily.rglob("*")) if daily.exists() else set()
    dag_run = run_dag(dag_bag, "magi_test_two_outputs_one_path")
    assert task_instance(dag_run, "download").state == "failed"
    assert task_instance(dag_run, "download").try_number == 1  # not retried: bad input
    assert (set(daily.rglob("*")) if daily.exists() else set()) == before
    assert magi_conn.count("output") == 0
    assert not DAG_TEST_LOGS_EXCEPTIONS or "writes the 2 outputs" in task_logs()


def test_a_model_typo_names_the_model_argument_not_expired_predictions(
    magi_conn: LocalWaveSpeedServer,
) -> None:
    from airflow_provider_magi.exceptions import MagiRejectedError
    from airflow_provider_magi.hooks.magi import MagiHook

    with pytest.raises(MagiRejectedError, match=r"check the operator's `model` argument") as raised:
        MagiHook().create_prediction({"prompt": "x"}, model="wavespeed-ai/magi-1-24")
    assert "7 days" not in str(raised.value)
    assert magi_conn.count("submit") == 1  # sent once (only WaveSpeed knows its models), never resent
