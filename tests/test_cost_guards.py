"""Know and cap what you pay: the price on every result, and the two guards before any payment.

DAG runs against the local server, whose books (balance, billing records, usage stats) are kept
apart from the client's parsing: the price a task reports is the one the server billed, and a
guard that refuses leaves the server without a single paid request (no submit, no upload).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_magi import costs
from airflow_provider_magi.exceptions import MagiError
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.testing import Fault, LocalWaveSpeedServer
from tests.conftest import DAGS_FOLDER
from tests.helpers import (
    CANARY_KEY,
    DAG_TEST_LOGS_EXCEPTIONS,
    StatsdListener,
    connection_json,
    observed_env,
    run_dag,
    run_dags_in_child,
    task_instance,
    wait_until,
    xcom,
)

# Every test here proves a rule about what is paid for: `make test` runs them on every Airflow minor.
pytestmark = pytest.mark.money

MAGI = "wavespeed-ai/magi-1-24b"
OTHER = "wavespeed-ai/other-video"
PRICE = 0.37  # not the server's 0.30 default: the reported price must be the one billed
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
PAID_ROUTES = ("submit", "upload", "upload_ticket", "upload_put")
MODES = ["deferrable", "sync"]


@pytest.fixture
def books() -> Iterator[LocalWaveSpeedServer]:
    with LocalWaveSpeedServer(
        api_key=CANARY_KEY,
        completion_seconds=0.2,
        models=[MAGI, OTHER],
        prices={MAGI: PRICE, OTHER: 1.2},
        balance=10.0,
    ) as running:
        yield running


def use(server: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, **extra: object) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server, **extra))


def paid_requests(server: LocalWaveSpeedServer) -> dict[str, int]:
    """The requests that cost money or lead to it: submits and every step of an upload."""
    return {route: server.count(route) for route in PAID_ROUTES} | {
        "predictions": len(server.app.predictions)
    }


def spend_today(server: LocalWaveSpeedServer, model: str, count: int) -> None:
    """Pay for ``count`` predictions of ``model`` through the hook, and wait until billed."""
    hook = MagiHook()
    for _ in range(count):
        prediction = hook.create_prediction({"prompt": "earlier today [[duration: 0]]"}, model)
        wait_until(lambda p=prediction.id: any(b.prediction_id == p for b in server.billings), 10)


def frame(tmp_path: Path) -> str:
    path = tmp_path / "first-frame.png"
    path.write_bytes(PNG)
    return str(path)


def asset_extras(run_id: str) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "magi_test_costed_videos", AssetEvent.source_run_id == run_id)
        ).all()
        return [dict(event.extra) for event in events]


# ---------------------------------------------------------------- the price on every result


def test_the_billed_price_is_in_xcom_the_asset_event_the_metric_and_the_lineage_facet(
    dag_bag: Any, tmp_path: Path
) -> None:
    pytest.importorskip("airflow.providers.openlineage", reason="the [openlineage] extra is not installed")
    pytest.importorskip("statsd", reason="statsd (a test dependency) is not installed")

    events_file = tmp_path / "openlineage.jsonl"
    listener = StatsdListener()
    dags = ["magi_test_cost_deferrable", "magi_test_cost_sync"]
    # Billed half a second after completion: the lookup must wait for it, not give up at once.
    with LocalWaveSpeedServer(
        api_key=CANARY_KEY, completion_seconds=0.2, prices={MAGI: PRICE}, billing_delay=0.5
    ) as server:
        env = {
            **observed_env(listener.port, events_file),
            "AIRFLOW_CONN_MAGI_DEFAULT": connection_json(server),
        }
        runs = run_dags_in_child(DAGS_FOLDER, dags, env)
        billed = {record.prediction_id: float(record.price) for record in server.billings}
        prompts = {p.id: p.inputs["prompt"] for p in server.app.predictions.values()}
    lines = listener.stop()
    assert {dag_id: run["state"] for dag_id, run in runs.items()} == dict.fromkeys(dags, "success")
    assert len(billed) == 2 and set(billed.values()) == {PRICE}  # the server billed each video once

    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    gauges: dict[str, list[float]] = {}
    counters: dict[str, int] = {}
    for line in lines:
        tagged_name, _, rest = line.partition(":")
        name, *pairs = tagged_name.split(",")
        tags = dict(pair.split("=", 1) for pair in pairs)
        value, _, kind = rest.partition("|")
        if name == "airflow.magi.cost_usd":
            assert kind == "g" and tags["model"] == MAGI and tags["conn_id"] == "magi_default"
            gauges.setdefault(tags["dag_id"], []).append(float(value))
        elif name == "airflow.magi.cost_microusd":
            assert kind.startswith("c") and tags["model"] == MAGI and tags["conn_id"] == "magi_default"
            counters[tags["dag_id"]] = counters.get(tags["dag_id"], 0) + int(value)

    for dag_id, run in runs.items():
        dag_run = SimpleNamespace(dag_id=dag_id, run_id=run["run_id"])
        result = xcom(dag_run, "generate")
        prediction_id = result["prediction_id"]
        assert prompts[prediction_id].startswith("a priced video")
        price = billed[prediction_id]
        assert result["cost_usd"] == price  # exact, so to the cent as well
        assert round(result["cost_usd"], 2) == round(price, 2)
        (extra,) = asset_extras(run["run_id"])
        assert extra["prediction_id"] == prediction_id and extra["cost_usd"] == price
        assert gauges[dag_id] == [price]
        assert counters[dag_id] == round(price * 1_000_000)
        (complete,) = [
            e for e in events if e["job"]["name"] == f"{dag_id}.generate" and e["eventType"] == "COMPLETE"
        ]
        facet = complete["run"]["facets"]["magi_prediction"]
        assert facet["cost_usd"] == price
        assert complete["run"]["facets"]["externalQuery"]["externalQueryId"] == prediction_id


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("why", ["lagging", "down"])
def test_a_price_not_found_in_time_is_none_and_the_task_still_succeeds(
    dag_bag: Any, monkeypatch: pytest.MonkeyPatch, task_logs: Any, mode: str, why: str
) -> None:
    with LocalWaveSpeedServer(
        # "lagging": billed an hour after completion, so never within the test, however slowly
        # dag.test resumes a deferred task (a few seconds' delay made this depend on timing).
        api_key=CANARY_KEY,
        completion_seconds=0.2,
        billing_delay=3600.0 if why == "lagging" else 0.0,
    ) as server:
        use(server, monkeypatch, cost_lookup_seconds=1)
        if why == "down":
            server.set_faults([Fault(route="billings", kind="status", status=500)])
        dag_run = run_dag(dag_bag, f"magi_test_cost_{mode}")
        assert dag_run.state == "success"
        assert task_instance(dag_run, "generate").try_number == 1
        result = xcom(dag_run, "generate")
        assert result["cost_usd"] is None
        (extra,) = asset_extras(dag_run.run_id)
        assert extra["cost_usd"] is None and extra["prediction_id"] == result["prediction_id"]
        assert f"Prediction {result['prediction_id']}: cost unknown" in task_logs()
        if why == "lagging":
            # Three reads within the second by the generate task, then three by the download
            # (a price billed after the task ended is counted there: issue 26 item 9).
            assert server.count("billings") == 6
            assert server.billings == []  # None meant "not billed yet", not a guessed price
        else:
            assert server.count("billings", status=500) >= 3


# ---------------------------------------------------------------- the balance floor


@pytest.mark.parametrize("mode", MODES)
def test_a_balance_below_the_floor_fails_at_once_and_nothing_is_paid(
    dag_bag: Any,
    books: LocalWaveSpeedServer,
    monkeypatch: pytest.MonkeyPatch,
    task_logs: Any,
    tmp_path: Path,
    mode: str,
) -> None:
    use(books, monkeypatch, min_balance_usd=1)
    books.set_balance(0.99)
    dag_run = run_dag(dag_bag, f"magi_test_guarded_{mode}", image=frame(tmp_path))
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "generate").try_number == 1  # not retried
    assert paid_requests(books) == dict.fromkeys([*PAID_ROUTES, "predictions"], 0)
    assert books.count("balance") == 1
    if DAG_TEST_LOGS_EXCEPTIONS:
        assert (
            "Connection 'magi_default': the WaveSpeed balance is $0.99, below the connection's "
            "min_balance_usd of $1.00. Nothing was uploaded or submitted." in task_logs()
        )


def test_guards_that_pass_let_the_upload_and_one_submit_through(
    dag_bag: Any,
    books: LocalWaveSpeedServer,
    monkeypatch: pytest.MonkeyPatch,
    task_logs: Any,
    tmp_path: Path,
) -> None:
    """The balance less the price exactly at the floor and the spend plus the price exactly at
    the budget pass (the floor holds once this prediction is billed: issue #31)."""
    use(books, monkeypatch)
    spend_today(books, MAGI, 2)  # 0.74 spent; with one more at 0.37, 1.11
    books.set_balance(5.37)  # 5.00 once this one is billed
    use(books, monkeypatch, min_balance_usd=5, daily_budget_usd=1.11)
    before = paid_requests(books)
    dag_run = run_dag(dag_bag, "magi_test_guarded_sync", image=frame(tmp_path))
    assert dag_run.state == "success"
    after = paid_requests(books)
    assert after["submit"] - before["submit"] == 1
    assert after["predictions"] - before["predictions"] == 1
    assert after["upload_ticket"] + after["upload"] - before["upload_ticket"] - before["upload"] == 1
    assert xcom(dag_run, "generate")["cost_usd"] == PRICE
    assert (
        "Balance $5.37; less $0.00 started and not billed yet and this prediction at $0.37, it would "
        "be $5.00, at or above min_balance_usd $5.00." in task_logs()
    )
    assert "Spent today (UTC) $0.74; with this prediction at $0.37, within daily_budget_usd $1.11" in (
        task_logs()
    )


# ---------------------------------------------------------------- the daily budget


@pytest.mark.parametrize("mode", MODES)
def test_a_day_over_budget_with_one_more_price_fails_at_once_and_nothing_is_paid(
    dag_bag: Any,
    books: LocalWaveSpeedServer,
    monkeypatch: pytest.MonkeyPatch,
    task_logs: Any,
    tmp_path: Path,
    mode: str,
) -> None:
    use(books, monkeypatch)
    spend_today(books, MAGI, 2)  # 0.74 spent: one more (0.37) is 1.11, above 1.10
    use(books, monkeypatch, daily_budget_usd=1.10)
    before = paid_requests(books)
    dag_run = run_dag(dag_bag, f"magi_test_guarded_{mode}", image=frame(tmp_path))
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "generate").try_number == 1  # not retried
    assert paid_requests(books) == before
    assert books.count("usage") == 2  # the day's spend, then the model's price
    if DAG_TEST_LOGS_EXCEPTIONS:
        today = datetime.now(UTC).date().isoformat()
        assert (
            f"Connection 'magi_default': $0.74 was spent on {today} (UTC); one more prediction of "
            f"{MAGI} at $0.37 would make $1.11, above the connection's daily_budget_usd of $1.10. "
            "Nothing was uploaded or submitted." in task_logs()
        )


