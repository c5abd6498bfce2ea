"""A shared poll budget: every trigger polling with one key in one triggerer draws from it.

Thousands of deferred predictions each polling every 10 s would be hundreds of requests a second;
WaveSpeed limits by key, so the triggerer spends a per-key budget instead and polls queue for it.

The configured rate is a ceiling, not a promise: a 429 shows where WaveSpeed's limit really is.
The budget then stops every poll until ``Retry-After`` has passed (not only the one that was
refused); when the hold ends it counts what WaveSpeed accepted around the refusal, runs at 90% of
that, and grows back by 10% a minute while no 429 comes.
"""

from __future__ import annotations

import asyncio
from collections import deque

_SAFETY = 0.9  # run at this share of the rate WaveSpeed was seen to accept
_RECOVER_AFTER = 60.0  # seconds without a 429 before the rate grows again
_RECOVER_STEP = 0.1  # grow by this share of the current rate per quiet period (gently: the
# ceiling may be far above the real limit, and each overshoot costs a burst of 429s)
_MIN_RATE = 0.2  # polls per second: never stop polling altogether


class PollBudget:
    """Evenly spaced polls on the event loop's clock, backing off on 429s.

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
        # The 429 episode being held: when its first 429 came and the window it implies.
        self._episode: tuple[float, float] | None = None
        self._generation = 0  # bumped whenever slots already handed out become wrong

    @property
    def interval(self) -> float:
        return 1.0 / self.rate

    async def acquire(self) -> None:
        """Wait for this poll's slot. A 429, or the end of a hold, while waiting invalidates the
        slot: the poll takes a new one at the new pace instead of firing at the old one."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            self._settle(now)
            generation = self._generation
            # Evenly spaced, with no unused budget saved up: a saved-up burst is exactly what
            # tips a rate that is just under WaveSpeed's limit over it.
            self._next_slot = max(self._next_slot, now, self._held_until)
            slot = self._next_slot
            self._next_slot += self.interval
            if slot > now:
                await asyncio.sleep(slot - now)
            now = loop.time()
            self._settle(now)
            if generation == self._generation and now >= self._held_until:
                return

    def accepted(self) -> None:
        """An answer that was not a 429: evidence of what WaveSpeed lets through."""
        now = asyncio.get_running_loop().time()
        self._accepted.append(now)
        keep_from = (self._episode[0] if self._episode else now) - 1.0
        while self._accepted and self._accepted[0] < keep_from:
            self._accepted.popleft()

    def throttled(self, retry_after: float | None) -> None:
        """A 429: hold every poll until ``retry_after``; the first of an episode starts a count."""
        now = asyncio.get_running_loop().time()
        window = retry_after if retry_after else 1.0
        if self._episode is None:
            self._episode = (now, window)
        if now + window > self._held_until:
            self._held_until = now + window
            self._generation += 1

    def _settle(self, now: float) -> None:
        """After a hold, slow to what was accepted around it; otherwise recover while quiet."""
        if self._episode is not None and now >= self._held_until:
            started, window = self._episode
            seen = sum(1 for at in self._accepted if at >= started - 1.0)
            # The server let ``seen`` through in about one of its windows (Retry-After's span).
            lower = _SAFETY * seen / max(1.0, window) if seen else self.rate / 2
            self.rate = max(_MIN_RATE, min(self.rate, lower))
            self._episode = None
            self._last_change = now
            self._next_slot = now  # slots handed out at the old pace are void (see _generation)
            self._generation += 1
        elif self.rate < self.ceiling and now - self._last_change >= _RECOVER_AFTER:
            self.rate = min(self.ceiling, self.rate * (1 + _RECOVER_STEP))
            self._last_change = now
