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


def remember_prediction(
    operator: BaseOperator, context: Context, prediction_id: str, result_url: str | None, hook: MagiHook
) -> str:
    """Push the prediction id and its result URL to XCom; return the URL."""
    url = result_url or hook.result_url(prediction_id)
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
        return url if isinstance(url, str) else ""
