"""#14 item 5: the prediction history, and what an uncertain submit tells a person about it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import requests

from airflow_provider_magi.exceptions import MagiSubmitUncertainError
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.testing import Fault, LocalWaveSpeedServer
from tests.helpers import CANARY_KEY, run_dag, task_instance, xcom

# Uncertain submits and their candidates: `make test` runs these on every Airflow minor.
pytestmark = pytest.mark.money

AUTH = {"Authorization": f"Bearer {CANARY_KEY}"}


def history(server: LocalWaveSpeedServer, **query: object) -> requests.Response:
    return requests.post(f"{server.base_url}/api/v3/predictions", json=query, headers=AUTH, timeout=5)


def test_the_server_pages_filters_and_checks_the_history(magi_conn: LocalWaveSpeedServer) -> None:
    hook = MagiHook()
    ids = [hook.create_prediction({"prompt": f"n{i} [[duration: 0]]"}).id for i in range(3)]
    running = hook.create_prediction({"prompt": "slow [[never]]"}).id
    page = history(magi_conn, page=1, page_size=2).json()["data"]
    assert page["total"] == 4 and [item["id"] for item in page["items"]] == [running, ids[2]]
    assert [i["id"] for i in history(magi_conn, page=2, page_size=2).json()["data"]["items"]] == ids[1::-1]
    assert [i["id"] for i in history(magi_conn, status="processing").json()["data"]["items"]] == [running]
    assert history(magi_conn, model="someone/else").json()["data"]["total"] == 0
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert history(magi_conn, created_after=future).json()["data"]["total"] == 0
    for bad in (
        {"page_size": 0},
        {"page_size": 101},
        {"page": 0},
        {"status": "lost"},
        {"created_after": "soon"},
    ):
        assert history(magi_conn, **bad).status_code == 400, bad
    assert requests.post(f"{magi_conn.base_url}/api/v3/predictions", json={}, timeout=5).status_code == 401
    assert magi_conn.count("submit") == 4  # the history is not mistaken for a model


@pytest.mark.parametrize("client", ["sync", "async"])
def test_list_predictions_pages_through_newest_first(magi_conn: LocalWaveSpeedServer, client: str) -> None:
    hook = MagiHook()
    ids = [hook.create_prediction({"prompt": f"n{i} [[duration: 0]]"}).id for i in range(5)]
    if client == "sync":
        found = hook.list_predictions(page_size=2)
    else:
        found = asyncio.run(MagiHook().alist_predictions(page_size=2))
    assert [p.id for p in found] == ids[::-1]
    assert magi_conn.count("history") == 3  # 2 + 2 + 1
    assert all(p.status == "completed" for p in found)


def test_an_uncertain_submit_names_the_prediction_it_may_have_started(
    magi_conn: LocalWaveSpeedServer,
) -> None:
    magi_conn.set_faults([Fault(route="submit", kind="drop_after_accept", times=1)])
    with pytest.raises(MagiSubmitUncertainError) as caught:
        MagiHook().create_prediction({"prompt": "a lost answer"})
    (started,) = magi_conn.app.predictions
    assert [c["prediction_id"] for c in caught.value.candidates] == [started]
    assert (
        f"WaveSpeed lists 1 prediction(s) of wavespeed-ai/magi-1-24b created around the submit: {started}"
        in str(caught.value)
    )
    assert magi_conn.count("submit") == 1


def test_an_uncertain_submit_that_started_nothing_says_so(magi_conn: LocalWaveSpeedServer) -> None:
    magi_conn.set_faults([Fault(route="submit", kind="status", status=502, times=1)])
    with pytest.raises(
        MagiSubmitUncertainError, match=r"lists no prediction .* most likely did not start"
    ) as caught:
        MagiHook().create_prediction({"prompt": "x"})
    assert caught.value.candidates == []


@pytest.mark.parametrize("attach", [False, True])
def test_the_operator_publishes_candidates_and_attaches_only_when_asked(
    dag_bag, magi_conn: LocalWaveSpeedServer, attach: bool
) -> None:
    magi_conn.set_faults([Fault(route="submit", kind="drop_after_accept", times=1)])
    dag_run = run_dag(dag_bag, f"magi_test_uncertain_submit{'_attach' if attach else ''}")
    (started,) = magi_conn.app.predictions
    assert [c["prediction_id"] for c in xcom(dag_run, "generate", key="prediction_candidates")] == [started]
    assert magi_conn.count("submit") == 1  # retries=1, and still never a second submit
    if attach:
        assert dag_run.state == "success"
        assert xcom(dag_run, "generate")["prediction_id"] == started
    else:
        assert dag_run.state == "failed"
        assert task_instance(dag_run, "generate").try_number == 1
