"""What the generate operator and the sensor share: a lazy hook, and waiting in the triggerer."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_magi.hooks.magi import MagiHook
    from airflow_provider_magi.waiting import Waiter


class MagiTaskMixin:
    """Mixed into operators: ``self.hook`` is built on first use, so DAG files import no HTTP client."""

    magi_conn_id: str
    magi_prediction_id: str | None = None  # read by MagiPredictionLink when the task ends

    @cached_property
    def hook(self) -> MagiHook:
        from airflow_provider_magi.hooks.magi import MagiHook

        return MagiHook(magi_conn_id=self.magi_conn_id)

    def defer_to_trigger(self, waiter: Waiter) -> None:
        """Hand the wait to the triggerer (raises TaskDeferred), keeping pace, deadline and start."""
        from airflow_provider_magi.triggers.magi import MagiPredictionTrigger

        self.defer(  # type: ignore[attr-defined]  # BaseOperator.defer, on the class this mixes into
            trigger=MagiPredictionTrigger.for_waiter(waiter, self.magi_conn_id),
            method_name="execute_complete",
        )

    def result_from_trigger(self, event: dict[str, Any] | None) -> dict[str, Any]:
        """The result the trigger's event carries, or the error that fails the task."""
        from airflow_provider_magi.triggers.magi import result_from_event

        if isinstance(event, dict):  # a resumed task is a fresh instance: the link needs the id
            self.magi_prediction_id = event.get("prediction_id")
        return result_from_event(event)
