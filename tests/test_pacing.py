"""The shared poll budget: its pace, and how it backs off on a 429 and recovers."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_magi import pacing
from airflow_provider_magi.pacing import PollBudget


def test_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError, match="per_second must be positive"):
        PollBudget(0)


def test_paces_after_one_burst() -> None:
    async def main() -> float:
        budget = PollBudget(20)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(30):  # a burst of 20, then 10 more at 20/s
            await budget.acquire()
        return loop.time() - start

    assert 0.45 <= asyncio.run(main()) < 2.0


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
        rates = [budget.rate]
        await asyncio.sleep(0.25)
        await budget.acquire()
        rates.append(budget.rate)
        return rates

    halved, recovered = asyncio.run(main())
    assert halved == 5
    assert recovered == 6  # one step of 10% of the ceiling per quiet period
