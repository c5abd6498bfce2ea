"""Issue 26 item 8: a daily budget that holds while billing lags completion.

WaveSpeed bills a prediction some time after it completes, and its usage stats lag the billing:
a budget counting only billed spend let every task through while the earlier ones waited to be
billed (measured: room for 2, all 6 paid). Predictions started today and not billed yet now
count as spent, at their model's unit price.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from airflow_provider_magi import costs
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.helpers import CANARY_KEY, connection_json, run_dag, task_instance, wait_until, xcom

MAGI = "wavespeed-ai/magi-1-24b"
PRICE = 0.35


@pytest.fixture
def lagging(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalWaveSpeedServer]:
    """A server where one video was paid and billed today (so the price is known), after which
    billing lags completion by an hour: nothing started from now on is billed in the test."""
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.2, prices={MAGI: PRICE}) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server))
        first = MagiHook().create_prediction({"prompt": "earlier today [[duration: 0]]"}, MAGI)
        wait_until(lambda: any(b.prediction_id == first.id for b in server.billings), 10)
        server.app.account.billing_delay = 3600.0
        yield server


@pytest.mark.money
def test_tasks_one_after_another_while_billing_lags_pay_only_for_the_room_left(
    dag_bag: Any, lagging: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = PRICE + 0.90  # the earlier video, then room for 2 more at 0.35 (a third makes 1.40)
    # Billed an hour late: the price lookup of each task that ran finds nothing in 1 s as in 10.
    monkeypatch.setenv(
        "AIRFLOW_CONN_MAGI_DEFAULT", connection_json(lagging, daily_budget_usd=budget, cost_lookup_seconds=1)
    )
    dag_run = run_dag(dag_bag, "magi_r2_budget_billing_lags")
    states = [task_instance(dag_run, "generate", k).state for k in range(6)]
    assert states.count("success") == 2 and states.count("failed") == 4
    assert lagging.count("submit") == 1 + 2  # the old code: 1 + 6 (2.45 against 1.25)
    assert len(lagging.billings) == 1  # the two new ones are done, and not billed yet
    done = [xcom(dag_run, "generate", map_index=k) for k in range(6) if states[k] == "success"]
    assert all(result["status"] == "completed" for result in done)


@pytest.mark.money
def test_the_hook_counts_started_predictions_not_yet_billed(lagging: LocalWaveSpeedServer) -> None:
    hook = MagiHook()
    started = hook.create_prediction({"prompt": "not billed yet [[duration: 0]]"}, MAGI, check_guards=False)
    since = costs.utc_midnight(costs.datetime.now(costs.UTC))
    unbilled = hook.get_unbilled_since(since)
    assert [p.id for p in unbilled] == [started.id]  # the billed one is not counted twice


def test_the_decision_counts_what_is_not_billed_yet() -> None:
    day = date(2026, 3, 1)
    fits = costs.daily_budget_decision(0.35, PRICE, 1.05, "c", day, MAGI, pending=0.35, pending_count=1)
    assert fits.refusal is None  # 0.35 billed + 0.35 started + 0.35 = 1.05
    over = costs.daily_budget_decision(0.35, PRICE, 1.05, "c", day, MAGI, pending=0.70, pending_count=2)
    assert over.refusal is not None
    assert "$0.35 was billed on 2026-03-01 (UTC) and 2 started prediction(s) not billed yet count $0.70" in (
        over.refusal
    )
    assert "would make $1.40, above the connection's daily_budget_usd of $1.05" in over.refusal
