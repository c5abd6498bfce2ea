"""One tenacity policy for the sync and async clients, and the error a give-up turns into."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from tenacity import RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base

from airflow_provider_magi.api import ConnectFailure, ExchangeFailure, is_retryable
from airflow_provider_magi.exceptions import (
    MagiAPIError,
    MagiError,
    MagiResponseError,
    MagiSubmitUncertainError,
    MagiTransportError,
)


class _WaitRetryAfterOrBackoff:
    """Honour the server's Retry-After when it sends one, else back off exponentially with jitter."""

    def __init__(self, max_wait: float, first_wait: float = 0.5, deadline: float | None = None) -> None:
        self.max_wait = max_wait
        self.first_wait = first_wait
        self.deadline = deadline

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            wait = float(min(retry_after, self.max_wait))
        else:
            backoff = self.first_wait * 2 ** (state.attempt_number - 1)
            wait = min(self.max_wait, backoff + random.uniform(0, self.first_wait))
        if self.deadline is not None:  # never sleep past the caller's deadline
            wait = max(0.0, min(wait, self.deadline - time.time()))
        return wait


class _StopAtDeadline(stop_base):
    """Stop retrying once the caller's deadline (Unix time) has passed."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return time.time() >= self.deadline


def retry_policy(
    method: str,
    *,
    max_retries: int,
    max_wait: float,
    log: logging.Logger | Any,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` / ``AsyncRetrying`` for one kind of request.

    :param deadline: Unix time after which no retry starts and no wait reaches.
    """
    stop: stop_base = stop_after_attempt(max_retries + 1)
    if deadline is not None:
        stop = stop | _StopAtDeadline(deadline)

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "Retrying in %.1fs (attempt %d of %d): %s",
            wait,
            state.attempt_number + 1,
            max_retries + 1,
            error,
        )

    return {
        "retry": retry_if_exception(lambda error: is_retryable(method, error)),
        "stop": stop,
        "wait": _WaitRetryAfterOrBackoff(max_wait, deadline=deadline),
        "before_sleep": log_retry,
        "reraise": True,
    }


def settle(method: str, error: BaseException, *, what: str, base_url: str) -> BaseException:
    """The error to raise once retrying is over (or was never allowed) for ``error``.

    For a POST, anything short of a proof of rejection (a 4xx status, a refused connection) means
    the generation may have started, so it becomes ``MagiSubmitUncertainError``, which Airflow does
    not retry.
    """
    if isinstance(error, ConnectFailure):
        return MagiTransportError(f"{what}: could not connect to {base_url}: {error}")
    if method == "POST" and _may_have_been_accepted(error):
        said = str(error) if isinstance(error, MagiError) else f"{what}: {error}"
        return MagiSubmitUncertainError(
            f"{said}. WaveSpeed may have accepted the request, so it is not sent again "
            "and no second generation is billed. Check your WaveSpeed predictions before running "
            "the task again."
        )
    if isinstance(error, ExchangeFailure):
        return MagiTransportError(f"{what}: no complete answer from {base_url}: {error}")
    return error


def _may_have_been_accepted(error: BaseException) -> bool:
    if isinstance(error, MagiAPIError):
        return error.http_status is None or error.http_status >= 500
    return isinstance(error, (ExchangeFailure, MagiResponseError))
