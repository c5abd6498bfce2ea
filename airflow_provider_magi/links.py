"""The "WaveSpeed prediction" extra link, and the XComs it reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_magi.compat import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey

    from airflow_provider_magi.hooks.magi import MagiHook

XCOM_PREDICTION_ID = "prediction_id"
XCOM_RESULT_URL = "prediction_result_url"
# The API's result URL needs the key, so a browser gets a 401 there; WaveSpeed's own pages list
# the account's predictions to anyone logged in (its docs, wavespeed.ai/docs/what-are-predictions:
# "View all your predictions at wavespeed.ai/predictions"). Neither those docs nor the official
# SDK (wavespeed 2.0.5) name a page for one prediction, so the link opens that list.
DASHBOARD_URL = "https://wavespeed.ai/predictions"
# The local WaveSpeed server's page for one prediction (no key: a browser cannot send one).
LOCAL_SERVER_PAGE = "/_testing/predictions/"
_RESULT_PATH = "/api/v3/predictions/"


def human_url(result_url: Any) -> str:
    """What a person can open for the prediction whose API result URL is ``result_url``:
    WaveSpeed's predictions page for the real API, the local server's page for the local server
    (plain http on loopback), and nothing ("") for any other host, whose pages we do not know
    (its result URL would answer 401 to a browser)."""
    if not isinstance(result_url, str) or not result_url.startswith(("https://", "http://")):
        return ""
    from airflow_provider_magi.api import DEFAULT_BASE_URL, is_valid_prediction_id

    if result_url.startswith(DEFAULT_BASE_URL + "/"):
        return DASHBOARD_URL
    base, found, rest = result_url.partition(_RESULT_PATH)
    prediction_id = rest.removesuffix("/result")
    if not found or not is_valid_prediction_id(prediction_id):
        return ""
    from airflow_provider_magi.output_urls import is_loopback_http

    return f"{base}{LOCAL_SERVER_PAGE}{prediction_id}" if is_loopback_http(base) else ""


def remember_prediction(operator: BaseOperator, context: Context, prediction_id: str, hook: MagiHook) -> str:
    """Push the prediction id and its result URL to XCom; return the URL.

    The URL is built from the connection's base URL, never taken from the answer's ``urls.get``:
    a server could put anything there (``javascript:...``) and the UI would make it a link.
    """
    url = hook.result_url(prediction_id)
    ti = context["ti"]
    ti.xcom_push(key=XCOM_PREDICTION_ID, value=prediction_id)
    ti.xcom_push(key=XCOM_RESULT_URL, value=url)
    operator.magi_prediction_id = prediction_id
    return url


class MagiPredictionLink(BaseOperatorLink):
    """Links a task to a page a person can open for its prediction (see :func:`human_url`)."""

    name = "WaveSpeed prediction"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # Airflow calls this as the task ends; a task that failed before submitting has no link.
        if not getattr(operator, "magi_prediction_id", None):
            return ""
        from airflow.providers.common.compat.sdk import XCom

        return human_url(XCom.get_value(ti_key=ti_key, key=XCOM_RESULT_URL))