def test_an_unknown_price_checks_the_spend_alone_and_says_the_budget_may_be_passed(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, task_logs: Any
) -> None:
    use(books, monkeypatch)
    spend_today(books, OTHER, 1)  # 1.20 spent on another model: MAGI has no price in the usage stats
    use(books, monkeypatch, daily_budget_usd=1.20)  # the spend alone reaches it: refused
    dag_run = run_dag(dag_bag, "magi_test_cost_sync")
    assert dag_run.state == "failed" and task_instance(dag_run, "generate").try_number == 1
    assert books.count("submit") == 1
    use(books, monkeypatch, daily_budget_usd=1.21)  # below it: one prediction may pass it
    dag_run = run_dag(dag_bag, "magi_test_cost_sync")
    assert dag_run.state == "success"
    assert books.count("submit") == 2
    assert (
        f"the price of {MAGI} is unknown (WaveSpeed's usage stats list no use of it in the last 30 "
        "days); only the day's spend ($1.20 of $1.21) was checked" in task_logs()
    )


# ---------------------------------------------------------------- failing safe


@pytest.mark.parametrize(
    ("route", "kind", "extra", "said"),
    [
        ("balance", "status", "min_balance_usd", "the balance"),
        ("balance", "malformed_json", "min_balance_usd", "the balance"),
        ("usage", "status", "daily_budget_usd", "today's spend"),
        ("usage", "malformed_json", "daily_budget_usd", "today's spend"),
    ],
    ids=["balance-down", "balance-malformed", "usage-down", "usage-malformed"],
)
def test_a_guard_that_cannot_read_fails_safe_retried_and_nothing_is_paid(
    dag_bag: Any,
    books: LocalWaveSpeedServer,
    monkeypatch: pytest.MonkeyPatch,
    task_logs: Any,
    tmp_path: Path,
    route: str,
    kind: str,
    extra: str,
    said: str,
) -> None:
    use(books, monkeypatch, **{extra: 1})
    books.set_faults([Fault(route=route, kind=kind, status=503)])  # type: ignore[arg-type]
    dag_run = run_dag(dag_bag, "magi_test_guarded_sync", image=frame(tmp_path))
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "generate").try_number == 2  # retried: the endpoint may come back
    assert paid_requests(books) == dict.fromkeys([*PAID_ROUTES, "predictions"], 0)
    assert books.count(route) >= 2  # each try asked
    if DAG_TEST_LOGS_EXCEPTIONS:
        assert f"Connection 'magi_default': the {extra} guard could not read {said}" in task_logs()
        assert "nothing was uploaded or submitted" in task_logs()


