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
# the account's predictions to anyone logged in (its docs: "View all your predictions at
# wavespeed.ai/predictions"). There is no documented page for one prediction.
DASHBOARD_URL = "https://wavespeed.ai/predictions"


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
    """Links a task to its prediction's result on the WaveSpeed API."""

    name = "WaveSpeed prediction"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # Airflow calls this as the task ends; a task that failed before submitting has no link.
        if not getattr(operator, "magi_prediction_id", None):
            return ""
        from airflow.providers.common.compat.sdk import XCom

        url: Any = XCom.get_value(ti_key=ti_key, key=XCOM_RESULT_URL)
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            return ""
        from airflow_provider_magi.api import DEFAULT_BASE_URL

        return DASHBOARD_URL if url.startswith(DEFAULT_BASE_URL + "/") else url
