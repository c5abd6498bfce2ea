"""Know what you pay: the balance, what each prediction cost, what was spent in a range.

Through the hook against the local server (its books kept apart from the client's parsing), and
against a hostile server for answers that cannot be read as dollars: those are "unknown" (None),
never a wrong number.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
import requests

from airflow_provider_magi import costs
from airflow_provider_magi.exceptions import MagiAuthError, MagiInputError, MagiResponseError
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.testing import Fault, LocalWaveSpeedServer
from tests.helpers import CANARY_KEY, connection_json, wait_until
from tests.hostile import HostileServer, Seen, envelope, http_answer

MAGI = "wavespeed-ai/magi-1-24b"
OTHER = "wavespeed-ai/other-video"
AUTH = {"Authorization": f"Bearer {CANARY_KEY}"}


@pytest.fixture
def books(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalWaveSpeedServer]:
    """The local server with two priced models, ``magi_default`` pointing at it."""
    with LocalWaveSpeedServer(
        api_key=CANARY_KEY,
        completion_seconds=0.2,
        models=[MAGI, OTHER],
        prices={MAGI: 0.45, OTHER: 1.2},
        balance=10.0,
    ) as running:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(running))
        yield running


def completed(hook: MagiHook, prompt: str = "a fox [[duration: 0]]", model: str = MAGI) -> str:
    prediction = hook.create_prediction({"prompt": prompt}, model)
    wait_until(lambda: hook.get_prediction(prediction.id).is_terminal, timeout=10)
    return prediction.id


def post(server: LocalWaveSpeedServer, path: str, body: object) -> requests.Response:
    return requests.post(server.base_url + path, json=body, headers=AUTH, timeout=5)


def day_range() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(hours=1), now + timedelta(minutes=5)


# ---------------------------------------------------------------- through the hook, local server


@pytest.mark.parametrize("client", ["sync", "async"])
def test_the_balance_goes_down_by_the_model_price_when_a_prediction_completes(
    books: LocalWaveSpeedServer, client: str
) -> None:
    hook = MagiHook()
    read = hook.get_balance if client == "sync" else lambda: asyncio.run(MagiHook().aget_balance())
    assert read() == 10.0
    completed(hook)
    assert read() == 10.0 - 0.45 == books.balance
    completed(hook, "this one fails [[fail: out of memory]] [[duration: 0]]")
    assert read() == 10.0 - 0.45  # a failed prediction is not billed
    assert len(books.billings) == 1 and books.billings[0].prediction_id != ""
    assert read() == 10.0 - 0.45  # reading again bills nothing twice
    assert books.count("balance") >= 4


@pytest.mark.parametrize("client", ["sync", "async"])
def test_the_cost_of_a_completed_prediction_is_the_server_price(
    books: LocalWaveSpeedServer, client: str
) -> None:
    hook = MagiHook()
    magi, other = completed(hook), completed(hook, model=OTHER)
    for prediction_id, model in ((magi, MAGI), (other, OTHER)):
        if client == "sync":
            cost = hook.get_prediction_cost(prediction_id)
        else:
            cost = asyncio.run(MagiHook().aget_prediction_cost(prediction_id))
        assert cost is not None and round(cost, 2) == round(books.price_of(model), 2)
        assert cost == books.price_of(model)
    assert hook.get_prediction_cost("never-submitted") is None
    assert books.count("billings") == 3  # one page each: the search names the prediction


def test_the_cost_is_unknown_until_the_billing_record_appears(monkeypatch: pytest.MonkeyPatch) -> None:
    # Billed an hour after completion: "not billed yet" holds however slow this machine is.
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.1, billing_delay=3600) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server))
        hook = MagiHook()
        prediction_id = completed(hook)
        assert hook.get_prediction_cost(prediction_id) is None  # completed, not billed yet
        assert asyncio.run(MagiHook().aget_prediction_cost(prediction_id)) is None
        assert hook.get_balance() == 100.0  # nothing deducted before the billing record exists
        assert server.billings == []


def test_usage_stats_sum_what_was_billed(books: LocalWaveSpeedServer) -> None:
    hook = MagiHook()
    for model in (MAGI, MAGI, OTHER):
        completed(hook, model=model)
    start, end = day_range()
    assert hook.get_spend(start, end) == pytest.approx(0.45 * 2 + 1.2, abs=1e-9)
    assert hook.get_spend(start, end, MAGI) == pytest.approx(0.9, abs=1e-9)
    assert hook.get_spend(start, end, OTHER) == pytest.approx(1.2, abs=1e-9)
    assert hook.get_spend(start, end, "someone/unused") == 0.0
    assert hook.get_spend(start - timedelta(days=2), start - timedelta(days=1)) == 0.0
    stats = post(books, costs.USAGE_PATH, costs.usage_query(start, end)).json()["data"]
    assert stats["summary"] == {"total_cost": 2.1, "total_requests": 3, "success_requests": 3}
    assert {m["model_uuid"]: (m["total_count"], m["unit_price"]) for m in stats["per_model_usage"]} == {
        MAGI: (2, 0.45),
        OTHER: (1, 1.2),
    }
    (today,) = stats["daily_usage"]
    assert today["date"] == datetime.now(UTC).date().isoformat() and today["count"] == 3
    assert costs.parse_daily_spend(stats, datetime.now(UTC).date()) == pytest.approx(2.1)
    assert costs.parse_daily_spend(stats, date(2001, 1, 1)) == 0.0
    before = books.count("usage")
    with pytest.raises(MagiInputError, match="31 days"):
        hook.get_spend(end - timedelta(days=32), end)
    assert books.count("usage") == before  # refused before sending


def test_the_server_refuses_bad_account_queries_naming_the_field(books: LocalWaveSpeedServer) -> None:
    start, end = day_range()
    bad_searches = {
        "page": {"page": 0, "page_size": 10},
        "page_size": {"page": 1, "page_size": 101},
        "prediction_uuids": {"page": 1, "page_size": 10, "prediction_uuids": "abc"},
        "sort": {"page": 1, "page_size": 10, "sort": "price"},
        "start_time": {"page": 1, "page_size": 10, "start_time": "yesterday"},
    }
    for field, body in bad_searches.items():
        answer = post(books, costs.BILLINGS_PATH, body)
        assert answer.status_code == 400 and field in answer.json()["message"], field
    assert post(books, costs.BILLINGS_PATH, {"page": 1, "page_size": 0}).status_code == 400
    bad_usage = {
        "start_time": {"end_time": end.isoformat()},
        "end_time": {"start_time": start.isoformat(), "end_time": "later"},
        "31 days": {"start_time": (end - timedelta(days=32)).isoformat(), "end_time": end.isoformat()},
    }
    for text, body in bad_usage.items():
        answer = post(books, costs.USAGE_PATH, body)
        assert answer.status_code == 400 and text in answer.json()["message"], text
    for method, path in (
        ("GET", costs.BALANCE_PATH),
        ("POST", costs.BILLINGS_PATH),
        ("POST", costs.USAGE_PATH),
    ):
        assert requests.request(method, books.base_url + path, json={}, timeout=5).status_code == 401
    assert books.count("submit") == 0  # neither account POST is mistaken for a model


def test_billing_search_filters_sorts_and_pages(books: LocalWaveSpeedServer) -> None:
    hook = MagiHook()
    ids = [completed(hook) for _ in range(3)]
    assert books.balance == 10.0 - 3 * 0.45
    newest_first = post(books, costs.BILLINGS_PATH, {"page": 1, "page_size": 2}).json()["data"]
    assert newest_first["total"] == 3
    assert [i["prediction"]["uuid"] for i in newest_first["items"]] == ids[:0:-1]
    oldest = post(books, costs.BILLINGS_PATH, {"page": 1, "page_size": 1, "sort": "created_at ASC"})
    assert oldest.json()["data"]["items"][0]["prediction"]["uuid"] == ids[0]
    (item,) = post(books, costs.BILLINGS_PATH, costs.billing_query([ids[1]])).json()["data"]["items"]
    assert item["billing_type"] == "deduct" and item["order"]["state"] == "paid"
    assert item["prediction"] == {"uuid": ids[1], "model_uuid": MAGI, "status": "completed"}
    future = str(int((time.time() + 3600) * 1000))
    assert (
        post(books, costs.BILLINGS_PATH, {"page": 1, "page_size": 10, "start_time": future}).json()["data"][
            "total"
        ]
        == 0
    )


def test_a_submit_without_the_balance_for_it_creates_nothing(books: LocalWaveSpeedServer) -> None:
    books.set_balance(0.44)  # MAGI-1 costs 0.45 here
    with pytest.raises(MagiAuthError) as caught:
        MagiHook().create_prediction({"prompt": "too dear"})
    error = caught.value
    assert error.http_status == 403 and error.api_message == "Insufficient balance"
    assert "Insufficient balance" in str(error) and "lacks permission or balance" in str(error)
    assert CANARY_KEY not in str(error)
    assert books.app.predictions == {} and books.billings == []
    assert books.count("submit") == 1  # refused, never resent
    assert books.balance == 0.44
    books.set_balance(0.45)  # exactly the price is enough
    completed(MagiHook())
    assert books.balance == 0.0


def test_account_reads_are_resent_like_gets_and_stop_at_the_deadline(
    books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = MagiHook()
    prediction_id = completed(hook)
    books.set_faults(
        [
            Fault(route="billings", kind="status", status=503, times=2),
            Fault(route="usage", kind="drop", times=1),
            Fault(route="balance", kind="status", status=502, times=1),
        ]
    )
    assert hook.get_prediction_cost(prediction_id) == 0.45
    assert books.count("billings") == 3
    assert hook.get_spend(*day_range()) == 0.45
    assert books.count("usage") == 2
    assert hook.get_balance() == 10.0 - 0.45
    assert books.count("balance") == 2
    # Fifty retries allowed, 0.2 s apart: only the deadline can stop them after the third read
    # (a sleep never ends early, so the third starts at or after it), however busy the machine.
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books, max_retries=50))
    books.set_faults([Fault(route="balance", kind="status", status=503)])
    before = books.count("balance")
    with pytest.raises(Exception, match="503"):
        MagiHook().get_balance(deadline=time.time() + 0.3)
    assert 1 <= books.count("balance") - before <= 3


def test_faults_reach_the_account_routes(books: LocalWaveSpeedServer) -> None:
    hook = MagiHook()
    books.set_faults([Fault(route="balance", kind="malformed_json", times=1)])
    with pytest.raises(MagiResponseError):
        hook.get_balance()
    books.set_faults([Fault(route="billings", kind="html", status=200, times=1)])
    assert hook.get_prediction_cost("whatever") is None  # not the envelope: cost unknown
    books.set_faults([Fault(route="usage", kind="envelope_error", status=403, times=1)])
    with pytest.raises(MagiAuthError):
        hook.get_spend(*day_range())


# ---------------------------------------------------------------- hostile answers


def conn_json(base_url: str) -> str:
    extra = {"max_retries": 1, "max_retry_wait": 0.05, "read_timeout": 5}
    return json.dumps({"conn_type": "magi", "host": base_url, "password": CANARY_KEY, "extra": extra})


def billing_item(price: str, prediction_id: str = "p1", state: str = "paid") -> str:
    """One billing record as JSON text, ``price`` spliced in as written (NaN, 9999..., true)."""
    return (
        '{"uuid": "b1", "billing_type": "deduct", "price": ' + price + ', "created_at": '
        '"2026-01-01T00:00:00Z", "order": {"price": 0.3, "origin_price": 0.3, "state": "' + state + '"}, '
        '"prediction": {"uuid": "'
        + prediction_id
        + '", "model_uuid": "'
        + MAGI
        + '", "status": "completed"}}'
    )


def billing_page(*items: str, total: str = "") -> str:
    return '{"page": 1, "total": ' + (total or str(len(items))) + ', "items": [' + ", ".join(items) + "]}"


def usage_body(total_cost: str) -> str:
    entry = '{"model_uuid": "' + MAGI + '", "model_type": "video", "unit_price": 0.3, "total_cost": '
    summary = '{"total_cost": ' + total_cost + ', "total_requests": 1, "success_requests": 1}'
    return (
        '{"per_model_usage": ['
        + entry
        + total_cost
        + ', "total_count": 1, "last_used_date": "2026-01-01"}], '
        '"daily_usage": [], "summary": ' + summary + "}"
    )


def wrapped(data: str) -> bytes:
    return envelope(None, raw='{"code": 200, "message": "success", "data": ' + data + "}")


UNREADABLE_USD = {
    "missing": "null",
    "negative": "-0.3",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "a bool": "true",
    "not a number": '"thirty cents"',
    "an exponent string": '"3e-1"',
    "the older docs' 24300": "24300",
    "a 400-digit integer": "9" * 400,
}


@pytest.mark.parametrize("value", UNREADABLE_USD.values(), ids=UNREADABLE_USD.keys())
def test_an_unreadable_amount_is_unknown_never_a_wrong_number(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    def respond(seen: Seen) -> bytes:
        if seen.path == costs.BALANCE_PATH:
            return wrapped('{"balance": ' + value + "}")
        if seen.path == costs.BILLINGS_PATH:
            return wrapped(billing_page(billing_item(value)))
        return wrapped(usage_body(value))

    with HostileServer(respond) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        hook = MagiHook()
        if value != "24300":  # a balance of 24,300 USD is believable; one video at that price is not
            with pytest.raises(MagiResponseError, match="no balance readable as USD") as caught:
                hook.get_balance()
            assert CANARY_KEY not in str(caught.value)
        assert hook.get_prediction_cost("p1") is None
        assert asyncio.run(MagiHook().aget_prediction_cost("p1")) is None
        assert hook.get_spend(*day_range()) is None
        assert hook.get_spend(*day_range(), model=MAGI) is None


HOSTILE_PAGES = {
    "items not a list": '{"page": 1, "total": 1, "items": {"p1": 0.3}}',
    "no total": '{"page": 1, "items": [' + billing_item("0.3") + "]}",
    "total is true": billing_page(billing_item("0.3"), total="true"),
    "order not paid": billing_page(billing_item("0.3", state="refunded")),
    "another prediction only": billing_page(billing_item("0.3", "p2")),
    "twice, once unreadable": billing_page(billing_item("0.3"), billing_item('"?"')),
    "not the envelope": None,
}


@pytest.mark.parametrize("page", HOSTILE_PAGES.values(), ids=HOSTILE_PAGES.keys())
def test_a_billing_page_that_cannot_be_read_is_an_unknown_cost(
    monkeypatch: pytest.MonkeyPatch, page: str | None
) -> None:
    def respond(seen: Seen) -> bytes:
        if page is None:
            return http_answer(200, b"<html>busy</html>", {"Content-Type": "text/html"})
        return wrapped(page)

    with HostileServer(respond) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        assert MagiHook().get_prediction_cost("p1") is None
        assert asyncio.run(MagiHook().aget_prediction_cost("p1")) is None


def test_a_readable_hostile_answer_is_read_and_the_key_stays_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prices as decimal strings and a prediction billed in two parts are read; an answer that
    echoes the Authorization header never puts the key into an error."""

    def respond(seen: Seen) -> bytes:
        echoed = json.dumps(seen.headers.get("authorization", ""))
        if seen.path == costs.BALANCE_PATH:
            return wrapped('{"balance": ' + echoed + ', "currency": "USD"}')
        return wrapped(billing_page(billing_item('"0.10"'), billing_item("0.25")))

    with HostileServer(respond) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        hook = MagiHook()
        assert hook.get_prediction_cost("p1") == pytest.approx(0.35)
        with pytest.raises(MagiResponseError) as caught:
            hook.get_balance()
        assert CANARY_KEY not in str(caught.value) and "***" in str(caught.value)
        assert all(s.headers["authorization"] == f"Bearer {CANARY_KEY}" for s in server.seen)


