"""MagiPredictionSensor: wait for a prediction submitted by another task."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_magi.api import final_result
from airflow_provider_magi.compat import (
    AirflowFailException,
    AirflowSkipException,
    AirflowTaskTimeout,
    BaseSensorOperator,
    conf,
)
from airflow_provider_magi.links import MagiPredictionLink, remember_prediction
from airflow_provider_magi.task_mixin import MagiTaskMixin
from airflow_provider_magi.waiting import DEFAULT_POLL_INTERVAL, MAX_POLL_INTERVAL, Waiter

if TYPE_CHECKING:
    from airflow.sdk import Context, PokeReturnValue

_T = TypeVar("_T")


class MagiPredictionSensor(MagiTaskMixin, BaseSensorOperator):
    """Succeeds when the prediction is ``completed`` and returns its result dict.

    Fails (without retrying) when it ``failed`` or reached another failed terminal status, with
    WaveSpeed's error text. Unknown statuses are treated as still running. ``soft_fail`` and
    ``never_fail`` skip instead, in every mode (poke, reschedule and deferrable alike).

    :param prediction_id: The id to wait for, usually
        ``"{{ ti.xcom_pull(task_ids='submit', key='prediction_id') }}"`` or an XComArg. Templated.
    :param magi_conn_id: Airflow connection of type ``magi``. Templated.
    :param deferrable: Wait in the triggerer. Default from ``[operators] default_deferrable``.
    :param poll_interval: Seconds between polls (also the poke interval).
    """

    template_fields: Sequence[str] = ("prediction_id", "magi_conn_id")
    operator_extra_links = (MagiPredictionLink(),)
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        prediction_id: str,
        magi_conn_id: str = "magi_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = MAX_POLL_INTERVAL,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.prediction_id = prediction_id
        self.magi_conn_id = magi_conn_id
        self.deferrable = deferrable
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = max(self.poll_interval, float(max_poll_interval))

    def execute(self, context: Context) -> Any:
        return self._softened(lambda: self._execute(context))

    def _execute(self, context: Context) -> Any:
        prediction_id = self._prediction_id()
        remember_prediction(self, context, prediction_id, self.hook)
        if not self.deferrable:
            return super().execute(context)
        prediction = self.hook.get_prediction(prediction_id)
        waiter = Waiter(
            prediction_id,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            deadline=time.time() + _timeout_seconds(self.timeout),
            conn_id=self.magi_conn_id,
        )
        waiter.observe(prediction, self.log)
        if prediction.is_terminal:
            return self._costed(final_result(prediction))
        self.defer_to_trigger(waiter, context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.event_from_an_earlier_try(event, context):  # Airflow 3.0 (apache/airflow#56704)
            return self.execute(context)  # wait afresh for this try
        return self._softened(lambda: self._costed(self.result_from_trigger(event)))

    def _costed(self, result: dict[str, Any]) -> dict[str, Any]:
        """The result with what the prediction cost (``cost_usd``, None when not billed yet), sent
        to the cost metrics unless a task already counted it: a batch submitted without waiting
        is costed here, as the generate task costs the videos it waits for."""
        result["cost_usd"] = self._count_cost(result["prediction_id"], result.get("model"))
        return result

    def _softened(self, step: Callable[[], _T]) -> _T:
        """Apply ``soft_fail``/``never_fail`` as BaseSensorOperator does for ``poke``, so a failed
        or timed-out prediction skips in deferrable mode exactly as it does in poke mode."""
        try:
            return step()
        except (AirflowFailException, AirflowTaskTimeout) as error:
            if self.soft_fail:
                raise AirflowSkipException(f"Skipping because soft_fail=True: {error}") from error
            if getattr(self, "never_fail", False):
                raise AirflowSkipException(f"Skipping because never_fail=True: {error}") from error
            raise
        except Exception as error:
            if getattr(self, "never_fail", False) and not _is_control_flow(error):
                raise AirflowSkipException(f"Skipping because never_fail=True: {error}") from error
            raise

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow.providers.common.compat.sdk import PokeReturnValue

        prediction = self.hook.get_prediction(self._prediction_id())
        self.log.info("Prediction %s is %s", prediction.id, prediction.status)
        if not prediction.is_terminal:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._costed(final_result(prediction)))

    def _prediction_id(self) -> str:
        from airflow_provider_magi.validation import check_prediction_id

        return check_prediction_id(self.prediction_id)


def _is_control_flow(error: BaseException) -> bool:
    """Deferral and skips are how a task talks to Airflow, not failures to soften."""
    return type(error).__name__ in ("TaskDeferred", "AirflowSkipException", "AirflowRescheduleException")


def _timeout_seconds(timeout: float | timedelta) -> float:
    return timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
