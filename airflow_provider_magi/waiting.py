"""The pace and bookkeeping of waiting for one prediction, shared by the trigger and the worker.

The docs ask for no more than one poll every 5 s for video, and fewer for long jobs: polls start
at ``poll_interval`` and spread out after two minutes, up to ``max_poll_interval``.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_magi import metrics
from airflow_provider_magi.api import Prediction
from airflow_provider_magi.exceptions import MagiError, MagiExecutionTimeoutError, MagiTimeoutError

# Which limit a wait's deadline comes from: the operator's own ``timeout`` or, when it is sooner,
# what is left of the task's ``execution_timeout`` (the two fail differently: see exceptions.py).
DEADLINE_TIMEOUT = "timeout"
DEADLINE_EXECUTION_TIMEOUT = "execution_timeout"

DEFAULT_POLL_INTERVAL = 10.0
MAX_POLL_INTERVAL = 60.0
_BACKOFF_AFTER = 120.0  # seconds of waiting before polls start to spread out
_BACKOFF_SPAN = 240.0  # each further span of this many seconds adds one poll_interval
_JITTER = 0.1  # +-10% so triggers created together do not poll in lock-step


def poll_delay(elapsed: float, poll_interval: float, max_interval: float = MAX_POLL_INTERVAL) -> float:
    """Seconds until the next poll, before jitter."""
    if elapsed <= _BACKOFF_AFTER:
        return poll_interval
    grown = poll_interval * (1.0 + (elapsed - _BACKOFF_AFTER) / _BACKOFF_SPAN)
    return max(poll_interval, min(grown, max_interval))


@dataclass
class Waiter:
    """Tracks one wait: logs each status change with the time spent, and says when to poll next."""

    prediction_id: str
    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_poll_interval: float = MAX_POLL_INTERVAL
    deadline: float | None = None  # Unix time
    started_at: float = field(default_factory=time.time)
    last_status: str | None = None
    deadline_reason: str = DEADLINE_TIMEOUT
    conn_id: str | None = None  # tags the metrics

    def cap_deadline(self, deadline: float | None, reason: str) -> None:
        """Make ``deadline`` the wait's deadline if it comes sooner than the current one."""
        if deadline is not None and (self.deadline is None or deadline < self.deadline):
            self.deadline = deadline
            self.deadline_reason = reason

    @property
    def elapsed(self) -> float:
        return time.time() - self.started_at

    def observe(self, prediction: Prediction, log: Any) -> None:
        if prediction.status == self.last_status:
            return
        self.last_status = prediction.status
        if prediction.is_terminal:
            outcome = "completed" if prediction.is_completed else "failed"
            model = prediction.model or None
            metrics.incr(f"predictions.{outcome}", model=model, conn_id=self.conn_id)
            metrics.timing("submit_to_terminal", self.elapsed, model=model, conn_id=self.conn_id)
        if prediction.is_failed:
            log.error(
                "Prediction %s %s: %s (after %.0fs)",
                prediction.id,
                prediction.status,
                prediction.error or "no error text from WaveSpeed",
                self.elapsed,
            )
        elif prediction.is_terminal and prediction.inference_ms is not None:
            log.info(
                "Prediction %s is %s after %.0fs (inference %.1fs)",
                prediction.id,
                prediction.status,
                self.elapsed,
                prediction.inference_ms / 1000,
            )
        elif prediction.is_known_status:
            log.info("Prediction %s is %s after %.0fs", prediction.id, prediction.status, self.elapsed)
        else:
            log.warning(
                "Prediction %s reports unknown status %r after %.0fs; still waiting",
                prediction.id,
                prediction.status,
                self.elapsed,
            )

    def next_delay(self) -> float | None:
        """Seconds to sleep before the next poll, or None once the deadline has passed."""
        delay = poll_delay(self.elapsed, self.poll_interval, self.max_poll_interval)
        delay *= random.uniform(1 - _JITTER, 1 + _JITTER)
        if self.deadline is None:
            return delay
        remaining = self.deadline - time.time()
        if remaining <= 0:
            return None
        return min(delay, remaining)

    def timeout_message(self) -> str:
        return timeout_message(self.prediction_id, self.deadline_reason, self.last_status, self.elapsed)

    def count_timeout(self) -> None:
        metrics.incr("predictions.timed_out", conn_id=self.conn_id)

    def timeout_error(self) -> MagiError:
        return timeout_error(self.deadline_reason, self.timeout_message(), self.prediction_id)


def timeout_message(prediction_id: str, reason: str, last_status: str | None, waited: float) -> str:
    limit = "the task's execution_timeout" if reason == DEADLINE_EXECUTION_TIMEOUT else "the timeout"
    return (
        f"Prediction {prediction_id} did not finish within {limit} "
        f"(last status: {last_status or 'unknown'}, waited {waited:.0f}s). "
        "WaveSpeed has no cancel endpoint: it may still run and be billed."
    )


def timeout_error(reason: str, message: str, prediction_id: str | None) -> MagiError:
    """``timeout`` fails without retry; ``execution_timeout`` fails as Airflow fails any task for it."""
    if reason == DEADLINE_EXECUTION_TIMEOUT:
        return MagiExecutionTimeoutError(message, prediction_id=prediction_id)
    return MagiTimeoutError(message, prediction_id=prediction_id)


# A wave is worth a resume once this share of max_in_flight is free: a resume costs a worker
# slot and, on Airflow 3.3 with LocalExecutor, meets a race that can fail the task
# (apache/airflow#66374), so a batch resumes per wave, not per finished video.
WAVE_SHARE = 0.5


def resume_after(running: int, pending: int, max_in_flight: int) -> int:
    """How many of a batch's ``running`` predictions must end before the task resumes: a wave's
    worth of free slots (``WAVE_SHARE`` of ``max_in_flight``, or every ``pending`` input if
    fewer), counting slots already free; with nothing left to submit, all of them (one last
    resume downloads what is left)."""
    if pending <= 0:
        return max(1, running)
    free_now = max(0, max_in_flight - running)
    wave = min(pending, math.ceil(max_in_flight * WAVE_SHARE))
    return max(1, min(running, wave - free_now))
