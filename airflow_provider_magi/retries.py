"""One retry policy for the sync and async clients, and the error a give-up turns into."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from airflow_provider_magi.api import ConnectFailure, ExchangeFailure, is_retryable
from airflow_provider_magi.exceptions import (
    MagiAPIError,
    MagiError,
    MagiResponseError,
    MagiSubmitUncertainError,
    MagiTransportError,
)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a request again, and how long to wait first: one decision for both clients.

    The first attempt runs bare; only after it fails does tenacity drive the retries, with this
    policy's rules as its retry/stop/wait/before-sleep callables. The happy path is then a plain
    call: the triggerer makes up to a thousand polls a second, and building tenacity's machinery
    for each cost 27-61 µs, against 0.5 µs for the bare call (bench/poll_cost.py, "What each layer
    around one poll costs").

    :param deadline: Unix time after which no retry starts and no wait reaches.
    """

    method: str
    max_retries: int
    max_wait: float
    log: logging.Logger | Any
    deadline: float | None = None
    first_wait: float = 0.5

    def wait_before_retry(self, attempt: int, error: BaseException) -> float | None:
        """Seconds to wait before sending again after ``attempt`` failed with ``error``; None
        when it must not be sent again. Honours the server's Retry-After, else backs off
        exponentially with jitter; never waits past the deadline."""
        if attempt > self.max_retries or not self._may_resend(error):
            return None
        return self._wait(attempt, error)

    def _may_resend(self, error: BaseException) -> bool:
        if not is_retryable(self.method, error):
            return False
        return self.deadline is None or time.time() < self.deadline

    def _wait(self, attempt: int, error: BaseException | None) -> float:
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            wait = float(min(retry_after, self.max_wait))
        else:
            backoff = self.first_wait * 2 ** (attempt - 1)
            wait = min(self.max_wait, backoff + random.uniform(0, self.first_wait))
        if self.deadline is not None:
            wait = max(0.0, min(wait, self.deadline - time.time()))
        return wait

    def _announce(self, attempt: int, wait: float, error: BaseException | None) -> None:
        self.log.warning(
            "Retrying in %.1fs (attempt %d of %d): %s", wait, attempt + 1, self.max_retries + 1, error
        )

    def _tenacity_rules(self) -> dict[str, Any]:
        """This policy as tenacity's callables, for the attempts after the first (numbered from 2)."""
        from tenacity import retry_if_exception, stop_after_attempt
        from tenacity.stop import stop_base

        policy = self

        class _PastDeadline(stop_base):
            def __call__(self, retry_state: Any) -> bool:
                return policy.deadline is not None and time.time() >= policy.deadline

        def wait(retry_state: Any) -> float:
            return policy._wait(retry_state.attempt_number + 1, retry_state.outcome.exception())

        def before_sleep(retry_state: Any) -> None:
            sleep = retry_state.next_action.sleep if retry_state.next_action else 0.0
            policy._announce(retry_state.attempt_number + 1, sleep, retry_state.outcome.exception())

        return {
            "retry": retry_if_exception(self._may_resend),
            "stop": stop_after_attempt(self.max_retries) | _PastDeadline(),
            "wait": wait,
            "before_sleep": before_sleep,
            "reraise": True,
        }

    def call(self, attempt: Callable[[], T]) -> T:
        """``attempt()`` until it returns or must not be tried again (then its error is raised)."""
        try:
            return attempt()
        except Exception as error:
            wait = self.wait_before_retry(1, error)
            if wait is None:
                raise
            self._announce(1, wait, error)
        time.sleep(wait)
        from tenacity import Retrying

        return Retrying(**self._tenacity_rules())(attempt)

    async def acall(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """:meth:`call` for the event loop."""
        try:
            return await attempt()
        except Exception as error:
            wait = self.wait_before_retry(1, error)
            if wait is None:
                raise
            self._announce(1, wait, error)
        await asyncio.sleep(wait)
        from tenacity import AsyncRetrying

        result: T = await AsyncRetrying(**self._tenacity_rules())(attempt)
        return result


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
