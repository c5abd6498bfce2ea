"""Money at the hook: an id in a 200 is ours, ids are checked, candidates are checked, a named
connection never borrows the environment's key, and a dead proxy is a connection never made.

Every test counts the paid POSTs (submits to the model path) its loopback server saw.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airflow_provider_magi.exceptions import (
    MagiError,
    MagiResponseError,
    MagiSubmitUncertainError,
    MagiTransportError,
)
from airflow_provider_magi.hooks import history as history_module
from airflow_provider_magi.hooks.magi import MagiHook
from tests.helpers import CANARY_KEY, run_dag, xcom
from tests.hostile import HostileServer, Seen, envelope, free_port, http_answer

# Every test here proves a rule about what is paid for: `make test` runs them on every Airflow minor.
pytestmark = pytest.mark.money

MODEL = "wavespeed-ai/magi-1-24b"
SUBMIT_PATH = f"/api/v3/{MODEL}"
HISTORY_PATH = "/api/v3/predictions"
PAID_ID = "0123456789abcdef0123456789abcdef"  # what WaveSpeed issues: uuid4().hex


def conn_json(base_url: str, **extra: Any) -> str:
    extras = {"max_retries": 2, "max_retry_wait": 0.1, "read_timeout": 5, **extra}
    return json.dumps({"conn_type": "magi", "host": base_url, "password": CANARY_KEY, "extra": extras})


def paid_posts(server: HostileServer) -> int:
    return sum(seen.method == "POST" and seen.path == SUBMIT_PATH for seen in server.seen)


def history_reads(server: HostileServer) -> list[Seen]:
    return [seen for seen in server.seen if seen.method == "POST" and seen.path == HISTORY_PATH]


def raw_envelope(code: Any, data: Any, message: str = "odd") -> bytes:
    """An HTTP 200 whose envelope carries ``code`` as given (any JSON value)."""
    return envelope(None, raw=json.dumps({"code": code, "message": message, "data": data}))


def completed(pred_id: str) -> bytes:
    return envelope({"id": pred_id, "status": "completed", "outputs": ["https://cdn.example/v.mp4"]})


def page(items: list[dict[str, Any]], total: int, number: int = 1) -> bytes:
    return envelope({"page": number, "total": total, "items": items})


def item(pred_id: str, *, model: str | None = MODEL, created_at: str | None = None) -> dict[str, Any]:
    created = created_at if created_at is not None else datetime.now(UTC).isoformat().replace("+00:00", "Z")
    fields: dict[str, Any] = {"id": pred_id, "status": "processing", "outputs": [], "created_at": created}
    if model is not None:
        fields["model"] = model
    return fields


def api(submit: Callable[[Seen], bytes | list[bytes | float]], history: Any = None) -> HostileServer:
    """A WaveSpeed whose submit answers ``submit``, whose history answers ``history`` (a function of
    the requested page number, else an empty history) and whose polls complete any prediction."""

    def respond(seen: Seen) -> bytes | list[bytes | float]:
        if seen.method == "POST" and seen.path == SUBMIT_PATH:
            return submit(seen)
        if seen.method == "POST" and seen.path == HISTORY_PATH:
            number = json.loads(seen.body)["page"]
            return history(number) if history else page([], 0)
        if seen.method == "GET" and seen.path.endswith("/result"):
            return completed(seen.path.split("/")[-2])
        return http_answer(404, b"{}")

    return HostileServer(respond)


def dropped(seen: Seen) -> bytes:
    """The submit reaches the server, which closes the connection without an answer."""
    return b""


# ------------------------------------------------------------------ 3. an id in a 200 is ours

ODD_CODES = {"0": 0, "true": True, "302": 302, "409": 409, "429": 429, "string 200": "200"}


@pytest.mark.parametrize("code", list(ODD_CODES.values()), ids=list(ODD_CODES))
def test_an_id_in_a_200_is_kept_whatever_the_envelope_code(
    monkeypatch: pytest.MonkeyPatch, task_logs: Callable[[], str], code: Any
) -> None:
    submit = lambda seen: raw_envelope(code, {"id": PAID_ID, "status": "created"}, message="odd news")  # noqa: E731
    with api(submit) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        prediction = MagiHook().create_prediction({"prompt": "x"})
    assert prediction.id == PAID_ID
    assert paid_posts(server) == 1
    logs = task_logs()
    assert f"envelope says code {code!r}, message 'odd news'; the id is kept" in logs
    assert CANARY_KEY not in logs


@pytest.mark.parametrize("code", [0, True, 429], ids=["0", "true", "429"])
def test_the_operator_pays_once_for_an_id_under_an_odd_envelope_code(
    dag_bag: Any, monkeypatch: pytest.MonkeyPatch, code: Any
) -> None:
    submit = lambda seen: raw_envelope(code, {"id": PAID_ID, "status": "created"})  # noqa: E731
    with api(submit) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        dag_run = run_dag(dag_bag, "magi_test_params", prompt="x", seed=None, image=None, extra_inputs=None)
    assert paid_posts(server) == 1
    assert dag_run.state == "success"
    assert xcom(dag_run, "generate")["prediction_id"] == PAID_ID


def test_a_boolean_envelope_code_without_an_id_is_malformed_not_status_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with api(lambda seen: raw_envelope(True, {"status": "created"})) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        with pytest.raises(MagiSubmitUncertainError, match="'code'"):
            MagiHook().create_prediction({"prompt": "x"})
    assert paid_posts(server) == 1


# ------------------------------------------------------------------ 4. ids are checked

BAD_IDS = {
    "lone surrogate": "paid-\ud800",
    "5,000 characters": "a" * 5000,
    "spaces": "paid 1",
    "slash": "paid/1",
    "empty": "",
    "a number": 12345,
}


@pytest.mark.parametrize(
    ("bad_id", "code"),
    [pytest.param(bad, 200, id=f"{name}, code 200") for name, bad in BAD_IDS.items()]
    # An envelope 429 naming an id is never resent, even when the id is invalid (an empty one
    # names none: that 429 may be resent like any other).
    + [pytest.param(bad, 429, id=f"{name}, code 429") for name, bad in BAD_IDS.items() if bad != ""],
)
def test_a_200_naming_an_invalid_id_is_uncertain_and_never_resent(
    monkeypatch: pytest.MonkeyPatch, bad_id: Any, code: int
) -> None:
    with api(lambda seen: raw_envelope(code, {"id": bad_id, "status": "created"})) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        with pytest.raises(MagiSubmitUncertainError) as caught:
            MagiHook().create_prediction({"prompt": "x"})
    message = str(caught.value)
    assert paid_posts(server) == 1
    assert "invalid prediction id" in message and "may have accepted" in message
    assert ascii(bad_id)[:40] in message  # quoted safely ...
    assert len(message) < 2000  # ... and truncated
    message.encode("utf-8")  # no lone surrogate left to crash a log or a store write
    assert CANARY_KEY not in message


def test_a_poll_answer_with_an_invalid_id_is_a_response_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def respond(seen: Seen) -> bytes:
        return envelope({"id": "paid/1", "status": "completed", "outputs": []})

    with HostileServer(respond) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        with pytest.raises(MagiResponseError, match="invalid 'id'"):
            MagiHook().get_prediction(PAID_ID)


# ------------------------------------------------------------------ 5. candidates are checked


def test_candidates_of_another_model_or_outside_the_window_are_dropped_unreadable_ones_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime.now(UTC)
    items = [
        item("a" * 32, model="someone/else"),
        item("b" * 32, created_at="2019-05-01T00:00:00Z"),
        item("c" * 32, created_at="soon"),
        item("d" * 32, model=None),
        item("e" * 32, model=f"/{MODEL}/", created_at=(now - timedelta(seconds=5)).isoformat()),
        item("f" * 32, created_at=(now + timedelta(hours=1)).isoformat()),
    ]
    with api(dropped, history=lambda number: page(items, len(items), number)) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        found = MagiHook().find_submit_candidates(MODEL, now)
    # An unreadable created_at ("soon") or model (none) may be this submit's: kept, fail safe.
    assert [p.id for p in found] == ["c" * 32, "d" * 32, "e" * 32]


def test_a_single_listed_prediction_of_another_model_from_2019_is_not_attached(
    dag_bag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stranger = [item("a" * 32, model="someone/else", created_at="2019-05-01T00:00:00Z")]
    with api(dropped, history=lambda number: page(stranger, 1, number)) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        dag_run = run_dag(dag_bag, "magi_test_uncertain_submit_attach")
    assert paid_posts(server) == 1
    assert dag_run.state == "failed"
    assert xcom(dag_run, "generate", key="prediction_candidates") == []


def test_every_page_the_total_promises_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [f"{n:032x}" for n in range(25)]
    pages = {1: [item(ids[0])], 2: [item(i) for i in ids[1:]]}
    with api(dropped, history=lambda number: page(pages.get(number, []), 25, number)) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        with pytest.raises(MagiSubmitUncertainError) as caught:
            MagiHook().create_prediction({"prompt": "x"})
    assert [c["prediction_id"] for c in caught.value.candidates] == ids
    assert [json.loads(seen.body)["page"] for seen in history_reads(server)] == [1, 2]
    assert paid_posts(server) == 1


@pytest.mark.parametrize(
    "pages",
    [
        {1: [item("a" * 32)]},  # total 25, then an empty page
        {n: [item(f"{n:032x}")] for n in range(1, 30)},  # one a page: more pages than the bound
        {1: [item("a" * 32)] * 100},  # total 5,000: more than the bound
    ],
    ids=["short of the total", "more pages than the bound", "total beyond the bound"],
)
def test_a_history_that_cannot_be_read_whole_is_unknown_not_none(
    monkeypatch: pytest.MonkeyPatch, pages: dict[int, list[dict[str, Any]]]
) -> None:
    total = 5000 if len(pages.get(1, [])) == 100 else 25
    with api(dropped, history=lambda number: page(pages.get(number, []), total, number)) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        with pytest.raises(MagiError, match="could not be read completely"):
            MagiHook().find_submit_candidates(MODEL, datetime.now(UTC))
        with pytest.raises(MagiSubmitUncertainError) as caught:
            MagiHook().create_prediction({"prompt": "x"})
    assert caught.value.candidates == []  # nothing to attach to when we do not know
    assert "could not be read completely" in str(caught.value)
    assert "lists no prediction" not in str(caught.value)
    assert len(history_reads(server)) <= 2 * 10
    assert paid_posts(server) == 1


def stalled_history(number: int) -> list[bytes | float]:
    return [120.0, page([], 0, number)]


def test_the_lookup_ends_by_its_deadline_with_the_request_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    with api(dropped, history=stalled_history) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url, read_timeout=60))
        # The stall is 120 s and read_timeout 60 s: only the lookup's deadline can end the read, and
        # only the overall deadline's cut says "left before the deadline" (no wall-clock bound).
        with pytest.raises(MagiError, match=r"could not be read completely(.|\n)*left before the deadline"):
            MagiHook().find_submit_candidates(MODEL, datetime.now(UTC), lookup_seconds=1.0)
    assert len(history_reads(server)) == 1


def test_an_uncertain_submit_waits_for_the_history_no_longer_than_the_lookup_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(history_module, "CANDIDATE_LOOKUP_SECONDS", 1.0)
    with api(dropped, history=stalled_history) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url, read_timeout=30))
        with pytest.raises(MagiSubmitUncertainError) as caught:
            MagiHook().create_prediction({"prompt": "x"})
    # read_timeout is 30 s and the stall 120 s: the lookup's own deadline cut it, as it says.
    assert "left before the deadline" in str(caught.value)
    assert caught.value.candidates == []
    assert "could not be read completely" in str(caught.value)
    assert paid_posts(server) == 1


def test_the_deadline_cut_reads_the_same_when_the_capped_read_timeout_fires_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The read timeout is capped by the time left, so on a busy machine it can fire before the
    watchdog's timer: the error must say the same thing either way (it once said "Read timed out"
    and failed this suite on a loaded machine)."""
    from contextlib import contextmanager

    from airflow_provider_magi.hooks import sync_client
    from airflow_provider_magi.watchdog import Watch

    @contextmanager
    def watchdog_that_never_fires(seconds: float) -> Any:
        yield Watch()

    monkeypatch.setattr(sync_client, "overall_deadline", watchdog_that_never_fires)
    with api(dropped, history=stalled_history) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url, read_timeout=30))
        with pytest.raises(MagiError, match=r"could not be read completely(.|\n)*left before the deadline"):
            MagiHook().find_submit_candidates(MODEL, datetime.now(UTC), lookup_seconds=1.0)
    assert len(history_reads(server)) == 1
    assert paid_posts(server) == 0


