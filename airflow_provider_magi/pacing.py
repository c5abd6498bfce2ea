"""A shared poll budget: every trigger polling with one key in one triggerer draws from it.

Thousands of deferred predictions each polling every 10 s would be hundreds of requests a second;
WaveSpeed limits by key, so the triggerer spends a per-key budget instead and polls queue for it.
"""

from __future__ import annotations

import asyncio


class PollBudget:
    """A token bucket on the event loop's clock: ``per_second`` polls, bursts of up to a second's worth."""

    def __init__(self, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError(f"per_second must be positive, got {per_second}")
        self.interval = 1.0 / per_second
        self.burst = max(1.0, per_second)
        self._next_slot = 0.0

    async def acquire(self) -> None:
        """Wait for this poll's slot. Single-threaded on one loop, so no lock is needed."""
        now = asyncio.get_running_loop().time()
        # Unused budget accrues, but never more than one burst's worth.
        self._next_slot = max(self._next_slot, now - (self.burst - 1) * self.interval)
        slot = self._next_slot
        self._next_slot += self.interval
        if slot > now:
            await asyncio.sleep(slot - now)
