"""The one retry policy: a bare first attempt, tenacity for the retries after it, same rules both ways."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from airflow_provider_magi.api import ConnectFailure, ExchangeFailure
from airflow_provider_magi.exceptions import MagiAPIError
from airflow_provider_magi.retries import RetryPolicy

log = logging.getLogger("test")


def policy(method: str = "GET", **kwargs: Any) -> RetryPolicy:
    return RetryPolicy(method, max_retries=kwargs.pop("max_retries", 3), max_wait=0.01, log=log, **kwargs)


class Flaky:
    """Fails with ``errors`` in turn, then answers "ok"; counts the attempts."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.attempts = 0

    def __call__(self) -> str:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    async def acall(self) -> str:
        return self()


def test_a_first_attempt_that_succeeds_never_builds_tenacity(monkeypatch: pytest.MonkeyPatch) -> None:
    import tenacity

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("tenacity was built for an attempt that needed no retry")

    monkeypatch.setattr(tenacity, "Retrying", refuse)
    monkeypatch.setattr(tenacity, "AsyncRetrying", refuse)
    assert policy().call(Flaky()) == "ok"
    assert asyncio.run(policy().acall(Flaky().acall)) == "ok"


def run_with(run: str, rules: RetryPolicy, flaky: Flaky) -> str:
    return rules.call(flaky) if run == "sync" else asyncio.run(rules.acall(flaky.acall))


@pytest.mark.parametrize("run", ["sync", "async"])
def test_transient_failures_are_retried_up_to_max_retries(run: str) -> None:
    flaky = Flaky(*[ExchangeFailure("dropped")] * 10)
    with pytest.raises(ExchangeFailure):
        run_with(run, policy(max_retries=3), flaky)
    assert flaky.attempts == 4  # one bare attempt, three retries


@pytest.mark.parametrize("run", ["sync", "async"])
def test_a_retry_that_succeeds_returns_its_answer(run: str, caplog: pytest.LogCaptureFixture) -> None:
    flaky = Flaky(MagiAPIError("busy", status_code=503), ConnectFailure("refused"))
    caplog.set_level(logging.WARNING, "test")
    assert run_with(run, policy(), flaky) == "ok"
    assert flaky.attempts == 3
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "Retrying in 0.0s (attempt 2 of 4)",
        "Retrying in 0.0s (attempt 3 of 4)",
    ]


def test_a_post_that_may_have_been_accepted_is_never_resent() -> None:
    for error in (ExchangeFailure("timeout"), MagiAPIError("bad gateway", status_code=502)):
        flaky = Flaky(error)
        with pytest.raises(type(error)):
            policy("POST").call(flaky)
        assert flaky.attempts == 1
    flaky = Flaky(MagiAPIError("slow down", status_code=429), ConnectFailure("refused"))
    assert policy("POST").call(flaky) == "ok"  # a 429 and a refused connection prove nothing started
    assert flaky.attempts == 3


def test_a_non_retryable_error_after_a_retry_stops_at_once() -> None:
    flaky = Flaky(ExchangeFailure("dropped"), MagiAPIError("no such prediction", status_code=404))
    with pytest.raises(MagiAPIError, match="no such prediction"):
        policy().call(flaky)
    assert flaky.attempts == 2


def test_no_retry_starts_past_the_deadline() -> None:
    flaky = Flaky(*[ExchangeFailure("dropped")] * 10)
    with pytest.raises(ExchangeFailure):
        policy(max_retries=10, deadline=time.time() - 1).call(flaky)
    assert flaky.attempts == 1


def test_retry_after_is_honoured_and_capped() -> None:
    rules = RetryPolicy("GET", max_retries=3, max_wait=2.0, log=log)
    assert rules.wait_before_retry(1, MagiAPIError("slow", status_code=429, retry_after=1.5)) == 1.5
    assert rules.wait_before_retry(1, MagiAPIError("slow", status_code=429, retry_after=3600)) == 2.0
    assert rules.wait_before_retry(4, MagiAPIError("slow", status_code=429, retry_after=1)) is None