def test_the_guards_do_not_run_when_the_ledger_reattaches(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry that reattaches to a paid prediction pays nothing, so no guard stops it."""
    use(books, monkeypatch, min_balance_usd=1)
    dag_run = run_dag(dag_bag, "magi_test_dies_after_submit_sync")  # try 1 dies right after paying
    assert dag_run.state == "success"
    assert task_instance(dag_run, "generate").try_number == 2
    assert books.count("balance") == 1  # the first try's check only: the retry paid nothing
    assert books.count("submit") == 1


def test_the_spending_extras_are_checked_as_numbers(books: LocalWaveSpeedServer, monkeypatch) -> None:
    use(books, monkeypatch, min_balance_usd=-1)
    with pytest.raises(MagiError, match="extra 'min_balance_usd' is out of range"):
        MagiHook().settings
    use(books, monkeypatch, daily_budget_usd="fifty")
    with pytest.raises(MagiError, match="extra 'daily_budget_usd' must be a number"):
        MagiHook().settings
    use(books, monkeypatch, min_balance_usd="2.5", daily_budget_usd=50, cost_lookup_seconds=0)
    settings = MagiHook().settings
    assert (settings.min_balance_usd, settings.daily_budget_usd, settings.cost_lookup_seconds) == (2.5, 50, 0)
    use(books, monkeypatch)
    settings = MagiHook().settings
    assert (settings.min_balance_usd, settings.daily_budget_usd, settings.cost_lookup_seconds) == (
        None,
        None,
        10.0,
    )


@pytest.mark.parametrize("extra", ["daily_budget_usd", "min_balance_usd", "extra__magi__daily_budget_usd"])
@pytest.mark.parametrize("flag", [True, False])
def test_a_boolean_is_not_an_amount(
    books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, extra: str, flag: bool
) -> None:
    """`"daily_budget_usd": true` read as $1.00 (float(True)); false as a budget of $0. Refused,
    naming the field and the fix, before any request is sent."""
    use(books, monkeypatch, **{extra: flag})
    field = extra.removeprefix("extra__magi__")
    with pytest.raises(
        MagiError, match=rf"extra '{field}' must be an amount in USD, got {str(flag).lower()}"
    ) as raised:
        MagiHook().create_prediction({"prompt": "x"})
    assert "Fix: set it to the amount in USD" in str(raised.value)
    assert books.requests == [] and not books.app.predictions  # nothing sent, nothing paid


def test_a_boolean_is_not_a_number_for_any_numeric_extra(
    books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(books, monkeypatch, max_retries=True)
    with pytest.raises(MagiError, match=r"extra 'max_retries' must be a number, got true \(a JSON boolean\)"):
        MagiHook().settings


# ---------------------------------------------------------------- the pure decisions

DAY = date(2026, 3, 1)


def test_the_balance_floor() -> None:
    assert costs.balance_floor_refusal(5.0, 5.0, "c") is None  # at the floor is enough
    assert costs.balance_floor_refusal(0.1 + 0.2, 0.3, "c") is None  # no float dust refusal
    refusal = costs.balance_floor_refusal(4.999, 5.0, "my_magi")
    assert refusal is not None
    assert "Connection 'my_magi'" in refusal and "$4.999" in refusal and "$5.00" in refusal


def test_the_daily_budget() -> None:
    fits = costs.daily_budget_decision(0.74, 0.37, 1.11, "c", DAY, MAGI)
    assert fits.refusal is None and fits.note is None
    over = costs.daily_budget_decision(0.74, 0.37, 1.1, "c", DAY, MAGI)
    assert over.refusal is not None
    for figure in ("$0.74", "$0.37", "$1.11", "$1.10", "2026-03-01", MAGI, "Connection 'c'"):
        assert figure in over.refusal
    unknown = costs.daily_budget_decision(0.5, None, 1.0, "c", DAY, MAGI)
    assert unknown.refusal is None and unknown.note and "may pass daily_budget_usd" in unknown.note
    reached = costs.daily_budget_decision(1.0, None, 1.0, "c", DAY, MAGI)
    assert reached.refusal is not None and "reaches" in reached.refusal


def test_the_unit_price_from_usage_stats() -> None:
    def usage(*entries: object) -> dict[str, Any]:
        return {"per_model_usage": list(entries)}

    entry = {"model_uuid": MAGI, "unit_price": 0.37, "total_cost": 0.74, "total_count": 2}
    assert costs.parse_unit_price(usage(entry), MAGI) == 0.37
    assert costs.parse_unit_price(usage(entry, {**entry, "unit_price": 0.4}), f"/{MAGI}/") == 0.4
    assert costs.parse_unit_price(usage({**entry, "model_uuid": OTHER}), MAGI) is None
    for unreadable in ({"summary": {}}, usage("nope"), usage({**entry, "unit_price": 24300})):
        with pytest.raises(ValueError, match=r"per_model_usage|unit_price"):
            costs.parse_unit_price(unreadable, MAGI)


def test_dollars_as_text_and_the_utc_day() -> None:
    assert [costs.usd_text(x) for x in (0.45, 12.3, 0.005, 1234.5, 0)] == [
        "$0.45",
        "$12.30",
        "$0.005",
        "$1,234.50",
        "$0.00",
    ]
    assert costs.utc_midnight(datetime(2026, 3, 1, 23, 59, tzinfo=UTC)) == datetime(2026, 3, 1, tzinfo=UTC)
