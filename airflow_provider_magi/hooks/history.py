"""WaveSpeed's prediction history: finding what an uncertain submit may have started.

The server's filters are not trusted: candidates are checked on our side (model, creation time,
every page the total promises), and a lookup ends by its deadline, the request in flight included.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_magi.api import (
    HISTORY_PAGE_SIZE,
    HISTORY_PATH,
    ConnectFailure,
    ExchangeFailure,
    Prediction,
    as_utc,
    history_query,
    json_body,
    parse_history_page,
    raise_for_answer,
    read_whole_history,
    submit_candidates,
)
from airflow_provider_magi.exceptions import (
    MagiError,
    MagiSubmitUncertainError,
)
from airflow_provider_magi.hooks.async_client import (
    asend,
    shared_async_client,
)
from airflow_provider_magi.hooks.sync_client import MagiSyncClientMixin
from airflow_provider_magi.retries import RetryPolicy, settle

if TYPE_CHECKING:
    pass

# After an uncertain submit: predictions created this long around it are named as candidates,
# and the lookup may take this long at most.
CANDIDATE_WINDOW_SECONDS = 60.0


CANDIDATE_LOOKUP_SECONDS = 30.0


class MagiHistoryMixin(MagiSyncClientMixin):
    """History reads for :class:`~airflow_provider_magi.hooks.magi.MagiHook`, on its transport."""

    magi_conn_id: str
    # Predictions the caller knows are not what a lost submit started (a long video's earlier
    # scenes): never named as candidates, so never attached to.
    not_candidates: frozenset[str] = frozenset()

    def _with_candidates(
        self, error: MagiSubmitUncertainError, model: str, submitted_at: datetime
    ) -> MagiSubmitUncertainError:
        """The same error, naming the checked candidates (:meth:`find_submit_candidates`).

        The lookup is best effort and bounded in time: if it fails, the error says so and names
        no candidate, so nothing is attached to on a guess.
        """
        try:
            found = self.find_submit_candidates(model, submitted_at, lookup_seconds=CANDIDATE_LOOKUP_SECONDS)
        except MagiError as lookup_error:
            note = f"Whether it started is unknown: listing predictions to find it failed ({lookup_error})."
            return MagiSubmitUncertainError(f"{error}\n{note}")
        candidates = [
            {"prediction_id": p.id, "status": p.status, "created_at": p.created_at, "model": p.model}
            for p in found
        ]
        if candidates:
            listed = "; ".join(
                f"{c['prediction_id']} ({c['status']}, created {c['created_at']})" for c in candidates
            )
            note = (
                f"WaveSpeed lists {len(candidates)} prediction(s) of {model} created around the "
                f"submit: {listed}."
            )
        else:
            note = (
                f"WaveSpeed lists no prediction of {model} created around the submit: it most "
                "likely did not start."
            )
        return MagiSubmitUncertainError(f"{error}\n{note}", candidates=candidates)

    def find_submit_candidates(
        self,
        model: str,
        submitted_at: datetime,
        *,
        until: datetime | None = None,
        lookup_seconds: float = CANDIDATE_LOOKUP_SECONDS,
    ) -> list[Prediction]:
        """The predictions of ``model`` that WaveSpeed lists as created around a submit.

        The window runs from ``CANDIDATE_WINDOW_SECONDS`` before ``submitted_at`` to as long after
        ``until`` (default: now), for clocks that differ. The server's filters are not trusted:
        every page the total promises is read (bounded) and each item's model and creation time
        are checked here (``api.submit_candidates``). Raises ``MagiHistoryIncompleteError`` when
        the history could not be read whole within ``lookup_seconds``, the request in flight
        included: "unknown" must not pass for "none".
        """
        deadline = time.time() + lookup_seconds
        window = timedelta(seconds=CANDIDATE_WINDOW_SECONDS)
        start = as_utc(submitted_at) - window
        end = as_utc(until or datetime.now(UTC)) + window
        query = history_query(model=model, created_after=start, created_before=end)

        def fetch_page(number: int) -> Mapping[str, Any]:
            page = {**query, "page": number, "page_size": HISTORY_PAGE_SIZE}
            return self._call(
                "POST",
                HISTORY_PATH,
                what="Listing predictions",
                body=json_body(page),
                resend_safe=True,
                deadline=deadline,
                cap_by_deadline=True,
            )

        found = submit_candidates(read_whole_history(fetch_page), model, start, end)
        return [p for p in found if p.id not in self.not_candidates]

    def wavespeed_now(self) -> float:
        """Now on WaveSpeed's clock (Unix time), from the ``Date`` of one small history read:
        how old a submit attempt is must not depend on which worker's clock asks."""
        self._call(
            "POST",
            HISTORY_PATH,
            what="Reading WaveSpeed's clock",
            body=json_body({"page": 1, "page_size": 1}),
            resend_safe=True,
        )
        return self.server_now()

    def list_predictions(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = 100,
        max_pages: int = 10,
        deadline: float | None = None,
    ) -> list[Prediction]:
        """This key's predictions from WaveSpeed's history (the last 7 days), newest first.

        For finding predictions (after an uncertain submit, say), not for waiting on one: the
        docs ask that the history not be polled for a task's status. Reading it starts nothing,
        so it is resent after transient failures like a GET.
        """
        query = history_query(
            model=model, status=status, created_after=created_after, created_before=created_before
        )
        found: list[Prediction] = []
        for page in range(1, max_pages + 1):
            data = self._call(
                "POST",
                HISTORY_PATH,
                what="Listing predictions",
                body=json_body({**query, "page": page, "page_size": page_size}),
                resend_safe=True,
                deadline=deadline,
            )
            items, total = parse_history_page(data)
            found += items
            if not items or len(found) >= total:
                break
        return found

    async def alist_predictions(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = 100,
        max_pages: int = 10,
    ) -> list[Prediction]:
        """:meth:`list_predictions` for the triggerer's event loop."""
        settings = await self.aget_settings()
        query = history_query(
            model=model, status=status, created_after=created_after, created_before=created_before
        )
        shared = shared_async_client(settings)
        policy = RetryPolicy(
            "GET", max_retries=settings.max_retries, max_wait=settings.max_retry_wait, log=self.log
        )
        found: list[Prediction] = []
        for page in range(1, max_pages + 1):
            body = json_body({**query, "page": page, "page_size": page_size})

            async def attempt(body: bytes = body) -> Mapping[str, Any]:
                async with shared.gate:
                    answer = await asend(
                        shared, "POST", settings.base_url + HISTORY_PATH, settings, body=body
                    )
                return raise_for_answer(answer, what="Listing predictions", conn_id=settings.conn_id)

            try:
                data: Mapping[str, Any] = await policy.acall(attempt)
            except (ConnectFailure, ExchangeFailure, MagiError) as error:
                raise settle("GET", error, what="Listing predictions", base_url=settings.base_url) from None
            items, total = parse_history_page(data)
            found += items
            if not items or len(found) >= total:
                break
        return found