def test_a_refused_read_names_the_connection_not_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    def respond(seen: Seen) -> bytes:
        return envelope(None, status=401, message=f"bad key {seen.headers.get('authorization')}")

    with HostileServer(respond) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        hook = MagiHook()
        errors = []
        for read in (
            hook.get_balance,
            lambda: hook.get_prediction_cost("p1"),
            lambda: hook.get_spend(*day_range()),
        ):
            with pytest.raises(MagiAuthError) as caught:
                read()
            errors.append(str(caught.value))
        assert all("magi_default" in text and CANARY_KEY not in text for text in errors)
        assert len(server.seen) == 3  # a 401 is not retried


# ---------------------------------------------------------------- the pure readers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (0.3, 0.3),
        ("0.30", 0.3),
        (" 12 ", 12.0),
        (100, 100.0),
        (100.01, None),
        (True, None),
        (False, None),
        (None, None),
        (-0.01, None),
        (math.nan, None),
        (math.inf, None),
        ("1e3", None),
        ("-1", None),
        ("$1", None),
        ([0.3], None),
        (10**400, None),
    ],
)
def test_read_usd(value: object, expected: float | None) -> None:
    assert costs.read_usd(value, limit=costs.MAX_PRICE_USD) == expected


def test_parse_balance_refuses_another_currency_and_implausible_sums() -> None:
    assert costs.parse_balance({"balance": 12.5}) == 12.5
    assert costs.parse_balance({"balance": 12.5, "currency": "usd"}) == 12.5
    assert costs.parse_balance({"balance": 12.5, "currency": "EUR"}) is None
    assert costs.parse_balance({"balance": 1e12}) is None
    assert costs.parse_balance({}) is None


