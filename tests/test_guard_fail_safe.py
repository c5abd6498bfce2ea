"""The spending guards fail safe where an earlier reading let tasks pay unguarded.

- a connection whose extra field is not valid JSON: Airflow's ``extra_dejson`` logs the error and
  answers ``{}``, which read as "no guard";
- a model whose price is unknown (no use in the usage stats' reach) with predictions started
  today and not billed yet: those counted as free, so every task passed.

Each test counts the paid submits the local server saw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from airflow_provider_magi.exceptions import MagiBudgetCheckError, MagiBudgetError, MagiError
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.helpers import CANARY_KEY, connection_json, wait_until

pytestmark = pytest.mark.money

MAGI = "wavespeed-ai/magi-1-24b"


@pytest.fixture
def books() -> Iterator[LocalWaveSpeedServer]:
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.2, prices={MAGI: 0.30}) as server:
        server.app.account.billing_delay = 3600.0  # nothing started in the test is billed
        yield server


def test_an_extra_field_that_is_not_json_refuses_instead_of_dropping_the_guards(
    books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = books.connection_uri_json()
    conn["extra"] = '{"min_balance_usd": 1000, "max_retries": 1,}'  # a trailing comma: not JSON
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", json.dumps(conn))
    # Airflow 3.0 drops a connection whose extra does not parse (it "does not exist"); later
    # versions keep it with an empty extra, which the hook refuses. Either way nothing is paid.
    with pytest.raises(MagiError, match=r"extra field is not a JSON object|'magi_default' does not exist"):
        MagiHook().create_prediction({"prompt": "guarded [[duration: 0]]"}, MAGI)
    assert books.count("submit") == 0  # the old code: 1 (balance $100, floor $1,000 ignored)


def test_an_unknown_price_with_unbilled_predictions_lets_one_go_not_all(
    books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books, daily_budget_usd=0.5))
    MagiHook().create_prediction({"prompt": "first of the day [[duration: 0]]"}, MAGI)
    for _ in range(2):
        with pytest.raises(MagiBudgetCheckError, match="started today and not billed yet"):
            MagiHook().create_prediction({"prompt": "more [[duration: 0]]"}, MAGI)
    assert books.count("submit") == 1  # the old code: 3 ($0.90 against a $0.50 budget)


def test_billed_predictions_the_usage_stats_do_not_show_yet_still_count(
    books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Usage stats lag billing: a prediction billed a moment ago is in neither the usage stats'
    spend nor the unbilled ones, and was counted by neither."""
    books.app.account.billing_delay = 0.0
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books))
    first = MagiHook().create_prediction({"prompt": "earlier today [[duration: 0]]"}, MAGI)
    wait_until(
        lambda: any(b.prediction_id == first.id for b in books.billings), 10
    )  # the price is known: $0.30
    books.app.account.usage_until = time.time()  # from now on, billed but not in the usage stats
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books, daily_budget_usd=0.9))
    refused = 0
    for _ in range(4):  # one after another, each billed before the next checks
        try:
            paid = MagiHook().create_prediction({"prompt": "more [[duration: 0]]"}, MAGI)
        except MagiBudgetError:
            refused += 1
            continue
        wait_until(lambda p=paid.id: any(b.prediction_id == p for b in books.billings), 10)
    assert books.count("submit") == 1 + 2  # room for 2 at $0.30; the old code: 1 + 4 ($1.50)
    assert refused == 2


def test_an_empty_field_does_not_hide_the_older_form_s_guard_value(
    books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection saved by the older form (``extra__magi__<name>``) and then by a newer one
    that stores an empty field as "": the empty one hid the value, and the guard was off."""
    conn = books.connection_uri_json()
    conn["extra"] = {"min_balance_usd": "", "extra__magi__min_balance_usd": "1000"}
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", json.dumps(conn))
    with pytest.raises(MagiBudgetError, match="below the connection's min_balance_usd of \\$1,000"):
        MagiHook().create_prediction({"prompt": "guarded [[duration: 0]]"}, MAGI)
    assert books.count("submit") == 0  # the old code: 1 (balance $100, the $1,000 floor unread)
