"""Issue 26 item 9: every dollar counted once, none missed.

The cost metric ``magi.cost_microusd``, summed per DAG (README's spend query), must equal what
the local server billed: the sensor's result carries the price and sends it, a retry that
reattaches to a completed prediction does not send it again, and a price billed only after the
generating task ended is counted by the download task, once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_magi import metrics
from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.helpers import CANARY_KEY, connection_json, run_dag, task_instance, xcom

pytestmark = pytest.mark.money

MAGI = "wavespeed-ai/magi-1-24b"
PRICE = 0.37


@pytest.fixture
def books(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalWaveSpeedServer]:
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.2, prices={MAGI: PRICE}) as running:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(running))
        monkeypatch.setenv(
            "AIRFLOW_CONN_MAGI_NO_COST_LOOKUP", connection_json(running, cost_lookup_seconds=0)
        )
        yield running


@pytest.fixture
def spend(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """What the cost counter sums per dag_id: README's spend-per-DAG query, in micro-dollars."""
    sums: dict[str, int] = {}
    emit = metrics._emit

    def recording(kind: str, name: str, value: Any, tags: dict[str, str]) -> None:
        if name == metrics.PREFIX + "cost_microusd":
            sums[tags["dag_id"]] = sums.get(tags["dag_id"], 0) + int(value)
        emit(kind, name, value, tags)

    monkeypatch.setattr(metrics, "_emit", recording)
    return sums


def billed_micro(server: LocalWaveSpeedServer) -> int:
    return sum(round(float(record.price) * 1_000_000) for record in server.billings)


@pytest.mark.parametrize("mode", ["deferrable", "poke"])
def test_the_sensor_s_result_carries_the_price_and_the_metric_counts_it_once(
    dag_bag: Any, books: LocalWaveSpeedServer, spend: dict[str, int], mode: str
) -> None:
    dag_id = f"magi_r2_sensor_cost_{mode}"
    dag_run = run_dag(dag_bag, dag_id)
    assert dag_run.state == "success"
    assert len(books.billings) == 1
    assert xcom(dag_run, "wait")["cost_usd"] == PRICE  # the old sensor had no cost_usd
    assert spend == {dag_id: billed_micro(books)}  # the sensor counted it; the download did not


def test_a_retry_that_reattaches_to_a_completed_prediction_does_not_count_it_again(
    dag_bag: Any, books: LocalWaveSpeedServer, spend: dict[str, int]
) -> None:
    dag_run = run_dag(dag_bag, "magi_r2_cost_reattached")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "generate").try_number == 2
    assert books.count("submit") == 1
    assert xcom(dag_run, "generate")["cost_usd"] == PRICE  # still reported
    assert spend == {"magi_r2_cost_reattached": billed_micro(books)}  # the old code: counted twice


def test_a_price_billed_after_the_task_ended_is_counted_by_the_download_once(
    dag_bag: Any, books: LocalWaveSpeedServer, spend: dict[str, int]
) -> None:
    dag_run = run_dag(dag_bag, "magi_r2_cost_billed_later")
    assert dag_run.state == "success"
    assert xcom(dag_run, "generate")["cost_usd"] is None  # not known when the task ended
    assert len(books.billings) == 1
    assert spend == {"magi_r2_cost_billed_later": billed_micro(books)}  # the old code: never counted
