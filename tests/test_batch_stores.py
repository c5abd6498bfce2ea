"""A batch finds what an earlier try paid for in every store a try may have written it to, as the
single video does (tests/test_ledger_round2.py): ``ledger_path`` added, removed or moved between
tries never pays again (#31: the batch read only its primary store and paid 6 for 3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.helpers import CANARY_KEY, connection_json, run_dag, task_instance

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
