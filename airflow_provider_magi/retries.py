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

    A plain loop, not tenacity: the triggerer runs this once per poll, up to a thousand times a
    second, and tenacity's machinery cost 27-29 µs per call against 0.2 µs for this loop, a fifth
    of a whole aiohttp GET (bench/poll_cost.py, "What each layer around one poll costs").

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
        when it must not be sent again (a retry is logged with its reason). Honours the server's
        Retry-After, else backs off exponentially with jitter; never waits past the deadline."""
        if attempt > self.max_retries or not is_retryable(self.method, error):
            return None
        now = time.time()
        if self.deadline is not None and now >= self.deadline:
            return None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            wait = float(min(retry_after, self.max_wait))
        else:
            backoff = self.first_wait * 2 ** (attempt - 1)
            wait = min(self.max_wait, backoff + random.uniform(0, self.first_wait))
        if self.deadline is not None:
            wait = max(0.0, min(wait, self.deadline - now))
        self.log.warning(
            "Retrying in %.1fs (attempt %d of %d): %s", wait, attempt + 1, self.max_retries + 1, error
        )
        return wait

    def call(self, attempt: Callable[[], T]) -> T:
        """``attempt()`` until it returns or must not be tried again (then its error is raised)."""
        number = 1
        while True:
            try:
                return attempt()
            except Exception as error:
                wait = self.wait_before_retry(number, error)
                if wait is None:
                    raise
            time.sleep(wait)
            number += 1

    async def acall(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """:meth:`call` for the event loop."""
        number = 1
        while True:
            try:
                return await attempt()
            except Exception as error:
                wait = self.wait_before_retry(number, error)
                if wait is None:
                    raise
            await asyncio.sleep(wait)
            number += 1


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
