"""What the generate operator and the sensor share: a lazy hook, and waiting in the triggerer."""

from __future__ import annotations

import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_magi.hooks.magi import MagiHook
    from airflow_provider_magi.waiting import Waiter

# Airflow's own deferral timeout is a backstop behind the trigger's deadline (for a triggerer
# that is down when it passes); the trigger's own timeout event, with its clearer message, comes
# first.
DEFER_TIMEOUT_GRACE = timedelta(seconds=60)


def execution_deadline(operator: Any, context: Context) -> float | None:
    """When this try's ``execution_timeout`` runs out (Unix time), or None without one.

    Airflow enforces ``execution_timeout`` only while the task runs in a worker, not while it is
    deferred, so a wait in the triggerer has to carry it itself.
    """
    limit = getattr(operator, "execution_timeout", None)
    if not limit:
        return None
    start = getattr(context.get("ti"), "start_date", None)
    started = start.timestamp() if start is not None else time.time()
    return started + limit.total_seconds()


class MagiTaskMixin:
    """Mixed into operators: ``self.hook`` is built on first use, so DAG files import no HTTP client."""

    magi_conn_id: str
    magi_prediction_id: str | None = None  # read by MagiPredictionLink when the task ends

    @cached_property
    def hook(self) -> MagiHook:
        from airflow_provider_magi.hooks.magi import MagiHook

        return MagiHook(magi_conn_id=self.magi_conn_id)

    def defer_to_trigger(self, waiter: Waiter, context: Context) -> None:
        """Hand the wait to the triggerer (raises TaskDeferred), keeping pace, deadline and start.

        The deadline is the sooner of the wait's own and what is left of ``execution_timeout``.
        """
        from airflow_provider_magi.triggers.magi import MagiPredictionTrigger
        from airflow_provider_magi.waiting import DEADLINE_EXECUTION_TIMEOUT

        waiter.cap_deadline(execution_deadline(self, context), DEADLINE_EXECUTION_TIMEOUT)
        timeout = None
        if waiter.deadline is not None:
            timeout = timedelta(seconds=max(0.0, waiter.deadline - time.time())) + DEFER_TIMEOUT_GRACE
        try_number = getattr(context.get("ti"), "try_number", None)
        self.defer(  # type: ignore[attr-defined]  # BaseOperator.defer, on the class this mixes into
            trigger=MagiPredictionTrigger.for_waiter(waiter, self.magi_conn_id, try_number=try_number),
            method_name="execute_complete",
            timeout=timeout,
        )

    def event_from_an_earlier_try(self, event: Any, context: Context) -> bool:
        """True for an event a trigger fired for an earlier try of this task.

        Airflow 3.0 keeps a deferred task's ``next_method`` across retries (apache/airflow#56704):
        a retry resumes with the old try's event instead of running ``execute``. Such an event is
        not this try's outcome: the caller starts the try afresh (the ledger reattaches).
        """
        sent = event.get("try_number") if isinstance(event, dict) else None
        current = getattr(context.get("ti"), "try_number", None)
        if not isinstance(sent, int) or not isinstance(current, int) or sent == current:
            return False
        self.log.warning(  # type: ignore[attr-defined]  # LoggingMixin, on the class this mixes into
            "The trigger's event (%s) is from try %d; this is try %d (Airflow 3.0 resumes a retry "
            "with an earlier try's event): starting this try afresh.",
            event.get("status"),
            sent,
            current,
        )
        return True

    def result_from_trigger(self, event: dict[str, Any] | None) -> dict[str, Any]:
        """The result the trigger's event carries, or the error that fails the task."""
        from airflow_provider_magi.triggers.magi import result_from_event

        if isinstance(event, dict):  # a resumed task is a fresh instance: the link needs the id
            self.magi_prediction_id = event.get("prediction_id")
        return result_from_event(event)
