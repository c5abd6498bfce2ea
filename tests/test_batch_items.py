"""A batch's items may carry a ``key`` and ``metadata`` for the team's own bookkeeping (#31 item
6): both are copied to the item's manifest line, duplicate keys are refused before anything is
paid, and identical rows without keys are named in a warning (each is paid for, as listed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_magi.batch_inputs import check_items, identical_items
from airflow_provider_magi.exceptions import MagiInputError
from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.helpers import CANARY_KEY, connection_json, run_dag, xcom

MAGI = "wavespeed-ai/magi-1-24b"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalWaveSpeedServer]:
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.3) as running:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(running))
        yield running


def test_keys_and_metadata_are_checked_and_kept() -> None:
    items = check_items([{"prompt": "a", "key": "x", "metadata": {"n": 1}}, {"prompt": "b"}], MAGI)
    assert (items[0].key, items[0].metadata) == ("x", {"n": 1})
    assert (items[1].key, items[1].metadata) == (None, None)


@pytest.mark.parametrize(
    ("item", "named"),
    [
        ({"prompt": "a", "key": ""}, "key ''"),
        ({"prompt": "a", "key": 7}, "key 7"),
        ({"prompt": "a", "key": "k" * 201}, "at most 200"),
        ({"prompt": "a", "metadata": [1, 2]}, "metadata [1, 2]"),
        ({"prompt": "a", "metadata": {"when": object()}}, "JSON object"),
    ],
)
def test_a_bad_key_or_metadata_is_named_with_the_fix(item: dict[str, Any], named: str) -> None:
    with pytest.raises(MagiInputError, match=r"inputs\[0\]") as raised:
        check_items([item], MAGI)
    assert named in str(raised.value) and "Fix:" in str(raised.value)


def test_duplicate_keys_are_refused_naming_both_items() -> None:
    with pytest.raises(MagiInputError) as raised:
        check_items([{"prompt": "a", "key": "k"}, "b", {"prompt": "c", "key": "k"}], MAGI)
    assert "inputs[2]" in str(raised.value) and "also the key of inputs[0]" in str(raised.value)


def test_identical_rows_without_keys_are_grouped() -> None:
    items = check_items(["a", "b", "a", {"prompt": "a", "key": "own"}, "b", "c"], MAGI)
    assert identical_items(items) == [[0, 2], [1, 4]]


@pytest.mark.money
def test_the_manifest_carries_each_item_s_key_and_metadata(
    dag_bag: Any, server: LocalWaveSpeedServer, task_logs: Any
) -> None:
    dag_run = run_dag(dag_bag, "magi_batch_test_keys")
    assert dag_run.state == "success"
    assert server.count("submit") == 4  # identical rows are each paid for, as listed ...
    assert "1 group(s) of identical inputs without a key" in task_logs()  # ... and named
    path = Path(xcom(dag_run, "batch", key="batch_progress")["manifest_path"])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["key"], line["metadata"]) for line in lines] == [
        ("sku-11", {"row": 11, "tags": ["a"]}),
        ("sku-12", None),
        (None, None),
        (None, None),
    ]


@pytest.mark.money
def test_duplicate_keys_pay_for_nothing(dag_bag: Any, server: LocalWaveSpeedServer) -> None:
    dag_run = run_dag(dag_bag, "magi_batch_test_duplicate_keys")
    assert dag_run.state == "failed"
    assert server.count("submit") == 0


@pytest.mark.money
def test_a_budget_stop_with_partial_errors_tolerated_succeeds_with_what_was_paid(
    dag_bag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fail_on_partial_error=False: a budget stop ends the task successfully with its manifest, so
    downstream tasks publish the videos that were paid for (#31 item 6)."""
    from airflow_provider_magi.hooks.magi import MagiHook
    from tests.helpers import wait_until

    price = 0.37
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.3, prices={MAGI: price}) as books:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books))
        earlier = MagiHook().create_prediction({"prompt": "earlier today [[duration: 0]]"}, MAGI)  # the price
        wait_until(lambda: any(b.prediction_id == earlier.id for b in books.billings), 10)
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books, daily_budget_usd=price * 5))
        dag_run = run_dag(dag_bag, "magi_batch_test_budget_tolerated")
        assert dag_run.state == "success"
        assert books.count("submit") == 1 + 4
        result = xcom(dag_run, "batch")
        assert (result["succeeded"], result["not_submitted"]) == (4, 6)
