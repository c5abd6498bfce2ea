"""Issue #31 item 3: one spend view for both guards.

available = min(balance - floor, budget - billed today) - reserved, where reserved is every
started, unbilled prediction on the key at its price (this task's, other tasks', those started
before UTC midnight). Measured on the old code (server-counted submits): a batch of 10 at $0.30
on a $10 balance with a $9.50 floor paid 10 (balance $7.00); three tasks one after another with
billing 20 s late took a $10 balance to $9.10 against a $9.90 floor; a video started before
midnight and billed after it was counted on neither day.

The DAG and hook tests count what the local server created; its clock is moved, never slept on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_magi import spend
from airflow_provider_magi.exceptions import MagiBudgetError
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.helpers import CANARY_KEY, connection_json, run_dag, task_instance, wait_until, xcom

pytestmark = pytest.mark.money

MAGI = "wavespeed-ai/magi-1-24b"
PRICE = 0.30
DAY = date(2026, 3, 1)


@pytest.fixture
def books(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalWaveSpeedServer]:
    """A $10 account where one video was paid and billed (so the price, $0.30, is known); the
    balance is then put back to $10. Billing lags completion by 20 s from then on: nothing
    started later is billed unless a test moves the server's clock on."""
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.2, prices={MAGI: PRICE}) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server))
        first = MagiHook().create_prediction({"prompt": "earlier [[duration: 0]]"}, MAGI)
        wait_until(lambda: any(b.prediction_id == first.id for b in server.billings), 10)
        server.set_balance(10.0)
        server.app.account.billing_delay = 20.0
        yield server


def use(server: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, **extra: object) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server, **extra))


def made(server: LocalWaveSpeedServer) -> int:
    """Predictions the server created after the fixture's first (what was paid)."""
    return len(server.app.predictions) - 1


# ---------------------------------------------------------------- the view itself (pure)


def facts(**given: Any) -> spend.SpendFacts:
    return spend.SpendFacts(**{"conn_id": "c", "model": MAGI, "day": DAY, "price": PRICE, **given})


def test_the_floor_counts_what_is_started_and_the_wave_itself() -> None:
    # $10 with a $9.50 floor: room for one at $0.30, whatever the batch's size.
    assert spend.room(facts(floor=9.5, balance=10.0), 10, whole=False).fits == 1
    # Equal fits: the balance may end exactly at the floor.
    assert spend.room(facts(floor=9.4, balance=10.0), 10, whole=False).fits == 2
    # Another task's started, unbilled video takes the room.
    busy = facts(floor=9.5, balance=10.0, reserved=(spend.Reserved("other", PRICE),))
    view = spend.room(busy, 10, whole=False)
    assert (view.fits, view.limit, view.reserved_count) == (0, spend.FLOOR, 1)
    # One video is all or nothing; so is a long video's rest.
    assert spend.room(facts(floor=9.5, balance=10.0), 2, whole=True).fits == 0
    assert spend.room(facts(floor=9.5, balance=10.0), 1, whole=True).fits == 1


def test_both_guards_share_one_reservation_and_the_tighter_one_limits() -> None:
    overnight = spend.Reserved("yesterday", PRICE, before_midnight=True)
    both = facts(floor=5.0, balance=10.0, budget=1.2, billed_today=0.3, reserved=(overnight,))
    view = spend.room(both, 10, whole=False)
    # budget: 1.20 - 0.30 billed - 0.30 started before midnight = 0.60 -> 2; floor: 4.70 -> 15
    assert (view.fits, view.limit, view.overnight) == (2, spend.BUDGET, 1)
    assert view.budget_room == pytest.approx(0.6) and view.floor_room == pytest.approx(4.7)
    text = spend.refusal_text(spend.room(both, 3, whole=True), both)
    assert text is not None and "1 started prediction(s) not billed yet count $0.30" in text