def test_a_spend_above_100_usd_per_request_is_not_believed() -> None:
    summary = {"total_cost": 250.0, "total_requests": 3, "success_requests": 3}
    assert costs.parse_usage_spend({"summary": summary}) == 250.0
    assert (
        costs.parse_usage_spend({"summary": {**summary, "total_requests": 2, "success_requests": 2}}) is None
    )
    assert costs.parse_usage_spend({"summary": {"total_cost": 0.0, "total_requests": 0}}) == 0.0
    assert costs.parse_usage_spend({"summary": {"total_cost": 5.0}}) == 5.0  # no count: the flat cap
    assert costs.parse_usage_spend({"summary": "none"}) is None
    assert costs.parse_usage_spend({"per_model_usage": None}, model=MAGI) is None


def test_queries_are_checked_before_sending() -> None:
    end = datetime(2026, 1, 31, tzinfo=UTC)
    assert costs.usage_query(end - timedelta(days=31), end, "/wavespeed-ai/magi-1-24b/") == {
        "start_time": "2025-12-31T00:00:00.000Z",
        "end_time": "2026-01-31T00:00:00.000Z",
        "model_uuid": MAGI,
    }
    with pytest.raises(ValueError, match="before"):
        costs.usage_query(end, end - timedelta(seconds=1))
    assert costs.usage_query(datetime(2026, 1, 1), datetime(2026, 1, 2))["start_time"].endswith("Z")
    with pytest.raises(ValueError, match="page_size"):
        costs.billing_query(page_size=101)


