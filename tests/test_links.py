"""The extra link: something a browser can open, never a URL the server chose."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_magi.links import DASHBOARD_URL, MagiPredictionLink
from tests.helpers import run_dag, xcom
from tests.hostile import HostileServer, Seen, envelope, http_answer
from tests.test_hostile_payment import conn_json


class Operator:
    magi_prediction_id = "p1"


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("https://api.wavespeed.ai/api/v3/predictions/p1/result", DASHBOARD_URL),  # needs the key
        (
            "http://127.0.0.1:8765/api/v3/predictions/p1/result",
            "http://127.0.0.1:8765/api/v3/predictions/p1/result",
        ),
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