def test_an_unknown_price_lets_one_through_and_never_counts_as_free() -> None:
    unknown = facts(price=None, floor=9.5, balance=10.0)
    first = spend.room(unknown, 10, whole=False)
    assert (first.fits, first.wait, first.unknown_price) == (1, True, True)
    waiting = spend.room(replace_reserved(unknown, spend.Reserved("ours", None, own=True)), 10, whole=False)
    assert (waiting.fits, waiting.wait) == (0, True)
    other = replace_reserved(unknown, spend.Reserved("theirs", None))
    view = spend.room(other, 1, whole=True)
    assert view.fits == 0 and view.uncountable == "theirs"
    assert "started today and not billed yet" in spend.uncountable_text(view, other)
    below = spend.room(facts(price=None, floor=10.5, balance=10.0), 1, whole=True)
    assert below.below_floor and spend.refusal_text(below, facts(price=None, floor=10.5, balance=10.0))


def test_an_unknown_price_is_not_waited_for_on_other_models_priced_predictions() -> None:
    """A batch of a model whose price is unknown waits for its own first prediction's price, not
    for every prediction on the key to be billed: other models' started predictions, priced,
    are counted, and one prediction goes first (on a busy key it would otherwise wait until its
    timeout without submitting anything)."""
    busy = facts(price=None, floor=9.0, balance=10.0, reserved=(spend.Reserved("theirs", PRICE),))
    view = spend.room(busy, 10, whole=False)
    assert (view.fits, view.wait, view.reserved_count) == (1, True, 1)
    full = facts(price=None, floor=9.8, balance=10.0, reserved=(spend.Reserved("theirs", PRICE),))
    assert spend.room(full, 10, whole=False).fits == 0  # their price takes the room: none goes


def replace_reserved(base: spend.SpendFacts, *reserved: spend.Reserved) -> spend.SpendFacts:
    from dataclasses import replace

    return replace(base, reserved=reserved)


def test_the_floor_refusal_says_what_the_balance_would_be() -> None:
    given = facts(floor=9.9, balance=10.0, reserved=(spend.Reserved("a", PRICE),))
    text = spend.refusal_text(spend.room(given, 1, whole=True), given)
    assert text == (
        "Connection 'c': the WaveSpeed balance is $10.00, and 1 started prediction(s) not billed "
        f"yet will take $0.30 of it; one more prediction of {MAGI} at $0.30 would leave $9.40, below "
        "the connection's min_balance_usd of $9.90. Nothing was uploaded or submitted. Fix: top up "
        "the account (https://wavespeed.ai) or lower min_balance_usd."
    )


def test_a_billing_page_says_when_each_prediction_was_billed() -> None:
    from airflow_provider_magi import costs

    def record(pid: str, at: object) -> dict[str, Any]:
        return {"billing_type": "deduct", "price": 0.3, "created_at": at, "prediction": {"uuid": pid}}

    page = costs.parse_billing_page(
        {
            "total": 4,
            "items": [
                record("a", "2026-03-02T00:00:10.000Z"),
                record("b", "2026-03-01T23:59:59+00:00"),
                record("b", "2026-03-02T00:00:01"),  # no zone: UTC; the later record counts
                record("c", "yesterday"),
            ],
        }
    )
    assert page is not None
    assert page.billed_at == {
        "a": datetime(2026, 3, 2, 0, 0, 10, tzinfo=UTC),
        "b": datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC),
        "c": None,
    }
    assert page.prices["b"] == pytest.approx(0.6)


# ---------------------------------------------------------------- the local server's clock


