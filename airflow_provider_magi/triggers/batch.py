"""MagiBatchTrigger: one wait for a whole batch, reading status 100 predictions per call.

WaveSpeed has no batch endpoint, but its history (``POST /api/v3/predictions``) lists up to 100
predictions per page, filtered by model and creation time. One poll cycle reads the pages of the
window the running predictions were created in (from the oldest to the newest of them, once the
first read told their creation times): about ⌈in flight / 100⌉ pages when they were submitted
together, more when predictions that already ended (or another user of the key) sit between
them. The few ids the pages did not show are read one by one. A trigger per video would
instead cost one GET per video per cycle, and Airflow's per-trigger bookkeeping on top.

The trigger row holds ids, times and the connection id, never the key. It fires once: when
enough predictions ended to be worth a resume of the task (``resume_after``: the task asks for a
wave's worth of free slots, or for all of them once nothing is left to submit), when the first
one that ended has waited ``resume_latency`` (when given), or when the deadline passes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_magi.api import HISTORY_PAGE_SIZE, Prediction, parse_timestamp
from airflow_provider_magi.exceptions import MagiAuthError, MagiError, MagiRejectedError
from airflow_provider_magi.waiting import MAX_POLL_INTERVAL, poll_delay

EVENT_PROGRESS = "progress"
EVENT_TIMEOUT = "timeout"
EVENT_ERROR = "error"
# Ids the history pages did not show are read one by one, at most this many per cycle.
MAX_SINGLE_READS = 10
# The most history pages one cycle reads (5,000 predictions in the window).
MAX_PAGES = 50
# Creation times come from WaveSpeed's clock; the window is padded for its rounding.
WINDOW_PAD = timedelta(seconds=1)


def pages_for(count: int) -> int:
    """The history pages one cycle needs when the window holds only ``count`` predictions."""
    return math.ceil(count / HISTORY_PAGE_SIZE) + 1


def match_ids(listed: Iterable[Prediction], wanted: set[str]) -> dict[str, Prediction]:
    """The listed predictions that are ours (the server's filters are not trusted)."""
    return {p.id: p for p in listed if p.id in wanted}


def window(
    ids: list[str],
    created: Mapping[str, datetime],
    fallback_after: datetime,
    fallback_before: datetime | None = None,
) -> tuple[datetime, datetime | None]:
    """The creation-time window to read: from the oldest to the newest of ``ids`` once their
    creation times are known (the server's own clock, padded a second each side), else the
    fallback the task gave. A tight window keeps the pages to about ⌈in flight / 100⌉."""
    known = [created[i] for i in ids if i in created]
    if not known or len(known) < len(ids):
        return fallback_after, fallback_before
    return min(known) - WINDOW_PAD, max(known) + WINDOW_PAD


def span(ids: list[str], created: Mapping[str, datetime]) -> list[str] | None:
    """The window of ``ids`` (ISO 8601, padded as :func:`window` pads it) when all their creation
    times are known: the next trigger's first window, so a resume does not reopen it."""
    known = [created[i] for i in ids if i in created]
    if not known or len(known) < len(ids):
        return None
    return [(min(known) - WINDOW_PAD).isoformat(), (max(known) + WINDOW_PAD).isoformat()]


def _gone(prediction_id: str, model: str) -> Prediction:
    return Prediction(
        id=prediction_id, model=model, status="deleted", error="WaveSpeed no longer knows it (404)"
    )


async def aread_statuses(
    hook: Any, ids: list[str], model: str, created_after: datetime, created_before: datetime | None = None
) -> tuple[dict[str, Prediction], int]:
    """Our predictions' current state from the history pages of their window (every page the
    total promises, up to :data:`MAX_PAGES`), then single reads for the few the pages did not
    show; also the number of HTTP reads it took."""
    listed = await hook.alist_predictions(
        model=model,
        created_after=created_after,
        created_before=created_before,
        page_size=HISTORY_PAGE_SIZE,
        max_pages=MAX_PAGES,
    )
    found = match_ids(listed, set(ids))
    reads = max(1, math.ceil(len(listed) / HISTORY_PAGE_SIZE))
    for prediction_id in [i for i in ids if i not in found][:MAX_SINGLE_READS]:
        reads += 1
        try:
            found[prediction_id] = await hook.aget_prediction(prediction_id)
        except MagiRejectedError as error:
            if error.http_status != 404:
                raise
            found[prediction_id] = _gone(prediction_id, model)
    return found, reads


def read_statuses(
    hook: Any, ids: list[str], model: str, created_after: datetime, created_before: datetime | None = None
) -> tuple[dict[str, Prediction], int]:
    """:func:`aread_statuses` on the worker's transport."""
    listed = hook.list_predictions(
        model=model,
        created_after=created_after,
        created_before=created_before,
        page_size=HISTORY_PAGE_SIZE,
        max_pages=MAX_PAGES,
    )
    found = match_ids(listed, set(ids))
    reads = max(1, math.ceil(len(listed) / HISTORY_PAGE_SIZE))
    for prediction_id in [i for i in ids if i not in found][:MAX_SINGLE_READS]:
        reads += 1
        try:
            found[prediction_id] = hook.get_prediction(prediction_id)
        except MagiRejectedError as error:
            if error.http_status != 404:
                raise
            found[prediction_id] = _gone(prediction_id, model)
    return found, reads


class MagiBatchTrigger(BaseTrigger):
    """Waits for a batch's predictions in pages of WaveSpeed's history; fires exactly one event.

    :param prediction_ids: The batch's predictions in flight.
    :param created_after: ISO 8601 time before which none of them was created (with a margin for
        clocks that differ): the window the history pages are read in.
    :param created_before: ISO 8601 time after which none of them was created, when known.
    :param resume_after: Fire once this many of them have ended (all of them always fire).
    :param resume_latency: Also fire once the first of them to end has waited this many seconds
        (None, the task's choice: only ``resume_after`` counts, so a batch resumes once per wave).
    :param pause: Seconds to wait before the first read: a poll interval (what was just read or
        submitted needs no second look at once), or a 429's ``Retry-After`` on a submit.
    :param carry: JSON the task hands itself across the wait (its try number, deadline ...).
    """

    def __init__(
        self,
        prediction_ids: list[str],
        model: str,
        created_after: str,
        magi_conn_id: str = "magi_default",
        created_before: str | None = None,
        resume_after: int = 1,
        resume_latency: float | None = None,
        poll_interval: float = 10.0,
        max_poll_interval: float = MAX_POLL_INTERVAL,
        deadline: float | None = None,
        started_at: float | None = None,
        pause: float = 0.0,
        carry: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.prediction_ids = list(prediction_ids)
        self.model = model
        self.created_after = created_after
        self.created_before = created_before
        self.magi_conn_id = magi_conn_id
        self.resume_after = max(1, int(resume_after))
        self.resume_latency = None if resume_latency is None else float(resume_latency)
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = max(self.poll_interval, float(max_poll_interval))
        self.deadline = deadline
        self.started_at = started_at if started_at is not None else time.time()
        self.pause = float(pause)
        self.carry = dict(carry or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "prediction_ids": self.prediction_ids,
                "model": self.model,
                "created_after": self.created_after,
                "created_before": self.created_before,
                "magi_conn_id": self.magi_conn_id,
                "resume_after": self.resume_after,
                "resume_latency": self.resume_latency,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "deadline": self.deadline,
                "started_at": self.started_at,
                "pause": self.pause,
                "carry": self.carry,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_magi.hooks.magi import MagiHook

        hook = MagiHook(magi_conn_id=self.magi_conn_id)
        if self.pause > 0 and not await self._sleep(self.pause):
            yield self._event(EVENT_TIMEOUT, "the batch's deadline passed", [])
            return
        if not self.prediction_ids:
            yield self._event(EVENT_PROGRESS, "paced", [])
            return
        fallback_after = datetime.fromisoformat(self.created_after)
        fallback_before = datetime.fromisoformat(self.created_before) if self.created_before else None
        ended: dict[str, Prediction] = {}
        created: dict[str, datetime] = {}
        first_ended_at: float | None = None
        reads = 0
        self._cycles = 0
        while True:
            self._cycles += 1
            running = [i for i in self.prediction_ids if i not in ended]
            after, before = window(running, created, fallback_after, fallback_before)
            try:
                found, cost = await self._bounded(aread_statuses(hook, running, self.model, after, before))
            except TimeoutError:
                yield self._event(EVENT_TIMEOUT, "the batch's deadline passed", list(ended.values()), reads)
                return
            except MagiAuthError as error:
                yield self._event(EVENT_ERROR, str(error), list(ended.values()), reads, fatal=True)
                return
            except MagiError as error:  # the hook already retried; the wait goes on
                self.log.warning(
                    "Batch: reading the status of %d predictions failed: %s", len(running), error
                )
                cost = 1
                found = {}
            reads += cost
            for prediction_id, prediction in found.items():
                when = parse_timestamp(prediction.created_at)
                if when is not None:
                    created[prediction_id] = when
            ended.update({i: p for i, p in found.items() if p.is_terminal})
            if ended and first_ended_at is None:
                first_ended_at = time.time()
            # Back to the task once enough ended to be worth a resume (or, when asked, once the
            # first of them has waited resume_latency).
            if len(ended) >= min(self.resume_after, len(self.prediction_ids)) or (
                first_ended_at is not None
                and self.resume_latency is not None
                and time.time() - first_ended_at >= self.resume_latency
            ):
                still = [i for i in self.prediction_ids if i not in ended]
                yield self._event(
                    EVENT_PROGRESS, "predictions ended", list(ended.values()), reads, span(still, created)
                )
                return
            delay = poll_delay(time.time() - self.started_at, self.poll_interval, self.max_poll_interval)
            if not await self._sleep(delay):
                yield self._event(EVENT_TIMEOUT, "the batch's deadline passed", list(ended.values()), reads)
                return

    async def _bounded(self, read: Coroutine[Any, Any, Any]) -> Any:
        remaining = None if self.deadline is None else self.deadline - time.time()
        if remaining is not None and remaining <= 0:
            read.close()
            raise TimeoutError
        async with asyncio.timeout(remaining):
            return await read

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, but never past the deadline; False when the deadline came first."""
        if self.deadline is not None and time.time() + seconds >= self.deadline:
            await asyncio.sleep(max(0.0, self.deadline - time.time()))
            return False
        await asyncio.sleep(seconds)
        return True

    def _event(
        self,
        status: str,
        message: str,
        ended: list[Prediction],
        reads: int = 0,
        running_span: list[str] | None = None,
        *,
        fatal: bool = False,
    ) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "message": message,
                "ended": [p.to_result() for p in ended],
                "status_reads": reads,
                "fatal": fatal,
                "carry": self.carry,
                "running_span": running_span,
                "cycles": getattr(self, "_cycles", 0),
            }
        )
