"""Money at the hook: an id in a 200 is ours, ids are checked, candidates are checked, a named
connection never borrows the environment's key, and a dead proxy is a connection never made.

Every test counts the paid POSTs (submits to the model path) its loopback server saw.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_provider_magi.exceptions import (
    MagiError,
    MagiSubmitUncertainError,
    MagiTransportError,
)
from airflow_provider_magi.hooks.magi import MagiHook
from tests.helpers import CANARY_KEY
from tests.hostile import HostileServer, Seen, envelope, free_port, http_answer

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