def test_the_server_clock_is_on_the_control_plane_too(books: LocalWaveSpeedServer) -> None:
    import requests

    before = books.now()
    answer = requests.post(f"{books.base_url}/_testing/clock", params={"advance": "30"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["now"] >= before + 30
    answer = requests.post(f"{books.base_url}/_testing/clock", params={"at": "86400"}, timeout=10)
    assert 86400 <= answer.json()["now"] < 86400 + 60
    refused = requests.post(f"{books.base_url}/_testing/clock", params={"advance": "-1"}, timeout=10)
    assert refused.status_code == 400


def test_the_server_clock_can_be_set_and_moved_on_without_sleeping(books: LocalWaveSpeedServer) -> None:
    midnight = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), UTC)
    books.set_clock((midnight - timedelta(seconds=10)).timestamp())
    started = MagiHook().create_prediction({"prompt": "late [[duration: 0]]"}, MAGI, check_guards=False)
    created = datetime.fromisoformat(books.app.predictions[started.id].created_at.replace("Z", "+00:00"))
    assert midnight - timedelta(seconds=11) < created < midnight
    assert not any(b.prediction_id == started.id for b in books.billings)  # due 20 s after completion
    books.advance_clock(20)
    (record,) = [b for b in books.billings if b.prediction_id == started.id]
    assert midnight <= datetime.fromtimestamp(record.at, UTC) < midnight + timedelta(seconds=11)


# ---------------------------------------------------------------- the floor inside a batch


def test_a_batch_of_ten_pays_only_what_the_floor_leaves_room_for(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_magi.paying import item

    monkeypatch.setattr(item, "INTENT_SETTLE_SECONDS", 0.3)
    use(books, monkeypatch, min_balance_usd=9.5)
    dag_run = run_dag(dag_bag, "magi_batch_test_budget")  # 10 inputs, all in one wave
    assert made(books) == 1  # the old code: 10 (balance $7.00 against a $9.50 floor)
    assert books.count("submit") == 1 + 1
    assert dag_run.state == "failed" and task_instance(dag_run, "batch").try_number == 1
    path = Path(xcom(dag_run, "batch", key="batch_progress")["manifest_path"])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["status"] for line in lines] == ["completed"] + ["not_submitted"] * 9
    assert all("min_balance_usd" in line["error"] for line in lines[1:])
    books.advance_clock(20)  # everything started is billed now
    assert books.balance >= 9.5


# ---------------------------------------------------------------- tasks one after another


@pytest.mark.parametrize(("floor", "room"), [(9.9, 0), (9.4, 2)])
def test_tasks_one_after_another_while_billing_lags_keep_the_balance_above_the_floor(
    books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, floor: float, room: int
) -> None:
    use(books, monkeypatch, min_balance_usd=floor)
    refusals = []
    for number in range(3):  # one after another, billing 20 s late: none is billed in between
        try:
            MagiHook().create_prediction({"prompt": f"task {number} [[duration: 0]]"}, MAGI)
        except MagiBudgetError as error:
            refusals.append(str(error))
    assert made(books) == room  # the old code: 3 ($9.10 on a $9.90 floor)
    assert len(refusals) == 3 - room and all("min_balance_usd" in text for text in refusals)
    books.advance_clock(20)  # billed now
    assert books.balance == pytest.approx(10.0 - room * PRICE) and books.balance >= floor


def test_mapped_tasks_while_billing_lags_pay_only_what_the_floor_leaves(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Billed 20 s late: a task's price lookup finds nothing in 1 s as in 10, and the run ends sooner.
    use(books, monkeypatch, min_balance_usd=9.4, cost_lookup_seconds=1)
    dag_run = run_dag(dag_bag, "magi_r2_budget_billing_lags")  # 6 videos, one after another
    states = [task_instance(dag_run, "generate", k).state for k in range(6)]
    assert states.count("success") == 2 and states.count("failed") == 4
    assert made(books) == 2  # the old code: 5 in the run measured (billing fell due mid-run), $8.50
    books.advance_clock(20)
    assert books.balance == pytest.approx(9.4)


def test_a_long_video_the_floor_cannot_hold_whole_pays_for_no_scene(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(books, monkeypatch, min_balance_usd=9.0)  # 4 scenes at $0.30 need $1.20; $1.00 is left
    dag_run = run_dag(dag_bag, "magi_r2_long_video_budget")
    assert dag_run.state == "failed"
    assert made(books) == 0  # the old code: 4 (balance $8.80 against a $9.00 floor)


# ---------------------------------------------------------------- UTC midnight


MIDNIGHT = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), UTC)  # the last one


