"""The try's deadline, and what its expiry raises, for every operator shape.

``execution_timeout`` is counted from when the try's first ``execute`` began, as Airflow's own
timer counts it, not from the task instance's ``start_date`` (a loaded worker can start a try
long after that date: the try then ended before it submitted anything). The start is recorded in
an XCom of the task instance, tagged with the try number, so a resume after a deferral within the
try keeps it; a new try starts its own clock (Airflow clears a task's XComs when a try starts,
and the tag covers Airflow 3.0, which can resume a retry with the earlier try's state).

Its expiry raises :class:`~airflow_provider_magi.exceptions.MagiExecutionTimeoutError`, an
``AirflowTaskTimeout``, so the task's retries apply and a retry reattaches to what was paid. The
operator's own ``timeout`` stays final (:class:`~airflow_provider_magi.exceptions.MagiTimeoutError`).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_magi.waiting import DEADLINE_EXECUTION_TIMEOUT, DEADLINE_TIMEOUT, timeout_error

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_magi.exceptions import MagiError

# The XCom (of the task instance itself) that holds when this try's first execute began.
XCOM_TRY_STARTED = "magi_try_started"

__all__ = [
    "DEADLINE_EXECUTION_TIMEOUT",
    "DEADLINE_TIMEOUT",
    "XCOM_TRY_STARTED",
    "expiry_error",
    "start_clock",
    "task_deadline",
    "try_deadline",
    "try_started",
]


def try_started(context: Context) -> float:
    """When this try's first ``execute`` began (Unix time): recorded at the first call, read back
    on every resume within the try. Never fails the task: where it cannot be read or recorded,
    the clock starts now (a later deadline, never an earlier one)."""
    ti = context.get("ti")
    try_number = getattr(ti, "try_number", None)
    cached = getattr(ti, "_magi_try_started", None)
    if isinstance(cached, tuple) and cached[0] == try_number:
        return float(cached[1])
    recorded = _read(ti)
    if (
        isinstance(recorded, dict)
        and recorded.get("try_number") == try_number
        and isinstance(recorded.get("started"), (int, float))
        and not isinstance(recorded.get("started"), bool)
        and recorded["started"] <= time.time()
    ):
        started = float(recorded["started"])
    else:
        started = time.time()
        _write(ti, {"try_number": try_number, "started": started})
    with contextlib.suppress(AttributeError):  # a ti without attributes (tests): read it each time
        ti._magi_try_started = (try_number, started)  # type: ignore[union-attr]
    return started


def start_clock(operator: Any, context: Context) -> None:
    """Called first thing in ``execute``: records the try's start when the task has an
    ``execution_timeout`` (without one, nothing is recorded)."""
    if getattr(operator, "execution_timeout", None):
        try_started(context)


def try_deadline(operator: Any, context: Context) -> float | None:
    """When this try's ``execution_timeout`` runs out (Unix time), or None without one.

    Airflow enforces ``execution_timeout`` only while the task runs in a worker, and afresh at
    each resume, so a wait in the triggerer and a try that defers many times carry it themselves.
    """
    limit = getattr(operator, "execution_timeout", None)
    if not limit:
        return None
    return try_started(context) + limit.total_seconds()


def task_deadline(operator: Any, context: Context, timeout: float | None) -> tuple[float | None, str]:
    """The sooner of the try's ``execution_timeout`` and the operator's own ``timeout`` (seconds
    from now), with which of the two it is (``DEADLINE_EXECUTION_TIMEOUT`` or ``DEADLINE_TIMEOUT``)."""
    own = time.time() + float(timeout) if timeout else None
    execution = try_deadline(operator, context)
    if execution is not None and (own is None or execution < own):
        return execution, DEADLINE_EXECUTION_TIMEOUT
    return own, DEADLINE_TIMEOUT


def expiry_error(reason: str, message: str, prediction_id: str | None = None) -> MagiError:
    """What a passed deadline raises: ``execution_timeout`` a retried ``AirflowTaskTimeout``
    (``MagiExecutionTimeoutError``), the operator's ``timeout`` a final ``MagiTimeoutError``."""
    return timeout_error(reason, message, prediction_id)


def _read(ti: Any) -> Any:
    pull = getattr(ti, "xcom_pull", None)
    if pull is None:
        return None
    try:
        return pull(task_ids=ti.task_id, key=XCOM_TRY_STARTED, map_indexes=ti.map_index)
    except Exception:  # the clock then starts now: a later deadline, never an earlier one
        return None


def _write(ti: Any, value: dict[str, Any]) -> None:
    push = getattr(ti, "xcom_push", None)
    if push is None:
        return
    try:
        push(key=XCOM_TRY_STARTED, value=value)
    except Exception:  # a resume then starts the clock anew (Airflow's own timer still bounds it)
        return
