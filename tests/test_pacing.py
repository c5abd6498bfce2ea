"""The shared poll budget: its pace, and how it backs off on a 429 and recovers."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_magi import pacing
from airflow_provider_magi.pacing import PollBudget


def test_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError, match="per_second must be positive"):
        PollBudget(0)


def test_paces_evenly() -> None:
    async def main() -> float:
        budget = PollBudget(20)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(budget.acquire() for _ in range(31)))  # 30 gaps of 50 ms
        return loop.time() - start

    assert 1.5 <= asyncio.run(main()) < 3.0


def test_a_429_holds_every_waiting_poll_and_slows_to_what_was_accepted() -> None:
    async def main() -> tuple[float, float]:
        budget = PollBudget(1000)
        loop = asyncio.get_running_loop()
        for _ in range(40):
            await budget.acquire()
            budget.accepted()
        budget.throttled(retry_after=0.3)
        start = loop.time()
        await asyncio.gather(*(budget.acquire() for _ in range(5)))
        return budget.rate, loop.time() - start

    rate, waited = asyncio.run(main())
    assert rate == pytest.approx(36)  # 90% of the 40 answers accepted in the last second
    assert waited >= 0.3


def test_a_poll_already_waiting_for_its_slot_also_respects_a_later_hold() -> None:
    async def main() -> float:
        budget = PollBudget(2)  # a burst of 2, then one slot per 0.5 s
        loop = asyncio.get_running_loop()
        await budget.acquire()
        await budget.acquire()
        start = loop.time()
        waiting = asyncio.create_task(budget.acquire())  # its slot is ~0.5 s away
        await asyncio.sleep(0.1)
        budget.throttled(retry_after=1.0)  # a 429 arrives for someone else meanwhile
        await waiting
        return loop.time() - start

    assert asyncio.run(main()) >= 1.0


def test_without_evidence_a_429_halves_the_rate_and_it_recovers_when_quiet(monkeypatch) -> None:
    monkeypatch.setattr(pacing, "_RECOVER_AFTER", 0.2)

    async def main() -> list[float]:
        budget = PollBudget(10)
        budget.throttled(retry_after=0.01)
        await asyncio.sleep(0.02)
        await budget.acquire()  # the hold is over: the rate settles
        rates = [budget.rate]
        await asyncio.sleep(0.25)
        await budget.acquire()
        rates.append(budget.rate)
        return rates

    halved, recovered = asyncio.run(main())
    assert halved == 5
    assert recovered == pytest.approx(5.5)  # 10% more per quiet period


def test_a_burst_of_429s_is_one_episode_counted_when_the_hold_ends() -> None:
    """300 polls at once against a limit of 50: the first 429 comes back before most of the 50
    accepted answers; the rate must follow all 50, not the few seen when the first 429 came."""

    async def main() -> float:
        budget = PollBudget(1000)
        for _ in range(5):
            budget.accepted()
        budget.throttled(retry_after=0.2)
        for _ in range(45):
            budget.accepted()
        for _ in range(250):
            budget.throttled(retry_after=0.2)
        await budget.acquire()
        return budget.rate

    assert asyncio.run(main()) == pytest.approx(45)


def test_a_long_window_sets_a_rate_per_second() -> None:
    async def main() -> float:
        budget = PollBudget(1000)
        for _ in range(60):  # the server's 60 a minute, then a 429 asking for the rest of the minute
            budget.accepted()
        budget.throttled(retry_after=0.5)
        budget._episode = (budget._episode[0], 60.0)  # type: ignore[index]  # as if Retry-After: 60
        budget._held_until = asyncio.get_running_loop().time() + 0.5
        await budget.acquire()
        return budget.rate

    assert asyncio.run(main()) == pytest.approx(0.9)
