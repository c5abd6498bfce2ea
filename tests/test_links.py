"""The extra link: something a browser can open, never a URL the server chose."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_magi.links import DASHBOARD_URL, MagiPredictionLink, human_url
from tests.helpers import run_dag, xcom
from tests.hostile import HostileServer, Seen, envelope, http_answer
from tests.test_hostile_payment import conn_json


class Operator:
    magi_prediction_id = "p1"


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("https://api.wavespeed.ai/api/v3/predictions/p1/result", DASHBOARD_URL),  # needs the key
        # The local server: its own page for the prediction, not the API's (which needs the key).
        (
            "http://127.0.0.1:8765/api/v3/predictions/p1/result",
            "http://127.0.0.1:8765/_testing/predictions/p1",
        ),
        (
            "http://localhost:8765/api/v3/predictions/p1/result",
            "http://localhost:8765/_testing/predictions/p1",
        ),
        # Any other host: its pages are unknown, and its API answers a browser 401: no link.
        ("https://proxy.example.com/api/v3/predictions/p1/result", ""),
        ("http://10.0.0.5:8765/api/v3/predictions/p1/result", ""),
        ("http://127.0.0.1:8765/api/v3/predictions/p1%2F..%2Fx/result", ""),
        ("javascript:alert(1)", ""),
        (None, ""),
    ],
)
def test_the_link_opens_in_a_browser(monkeypatch: pytest.MonkeyPatch, stored: Any, shown: str) -> None:
    from airflow.providers.common.compat.sdk import XCom

    monkeypatch.setattr(XCom, "get_value", staticmethod(lambda **kwargs: stored))
    assert MagiPredictionLink().get_link(Operator(), ti_key=object()) == shown  # type: ignore[arg-type]


def test_the_result_url_is_built_from_the_connection_not_taken_from_the_answer(
    dag_bag, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = {"urls": {"get": "javascript:alert(document.cookie)"}}

    def respond(seen: Seen) -> bytes:
        if seen.method == "POST":
            return envelope({"id": "p1", "status": "created", **hostile})
        if seen.path.startswith("/api/v3/predictions/p1/result"):
            return envelope(
                {"id": "p1", "status": "completed", "outputs": ["https://cdn.example/v.mp4"], **hostile}
            )
        return http_answer(404, b"{}")

    with HostileServer(respond) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", conn_json(server.base_url))
        dag_run = run_dag(dag_bag, "magi_test_params", prompt="x", seed=None, image=None, extra_inputs=None)
    assert dag_run.state == "success"
    assert xcom(dag_run, "generate", key="prediction_result_url") == (
        f"{server.base_url}/api/v3/predictions/p1/result"
    )


def test_the_local_server_s_link_opens_in_a_browser_without_the_key(magi_conn: Any) -> None:
    """What a click does: the API's result URL answers a browser (no key) 401; the link's page
    answers 200 with the prediction's status and its outputs, and never the key."""
    import requests

    from airflow_provider_magi.hooks.magi import MagiHook

    hook = MagiHook()
    prediction = hook.create_prediction({"prompt": "a <b>bold</b> fox [[duration: 0]]"})
    result_url = hook.result_url(prediction.id)
    assert requests.get(result_url, timeout=10).status_code == 401  # why the link is not this URL
    magi_conn.app.complete_now(prediction.id)
    page = requests.get(human_url(result_url), timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert f"Prediction {prediction.id}" in page.text and "<td>completed</td>" in page.text
    assert f'href="{magi_conn.base_url}/outputs/{prediction.id}/0.mp4"' in page.text
    assert "a &lt;b&gt;bold&lt;/b&gt; fox" in page.text  # the prompt is text, never markup
    assert magi_conn.api_key not in page.text
    missing = requests.get(human_url(hook.result_url("f" * 32)), timeout=10)
    assert missing.status_code == 404 and "No prediction" in missing.text