# ---------------------------------------------------------------- the server as a product


def test_the_command_line_sets_the_books(capsys: pytest.CaptureFixture[str]) -> None:
    from airflow_provider_magi.testing.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for text in ("--balance", "--price MODEL=USD", "--default-price", "--billing-delay", "/api/v3/balance"):
        assert text in shown
    for bad in ("magi", "m=-1", "m=abc", "=0.3", "m=inf"):
        with pytest.raises(SystemExit):
            main(["--price", bad, "--port", "0"])
    assert "expected MODEL=USD" in capsys.readouterr().err


def test_the_control_plane_reads_sets_and_resets_the_books(books: LocalWaveSpeedServer) -> None:
    completed(MagiHook())
    account = requests.get(books.base_url + "/_testing/account", timeout=5).json()
    assert account["balance"] == 9.55 and [b["price"] for b in account["billings"]] == [0.45]
    assert requests.post(books.base_url + "/_testing/balance?usd=2.5", timeout=5).json() == {"balance": 2.5}
    assert requests.post(books.base_url + "/_testing/balance?usd=lots", timeout=5).status_code == 400
    requests.post(books.base_url + "/_testing/reset", timeout=5)
    assert books.balance == 10.0 and books.billings == []


def test_the_server_shares_no_parsing_with_the_client() -> None:
    """A bug in costs.py must not hide behind the same bug in the server that tests it."""
    import ast
    from pathlib import Path

    import airflow_provider_magi.testing as testing

    for source in Path(testing.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(
                    (
                        "airflow_provider_magi.api",
                        "airflow_provider_magi.costs",
                        "airflow_provider_magi.hooks",
                    )
                ), f"{source.name} imports {node.module}"


@pytest.mark.parametrize("client", ["sync", "async"])
def test_the_balance_is_read_from_the_other_documented_path_when_the_first_is_not_there(
    monkeypatch: pytest.MonkeyPatch, client: str
) -> None:
    def respond(seen: Seen) -> bytes:
        if seen.path == "/api/v3/account/balance":
            return envelope({"balance": 12.5, "currency": "USD"})
        return http_answer(
            404, b'{"code": 404, "message": "Not Found"}', {"Content-Type": "application/json"}
        )

    with HostileServer(respond) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        balance = MagiHook().get_balance() if client == "sync" else asyncio.run(MagiHook().aget_balance())
    assert balance == 12.5
    assert [seen.path for seen in server.seen] == ["/api/v3/balance", "/api/v3/account/balance"]
