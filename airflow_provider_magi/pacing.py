"""A shared poll budget: every trigger polling with one key in one triggerer draws from it.

Thousands of deferred predictions each polling every 10 s would be hundreds of requests a second;
WaveSpeed limits by key, so the triggerer spends a per-key budget instead and polls queue for it.

The configured rate is a ceiling, not a promise: the first 429 shows where WaveSpeed's limit
really is. The budget then stops every poll until ``Retry-After`` has passed (not only the one
that was refused), drops its rate to just under what WaveSpeed accepted in the last second, and
creeps back towards the ceiling while no 429 comes.
"""

from __future__ import annotations

import asyncio
from collections import deque

_SAFETY = 0.9  # run at this share of the rate WaveSpeed was seen to accept
_RECOVER_AFTER = 30.0  # seconds without a 429 before the rate grows again
_RECOVER_STEP = 0.1  # share of the ceiling added per quiet period
_MIN_RATE = 0.2  # polls per second: never stop polling altogether


class PollBudget:
    """A token bucket on the event loop's clock that backs off on 429s.

    Single-threaded on one loop, so no lock is needed.
    """

    def __init__(self, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError(f"per_second must be positive, got {per_second}")
        self.ceiling = float(per_second)
        self.rate = self.ceiling
        self._next_slot = 0.0
        self._held_until = 0.0
        self._last_change = 0.0
        self._accepted: deque[float] = deque()  # loop times of answers that were not 429

    @property
    def interval(self) -> float:
        return 1.0 / self.rate

    async def acquire(self) -> None:
        """Wait for this poll's slot; a 429 seen while waiting moves the slot past the hold."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            self._recover(now)
            burst = max(1.0, self.rate)
            # Unused budget accrues, but never more than one burst's worth, and none across a hold.
            self._next_slot = max(self._next_slot, now - (burst - 1) * self.interval, self._held_until)
            slot = self._next_slot
            self._next_slot += self.interval
            if slot > now:
                await asyncio.sleep(slot - now)
            if loop.time() >= self._held_until:
                return

    def accepted(self) -> None:
        """An answer that was not a 429: evidence of what WaveSpeed lets through."""
        now = asyncio.get_running_loop().time()
        self._accepted.append(now)
        while self._accepted and now - self._accepted[0] > 1.0:
            self._accepted.popleft()

    def throttled(self, retry_after: float | None) -> None:
        """A 429: hold every poll until ``retry_after`` and slow to what was accepted."""
        now = asyncio.get_running_loop().time()
        while self._accepted and now - self._accepted[0] > 1.0:
            self._accepted.popleft()
        seen = len(self._accepted)
        lower = _SAFETY * seen if seen else self.rate / 2
        self.rate = max(_MIN_RATE, min(self.rate, lower))
        self._held_until = max(self._held_until, now + (retry_after if retry_after else 1.0))
        self._last_change = now

    def _recover(self, now: float) -> None:
        if self.rate < self.ceiling and now - self._last_change >= _RECOVER_AFTER:
            self.rate = min(self.ceiling, self.rate + _RECOVER_STEP * self.ceiling)
            self._last_change = now
