"""MagiPredictionTrigger: wait for a prediction in the triggerer, not in a worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_magi.api import Prediction
from airflow_provider_magi.exceptions import (
    MagiAuthError,
    MagiError,
    MagiPredictionFailedError,
    MagiRejectedError,
)
from airflow_provider_magi.waiting import (
    DEADLINE_TIMEOUT,
    DEFAULT_POLL_INTERVAL,
    MAX_POLL_INTERVAL,
    Waiter,
    timeout_error,
)

EVENT_SUCCESS = "success"
EVENT_FAILED = "failed"
EVENT_ERROR = "error"
EVENT_TIMEOUT = "timeout"


class MagiPredictionTrigger(BaseTrigger):
    """Polls one prediction until it is terminal or ``deadline`` passes; fires exactly one event.

    Only JSON values are serialised (ids, intervals, the deadline as a Unix time): the API key
    is read from the connection inside the triggerer, never stored in the trigger row. Nothing
    outlasts the deadline: a poll still in flight then (a server's hold, a backoff, a slow answer)
    is cancelled and the timeout event fires on time.
    """

    def __init__(
        self,
        prediction_id: str,
        magi_conn_id: str = "magi_default",
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        deadline: float | None = None,
        max_poll_interval: float = MAX_POLL_INTERVAL,
        started_at: float | None = None,
        deadline_reason: str = DEADLINE_TIMEOUT,
        last_status: str | None = None,
        try_number: int | None = None,
    ) -> None:
        super().__init__()
        # The try that deferred, echoed in the event: Airflow 3.0 may hand this event to a later
        # try (apache/airflow#56704), which must then start afresh, not fail on it.
        self.try_number = try_number
        self.prediction_id = prediction_id
        self.magi_conn_id = magi_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.max_poll_interval = float(max_poll_interval)
        self.started_at = started_at if started_at is not None else time.time()
        self.deadline_reason = deadline_reason
        # The status the worker last logged: the trigger logs changes from there, so a status
        # seen on both sides of the deferral is not logged twice.
        self.last_status = last_status

    @classmethod
    def for_waiter(
        cls, waiter: Waiter, magi_conn_id: str, *, try_number: int | None = None
    ) -> MagiPredictionTrigger:
        """Carry on a wait that started in the worker: same pace, deadline and start time."""
        return cls(
            prediction_id=waiter.prediction_id,
            magi_conn_id=magi_conn_id,
            poll_interval=waiter.poll_interval,
            max_poll_interval=waiter.max_poll_interval,
            deadline=waiter.deadline,
            started_at=waiter.started_at,
            deadline_reason=waiter.deadline_reason,
            last_status=waiter.last_status,
            try_number=try_number,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "prediction_id": self.prediction_id,
                "magi_conn_id": self.magi_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "max_poll_interval": self.max_poll_interval,
                "started_at": self.started_at,
                "deadline_reason": self.deadline_reason,
                "last_status": self.last_status,
                "try_number": self.try_number,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_magi.hooks.magi import MagiHook

        hook = MagiHook(magi_conn_id=self.magi_conn_id)
        waiter = Waiter(
            self.prediction_id,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            deadline=self.deadline,
            started_at=self.started_at,
            deadline_reason=self.deadline_reason,
            last_status=self.last_status,
            conn_id=self.magi_conn_id,
        )
        while True:
            remaining = None if self.deadline is None else self.deadline - time.time()
            try:
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):  # no extra task per poll, as wait_for makes
                    prediction = await hook.aget_prediction(self.prediction_id, deadline=self.deadline)
            except TimeoutError:
                yield self._timeout_event(waiter)
                return
            except (MagiAuthError, MagiRejectedError) as error:
                yield self._event(EVENT_ERROR, str(error), fatal=True)
                return
            except MagiError as error:
                # The hook already retried; a trigger keeps waiting until its deadline.
                self.log.warning("Prediction %s: poll failed, will poll again: %s", self.prediction_id, error)
            else:
                waiter.observe(prediction, self.log)
                if prediction.is_terminal:
                    yield self._terminal_event(prediction)
                    return
            delay = waiter.next_delay()
            if delay is None:
                yield self._timeout_event(waiter)
                return
            await asyncio.sleep(delay)

    def _timeout_event(self, waiter: Waiter) -> TriggerEvent:
        message = waiter.timeout_message()
        self.log.error("%s", message)
        waiter.count_timeout()
        return self._event(EVENT_TIMEOUT, message, deadline_reason=self.deadline_reason)

    def _terminal_event(self, prediction: Prediction) -> TriggerEvent:
        if prediction.is_completed and prediction.outputs:
            return self._event(EVENT_SUCCESS, "completed", prediction)
        if prediction.is_completed:
            return self._event(EVENT_FAILED, "completed without any outputs", prediction)
        return self._event(EVENT_FAILED, prediction.error or prediction.status, prediction)

    def _event(
        self,
        status: str,
        message: str,
        prediction: Prediction | None = None,
        *,
        fatal: bool = False,
        **extra: Any,
    ) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "prediction_id": self.prediction_id,
                "message": message,
                "result": prediction.to_result() if prediction is not None else None,
                "fatal": fatal,
                "try_number": self.try_number,
                **extra,
            }
        )


def result_from_event(event: Mapping[str, Any] | None) -> dict[str, Any]:
    """The task's result from a trigger event, or the error that fails the task."""
    if not isinstance(event, Mapping) or "status" not in event:
        raise MagiError(f"Unexpected event from MagiPredictionTrigger: {event!r}")
    status = event["status"]
    prediction_id = event.get("prediction_id")
    message = event.get("message") or ""
    if status == EVENT_SUCCESS and isinstance(event.get("result"), Mapping):
        return dict(event["result"])
    if status == EVENT_FAILED:
        result = event.get("result") or {}
        state = result.get("status", "failed")
        raise MagiPredictionFailedError(
            f"Prediction {prediction_id} {state}: {message}", prediction_id=prediction_id
        )
    if status == EVENT_TIMEOUT:
        raise timeout_error(str(event.get("deadline_reason") or DEADLINE_TIMEOUT), message, prediction_id)
    if event.get("fatal"):
        raise MagiRejectedError(message, prediction_id=prediction_id)
    raise MagiError(f"Prediction {prediction_id}: {message or event!r}", prediction_id=prediction_id)