@pytest.fixture
def after_midnight(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalWaveSpeedServer, str]]:
    """00:00:05 UTC on the server's clock (and the guards'): a video of $0.30 started at 23:59:50
    is done and not billed yet (billing lags 20 s: due at 00:00:10). Yields the server and its id.

    The last real midnight, so that the usage stats' 30 days (read on the real clock) reach it.
    """
    from airflow_provider_magi import batch_budget
    from airflow_provider_magi.hooks import account

    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.2, prices={MAGI: PRICE}) as books:

        class ServerClock(datetime):
            """The guards' clock, put on the server's (the hook reads its day from it)."""

            @classmethod
            def now(cls, tz: Any = None) -> Any:
                return datetime.fromtimestamp(books.now(), tz)

        monkeypatch.setattr(account, "datetime", ServerClock)
        # The old batch guard read its own clock: put it on the server's too (unused now).
        monkeypatch.setattr(batch_budget, "datetime", ServerClock, raising=False)
        use(books, monkeypatch)
        books.set_clock((MIDNIGHT - timedelta(seconds=60)).timestamp())
        first = MagiHook().create_prediction({"prompt": "earlier [[duration: 0]]"}, MAGI)  # the price
        wait_until(lambda: any(b.prediction_id == first.id for b in books.billings), 10)
        books.app.account.billing_delay = 20.0
        books.set_clock((MIDNIGHT - timedelta(seconds=10)).timestamp())
        late = MagiHook().create_prediction({"prompt": "late [[duration: 0]]"}, MAGI, check_guards=False)
        books.advance_clock(15)
        assert not any(b.prediction_id == late.id for b in books.billings)
        yield books, late.id


def test_a_video_started_before_midnight_and_billed_after_it_counts_today(
    after_midnight: tuple[LocalWaveSpeedServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_magi.batch_budget import room as batch_room

    books, late = after_midnight
    use(books, monkeypatch, daily_budget_usd=0.60)
    # A batch's wave asks the same view: room for 1 of 10 (the old code: 2).
    assert batch_room(MagiHook(), MAGI, 10, set(), logging.getLogger("test"))[0] == 1
    assert len(books.app.predictions) == 2  # asking pays nothing
    refusals = []
    for number in range(2):
        try:
            MagiHook().create_prediction({"prompt": f"after {number} [[duration: 0]]"}, MAGI)
        except MagiBudgetError as error:
            refusals.append(str(error))
    assert len(books.app.predictions) == 3  # the old code: 4 ($0.90 billed today against $0.60)
    (refusal,) = refusals
    assert "2 started prediction(s) not billed yet count $0.60" in refusal
    books.advance_clock(10)  # 00:00:15: the late one is billed today; the usage stats lag it
    books.app.account.usage_until = MIDNIGHT.timestamp() - 1
    assert any(b.prediction_id == late and b.at >= MIDNIGHT.timestamp() for b in books.billings)
    with pytest.raises(MagiBudgetError, match="daily_budget_usd"):
        MagiHook().create_prediction({"prompt": "one more [[duration: 0]]"}, MAGI)
    assert len(books.app.predictions) == 3  # the price's, the late one, one after midnight


def test_a_long_video_after_midnight_counts_the_video_started_before_it(
    dag_bag: Any, after_midnight: tuple[LocalWaveSpeedServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    books, _late = after_midnight
    books.app.account.billing_delay = 3600.0  # the late one stays unbilled however long the run takes
    use(books, monkeypatch, daily_budget_usd=0.60)  # 2 scenes at $0.30 fit only if the late one is missed
    dag_run = run_dag(dag_bag, "magi_r2_long_video_mapped")  # 3 long videos of 2 scenes each
    states = [task_instance(dag_run, "long_video", k).state for k in range(3)]
    assert states == ["failed"] * 3
    assert len(books.app.predictions) == 2  # no scene paid; the old code: 2 scenes ($0.90 today)