# ------------------------------------------------------------------ 6. no fallback for a named id


def test_a_named_connection_that_does_not_exist_never_uses_the_environment_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WAVESPEED_API_KEY", CANARY_KEY)
    expected = (
        r"connection 'magi_staging' does not exist; \$WAVESPEED_API_KEY is used only for "
        r"'magi_default'; create connection magi_staging or use magi_conn_id='magi_default'"
    )
    with pytest.raises(MagiError, match=expected) as caught:
        MagiHook(magi_conn_id="magi_staging").settings
    with pytest.raises(MagiError, match=expected) as caught_async:
        asyncio.run(MagiHook(magi_conn_id="magi_staging").aget_settings())
    assert CANARY_KEY not in str(caught.value) + str(caught_async.value)
    assert MagiHook().settings.api_key == CANARY_KEY  # the default id still falls back


# ------------------------------------------------------------------ 7. a dead proxy


def test_a_submit_through_a_proxy_that_refuses_is_a_connect_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with api(lambda seen: raw_envelope(200, {"id": PAID_ID, "status": "created"})) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        with pytest.raises(MagiTransportError, match="could not connect") as caught:
            MagiHook().create_prediction({"prompt": "x"})
    assert not isinstance(caught.value, MagiSubmitUncertainError)
    assert "proxy" in str(caught.value).lower()  # it went to the proxy, which refused
    assert server.seen == []  # so nothing reached WaveSpeed, and nothing was paid
    assert CANARY_KEY not in str(caught.value)
