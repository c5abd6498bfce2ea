"""What a batch's later try finds of the earlier ones (#31): what they paid for in every store a try
may have written it to, as the single video does (tests/test_ledger_round2.py), and which of its
inputs it still has to submit again after a 429 held them back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.helpers import CANARY_KEY, connection_json, run_dag, task_instance, xcom

pytestmark = pytest.mark.money

NEXT_CONN_ENV = "MAGI_TEST_CONN_AFTER_CRASH"


@pytest.fixture
def server() -> Iterator[LocalWaveSpeedServer]:
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.3) as running:
        yield running


@pytest.mark.parametrize("switch", ["ledger_path added", "ledger_path removed", "ledger_path moved"])
def test_a_ledger_path_switched_between_tries_never_pays_the_batch_again(
    dag_bag: Any, server: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, switch: str
) -> None:
    before = {} if switch == "ledger_path added" else {"ledger_path": f"file://{tmp_path}/a"}
    after = {} if switch == "ledger_path removed" else {"ledger_path": f"file://{tmp_path}/b"}
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server, **before))
    monkeypatch.setenv(NEXT_CONN_ENV, connection_json(server, **after))
    dag_run = run_dag(dag_bag, "magi_batch_test_store_switched")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "batch").try_number == 2
    assert server.count("submit") == 3 and len(server.app.predictions) == 3


def test_a_429_on_a_retry_s_resubmit_holds_the_input_back_and_the_try_still_submits_it(
    dag_bag: Any, server: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Try 1 pays 3 and two fail; try 2 submits those two again, and its first submit meets a 429
    that outlasts the hook's retries. Before: the two inputs were read back as try 1's failures
    after the pause and never submitted in try 2 (3 paid)."""
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server))
    dag_run = run_dag(dag_bag, "magi_batch_test_429_on_the_retry")
    assert task_instance(dag_run, "batch").try_number == 2
    prompts = sorted(p.inputs["prompt"] for p in server.app.predictions.values())
    assert len(prompts) == 5 and server.count("submit", status=200) == 5
    assert server.count("submit", status=429) == 4  # the fault was met, then paced
    assert prompts.count("again 1 [[duration: 0.3]] [[fail: safety filter]]") == 2
    assert prompts.count("again 2 [[duration: 0.3]] [[fail: safety filter]]") == 2
    path = Path(xcom(dag_run, "batch", key="batch_progress")["manifest_path"])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["status"] for line in lines] == ["completed", "failed", "failed"]
    assert [len(line["replaced"]) for line in lines] == [0, 1, 1]


def test_ids_the_ledger_refused_are_found_in_the_manifest_and_never_paid_again(
    dag_bag: Any, server: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Try 1 pays 4, and the ledger's write of their ids fails: the task stops, the manifest names
    them. Before: the retry marked all 4 `uncertain` and downloaded nothing, and the error's fix
    (delete the ledger record) paid for all 4 again."""
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server))
    dag_run = run_dag(dag_bag, "magi_batch_test_ledger_refuses_ids")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "batch").try_number == 2
    assert server.count("submit") == 4 and len(server.app.predictions) == 4
    path = Path(xcom(dag_run, "batch", key="batch_progress")["manifest_path"])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["status"] for line in lines] == ["completed"] * 4
    assert {line["prediction_id"] for line in lines} == set(server.app.predictions)
