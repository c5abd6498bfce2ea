"""The hook's account reads: balance, what a prediction cost, what was spent in a range.

A mixin of :class:`~airflow_provider_magi.hooks.magi.MagiHook`, using its transport (``_call`` on
the worker, the shared aiohttp client in the triggerer); what the answers mean is in
:mod:`airflow_provider_magi.costs`. All of these are reads that start and bill nothing, so they
are resent after transient failures like a GET (``resend_safe`` for the POSTs), and each takes a
``deadline`` (Unix time) past which it stops retrying.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_magi import costs, spend
from airflow_provider_magi.api import (
    FAILED_STATUSES,
    HISTORY_PAGE_SIZE,
    HISTORY_PATH,
    ConnectFailure,
    ExchangeFailure,
    Prediction,
    as_utc,
    history_query,
    parse_timestamp,
    raise_for_answer,
    read_whole_history,
)
from airflow_provider_magi.exceptions import (
    MagiAuthError,
    MagiBudgetCheckError,
    MagiBudgetError,
    MagiError,
    MagiInputError,
    MagiRejectedError,
    MagiResponseError,
)
from airflow_provider_magi.hooks.async_client import asend, shared_async_client
from airflow_provider_magi.hooks.sync_client import MagiSyncClientMixin
from airflow_provider_magi.models import spec_of
from airflow_provider_magi.retries import RetryPolicy, settle

if TYPE_CHECKING:
    pass

# Billing pages read at most when looking for one prediction's records (the search names the
# prediction, so one page is the normal case; more only if a service ignored that filter).
MAX_BILLING_PAGES = 5
PAGE_SIZE = 100
# The daily budget reads the whole of today's history: up to this many pages of 100 (5,000
# predictions a day); a longer one cannot be read whole, and the guard then fails safe.
BUDGET_HISTORY_PAGES = 50
# The guards reserve the predictions started since UTC midnight, or this long before now when
# that is earlier: a video started before midnight and billed after it is today's spend.
RESERVE_LOOKBACK = timedelta(hours=6)


class MagiAccountMixin(MagiSyncClientMixin):
    """Balance, billing and usage reads for :class:`MagiHook` (which provides the transport)."""

    # ---------------------------------------------------------------- worker

    def get_balance(self, *, deadline: float | None = None) -> float:
        """The account's balance in USD (``GET /api/v3/balance``); free to call.

        :raises MagiResponseError: when the answer carries no balance readable as USD (see
            :mod:`~airflow_provider_magi.costs` for what is not believed).
        """
        try:
            data = self._call("GET", costs.BALANCE_PATH, what="Reading the balance", deadline=deadline)
        except MagiRejectedError as error:
            if error.http_status != 404:
                raise
            data = self._call("GET", costs.LEGACY_BALANCE_PATH, what="Reading the balance", deadline=deadline)
        return _balance_or_raise(data)

    def get_prediction_cost(self, prediction_id: str, *, deadline: float | None = None) -> float | None:
        """What ``prediction_id`` cost in USD, from its billing records; None when it is not
        billed yet (billing can lag completion) or its price cannot be read as USD, the answer
        included (it was not the JSON envelope): an unknown cost, never a guessed one.

        ``deadline`` also ends a read still in flight when it passes: a finished task looks for
        its price for a bounded time, never as long as a slow billing endpoint takes.

        :raises MagiError: when WaveSpeed refused the read or could not be reached.
        """
        what = f"Reading the billing of prediction {prediction_id}"
        found: dict[str, float | None] = {}
        for page in range(1, MAX_BILLING_PAGES + 1):
            try:
                data = self._call(
                    "POST",
                    costs.BILLINGS_PATH,
                    what=what,
                    body=_json(costs.billing_query([prediction_id], page=page, page_size=PAGE_SIZE)),
                    resend_safe=True,
                    deadline=deadline,
                    cap_by_deadline=deadline is not None,
                )
            except MagiResponseError as error:
                self.log.warning("%s: the cost is unknown: %s", what, error)
                return None
            if _merge_page(found, data, page, prediction_id, self.log):
                break
        return _cost_of(found, prediction_id)

    def get_spend(
        self,
        start: datetime,
        end: datetime,
        model: str | None = None,
        *,
        deadline: float | None = None,
    ) -> float | None:
        """USD spent from ``start`` to ``end`` (naive times are UTC, at most 31 days apart), of
        ``model`` only when given (``POST /api/v3/user/usage_stats``); None when the answer does
        not say it readably (or is not the JSON envelope). WaveSpeed rounds it to 3 decimals.

        :raises MagiInputError: for a backwards range or one over 31 days (nothing is sent).
        :raises MagiError: when WaveSpeed refused the read or could not be reached.
        """
        try:
            query = costs.usage_query(start, end, model)
        except ValueError as error:
            raise MagiInputError(f"Reading usage stats: {error}") from None
        try:
            data = self._call(
                "POST",
                costs.USAGE_PATH,
                what="Reading usage stats",
                body=_json(query),
                resend_safe=True,
                deadline=deadline,
            )
        except MagiResponseError as error:
            self.log.warning("Reading usage stats: the spend is unknown: %s", error)
            return None
        spent = costs.parse_usage_spend(data, model)
        if spent is None:
            self.log.warning("Usage stats: the spend could not be read as USD: %.200r", dict(data))
        return spent

    def get_unit_price(self, model: str, *, days: int = 30, deadline: float | None = None) -> float | None:
        """What one prediction of ``model`` costs in USD by WaveSpeed's usage stats over the last
        ``days`` days (``unit_price``); None when the model was not used in that time (usage
        stats list only models used in their range, and no other endpoint states a price).

        :raises MagiResponseError: when the answer cannot be read (not a list of models, a price
            that is not USD): unreadable is not "unknown", so a budget guard fails safe on it.
        :raises MagiError: when WaveSpeed refused the read or could not be reached.
        """
        end = datetime.now(UTC)
        query = costs.usage_query(end - timedelta(days=days), end, model)
        what = f"Reading the price of {model} from usage stats"
        data = self._call(
            "POST", costs.USAGE_PATH, what=what, body=_json(query), resend_safe=True, deadline=deadline
        )
        try:
            return costs.parse_unit_price(data, model)
        except ValueError as error:
            raise MagiResponseError(f"{what}: {error}") from None

    # ---------------------------------------------------------------- the spending guards

    def spend_clock(self) -> datetime:
        """Now, for the daily budget's UTC day: this worker's clock (WaveSpeed's day is UTC; a
        worker's clock is taken to be close to WaveSpeed's)."""
        return datetime.now(UTC)

    def spend_room(
        self,
        model: str,
        wanted: int,
        *,
        whole: bool,
        own_unbilled: frozenset[str] | set[str] = frozenset(),
        paid: str | None = None,
        fails_safe: str | None = None,
        prices: Sequence[float] = (),
        own_prices: Mapping[str, float] | None = None,
    ) -> tuple[spend.Room, spend.SpendFacts]:
        """Read what the connection's guards need and ask the one spend view
        (:func:`~airflow_provider_magi.spend.room`) how many of ``wanted`` predictions of
        ``model`` fit: the balance (with ``min_balance_usd``), what was billed since UTC midnight
        (with ``daily_budget_usd``), the model's price, and every prediction started since
        midnight (or :data:`RESERVE_LOOKBACK` before now, whichever is earlier, so that those
        started before midnight and billed after it count) that is not billed yet.
        ``own_unbilled`` are the caller's own running predictions (a batch's), reserved even
        before the history lists them.

        :param fails_safe: What a read that fails means for the caller, in its words (a batch:
            no more inputs were submitted); by default, that nothing was sent.
        :param prices: The wanted predictions' prices, in order, when the model's price rule
            knows them before any bill (``models``: MAGI-2 per second); then no price is read.
        :param own_prices: The caller's own started predictions' known prices, by id. Another
            started prediction of a per-second model counts at its longest video's price.
        :raises MagiBudgetCheckError: a read failed or did not read as USD (fail safe, retried).
        """
        settings = self.settings
        now = self.spend_clock()
        midnight = costs.utc_midnight(now)
        facts = spend.SpendFacts(
            conn_id=settings.conn_id,
            model=model,
            day=now.date(),
            price=None,
            floor=settings.min_balance_usd,
            budget=settings.daily_budget_usd,
        )
        if settings.min_balance_usd is None and settings.daily_budget_usd is None:
            return spend.room(facts, wanted, whole=whole), facts
        # The guard whose reads these are, for the fail-safe message.
        extra = "daily_budget_usd" if settings.daily_budget_usd is not None else "min_balance_usd"
        if settings.min_balance_usd is not None:
            balance = self._guard_read(
                self.get_balance, "the balance", "min_balance_usd", paid, fails_safe=fails_safe
            )
            facts = replace(facts, balance=balance)
            if costs.balance_floor_refusal(balance, settings.min_balance_usd, settings.conn_id):
                return spend.room(facts, wanted, whole=whole), facts  # refused on the balance alone
        billed_today = 0.0
        if settings.daily_budget_usd is not None:
            billed_today = self._guard_read(
                lambda: self.get_spend(midnight, now),
                "today's spend from WaveSpeed's usage stats",
                "daily_budget_usd",
                paid,
                fails_safe=fails_safe,
            )
        known = tuple(prices)[:wanted] if len(prices) >= wanted > 0 else ()
        price = (
            round(sum(known) / len(known), 6)
            if known
            else self._guard_read(
                lambda: self.get_unit_price(model),
                f"the price of {model} from WaveSpeed's usage stats",
                extra,
                paid,
                fails_safe=fails_safe,
                none_means_unreadable=False,
            )
        )
        unbilled, billed = self._guard_read(
            lambda: self.get_started_since(min(midnight, now - RESERVE_LOOKBACK), billed_from=midnight),
            "the started predictions from WaveSpeed's history and billing records",
            extra,
            paid,
            fails_safe=fails_safe,
        )
        # Usage stats lag billing: what was billed today counts even before the stats show it.
        billed_today = max(billed_today, billed)
        own_known = dict(own_prices or {})
        unit_prices: dict[str, float | None] = {} if known else {model.strip().strip("/"): price}
        own = set(own_unbilled) | set(getattr(self, "not_candidates", frozenset()))
        reserved: list[spend.Reserved] = []
        for prediction in unbilled:
            other = (prediction.model or model).strip().strip("/")
            spec = spec_of(other)
            if spec is not None and spec.usd_per_second is not None and other not in unit_prices:
                unit_prices[other] = spec.highest_price  # its length is not in the history
            if other not in unit_prices:
                unit_prices[other] = self._guard_read(
                    lambda other=other: self.get_unit_price(other),  # type: ignore[misc]
                    f"the price of {other} from WaveSpeed's usage stats",
                    extra,
                    paid,
                    fails_safe=fails_safe,
                    none_means_unreadable=False,
                )
            created = parse_timestamp(prediction.created_at)
            reserved.append(
                spend.Reserved(
                    prediction.id,
                    own_known.get(prediction.id, unit_prices[other]),
                    own=prediction.id in own,
                    before_midnight=created is not None and created < midnight,
                )
            )
        listed = {prediction.id for prediction in unbilled}
        # The caller's own running ones the history does not list as unbilled: not listed yet,
        # or billed a moment ago (then counted twice until the caller sees them complete and
        # stops passing them: on the safe side).
        reserved += [
            spend.Reserved(pid, own_known.get(pid, price), own=True)
            for pid in sorted(set(own_unbilled) - listed)
        ]
        facts = replace(facts, price=price, billed_today=billed_today, reserved=tuple(reserved), prices=known)
        return spend.room(facts, wanted, whole=whole), facts

    def check_spending(
        self,
        model: str,
        *,
        count: int = 1,
        paid: str | None = None,
        log: Any = None,
        prices: Sequence[float] = (),
        own_prices: Mapping[str, float] | None = None,
    ) -> None:
        """The connection's balance floor and daily budget (extras ``min_balance_usd`` and
        ``daily_budget_usd``), checked before ``count`` predictions of ``model`` are paid for:
        all of them must fit (:func:`~airflow_provider_magi.spend.room`, the view the batch's
        waves ask too), counting every started prediction not billed yet.

        Here, on the hook, so that every way to pay is guarded: the operators call it before
        they upload a first frame, and :meth:`create_prediction` calls it unless its caller
        guarded itself. ``paid`` names what the caller already paid (a refusal says so).

        :raises MagiBudgetError: a guard refused (not retried).
        :raises MagiBudgetCheckError: a guard could not read what it guards (retried).
        """
        log = log or self.log
        settings = self.settings
        if settings.min_balance_usd is None and settings.daily_budget_usd is None:
            return
        room, facts = self.spend_room(
            model, count, whole=True, paid=paid, prices=prices, own_prices=own_prices
        )
        if room.uncountable:
            raise MagiBudgetCheckError(spend.uncountable_text(room, facts, paid))
        refusal = spend.refusal_text(room, facts, paid)
        if refusal:
            raise MagiBudgetError(refusal)
        these = "this prediction" if count == 1 else f"these {count} predictions"
        at = "at an unknown price" if facts.price is None else f"at {costs.usd_text(facts.price)}"
        if room.reserved_count:
            log.info(
                "%d started prediction(s) not billed yet (%d of them started before UTC midnight) "
                "count as %s spent.",
                room.reserved_count,
                room.overnight,
                costs.usd_text(room.reserved_usd),
            )
        if facts.floor is not None and facts.balance is not None:
            if facts.price is None:
                log.warning(
                    "%s",
                    f"Connection '{facts.conn_id}': the price of {model} is unknown (WaveSpeed's "
                    f"usage stats list no use of it in the last 30 days); only the balance "
                    f"({costs.usd_text(facts.balance)}, less {costs.usd_text(room.reserved_usd)} "
                    f"started and not billed yet) was checked against min_balance_usd "
                    f"{costs.usd_text(facts.floor)}, so {these} may take it below the floor by "
                    f"{'its' if count == 1 else 'their'} own price.",
                )
            else:
                log.info(
                    "Balance %s; less %s started and not billed yet and %s %s, it would be %s, at "
                    "or above min_balance_usd %s.",
                    costs.usd_text(facts.balance),
                    costs.usd_text(room.reserved_usd),
                    these,
                    at,
                    costs.usd_text(facts.balance - room.reserved_usd - count * facts.price),
                    costs.usd_text(facts.floor),
                )
        if facts.budget is not None:
            decision = costs.daily_budget_decision(
                facts.billed_today,
                facts.price,
                facts.budget,
                facts.conn_id,
                facts.day,
                model,
                count=count,
                paid=paid,
                pending=room.reserved_usd,
                pending_count=room.reserved_count,
            )
            if decision.note:
                log.warning("%s", decision.note)
            else:
                log.info(
                    "Spent today (UTC) %s; with %s at %s, within daily_budget_usd %s.",
                    costs.usd_text(facts.billed_today + room.reserved_usd),
                    "this prediction" if count == 1 else f"{count} predictions",
                    costs.usd_text(facts.price or 0.0),
                    costs.usd_text(facts.budget),
                )

    def connection_problems(self, balance: float) -> list[str]:
        """What the connection test reports beside a working key: unknown extras (a typo leaves
        a setting at its default) and a balance already under ``min_balance_usd``."""
        problems = list(self.__dict__.get("extra_warnings", []))
        floor = self.settings.min_balance_usd
        if floor is not None and costs.balance_floor_refusal(balance, floor, self.settings.conn_id):
            problems.append(
                f"the balance is below the connection's min_balance_usd of {costs.usd_text(floor)}, "
                "so every task that would pay is refused until the account is topped up"
            )
        return problems

    def get_unbilled_since(self, since: datetime, *, deadline: float | None = None) -> list[Prediction]:
        """This key's predictions created since ``since`` (UTC midnight, for the daily budget)
        that WaveSpeed's billing records do not show yet: started, not failed, not billed
        (:meth:`get_started_since`'s first half)."""
        return self.get_started_since(since, deadline=deadline)[0]

    def get_started_since(
        self, since: datetime, *, billed_from: datetime | None = None, deadline: float | None = None
    ) -> tuple[list[Prediction], float]:
        """``(unbilled, billed)``: this key's predictions created since ``since`` that WaveSpeed's
        billing records do not show yet (started, not failed, not billed), and what the billing
        records say the others cost, in USD (a record whose price does not read adds nothing);
        with ``billed_from``, only the records made at or after it (one whose time does not read
        counts), so that a prediction started yesterday and billed today is today's spend.

        Billing lags completion (and usage stats lag billing), so a budget that counted only
        billed spend let every task pass while earlier ones waited to be billed. The history is
        read whole or not at all (``MagiHistoryIncompleteError``): "unknown" is never "none".
        An item whose ``created_at`` cannot be read counts (it may be today's).
        """
        query = history_query(created_after=since)
        what = "Listing the started predictions for the spending guards"

        def fetch_page(number: int) -> Mapping[str, Any]:
            body = {**query, "page": number, "page_size": HISTORY_PAGE_SIZE}
            return self._call(
                "POST", HISTORY_PATH, what=what, body=_json(body), resend_safe=True, deadline=deadline
            )

        started: dict[str, Prediction] = {}
        for prediction in read_whole_history(fetch_page, max_pages=BUDGET_HISTORY_PAGES):
            created = parse_timestamp(prediction.created_at)
            if prediction.status in FAILED_STATUSES or (created is not None and created < as_utc(since)):
                continue
            started.setdefault(prediction.id, prediction)
        billed, billed_at = self._billed_among(list(started), deadline=deadline)
        unbilled = [prediction for pid, prediction in started.items() if pid not in billed]
        paid = (  # a page may list others too
            billed[pid]
            for pid in started
            if pid in billed
            and (billed_from is None or (at := billed_at.get(pid)) is None or at >= as_utc(billed_from))
        )
        return unbilled, sum(price for price in paid if price is not None)

    def _billed_among(
        self, prediction_ids: list[str], *, deadline: float | None
    ) -> tuple[dict[str, float | None], dict[str, datetime | None]]:
        """Which of these predictions have a billing record (a deduction), with what it says
        each cost (None: not readable as USD) and when it was made, 100 ids per search."""
        billed: dict[str, float | None] = {}
        billed_at: dict[str, datetime | None] = {}
        what = "Reading the started predictions' billing records for the spending guards"
        for start in range(0, len(prediction_ids), PAGE_SIZE):
            chunk = prediction_ids[start : start + PAGE_SIZE]
            for page in range(1, MAX_BILLING_PAGES + 1):
                data = self._call(
                    "POST",
                    costs.BILLINGS_PATH,
                    what=what,
                    body=_json(costs.billing_query(chunk, page=page, page_size=PAGE_SIZE)),
                    resend_safe=True,
                    deadline=deadline,
                )
                parsed = costs.parse_billing_page(data)
                if parsed is None:
                    raise MagiResponseError(
                        f"{what}: the answer is not a page of records: {dict(data)!r:.200}"
                    )
                billed.update(parsed.prices)
                billed_at.update(parsed.billed_at)
                if parsed.items == 0 or page * PAGE_SIZE >= parsed.total:
                    break
            else:
                raise MagiResponseError(f"{what}: more than {MAX_BILLING_PAGES} pages for {len(chunk)} ids")
        return billed, billed_at

    def _guard_read(
        self,
        read: Callable[[], Any],
        what: str,
        extra: str,
        paid: str | None,
        *,
        none_means_unreadable: bool = True,
        fails_safe: str | None = None,
    ) -> Any:
        """One read for a guard; what cannot be read fails safe (nothing is submitted, retried).

        A refused key (401/403) stays the non-retried error it is everywhere else.
        """
        conn_id = self.settings.conn_id

        left = costs.nothing_sent(paid).rstrip(".")
        left = left[0].lower() + left[1:]

        consequence = fails_safe or f"it fails safe: {left}, and the task may be retried"

        def unreadable(why: str) -> MagiBudgetCheckError:
            return MagiBudgetCheckError(
                f"Connection '{conn_id}': the {extra} guard could not read {what} ({why}), so "
                f"{consequence}. Fix: wait for WaveSpeed's "
                f"account endpoints to answer, or remove {extra} from the connection to submit "
                "without this guard."
            )

        try:
            value = read()
        except MagiAuthError:
            raise
        except MagiError as error:
            raise unreadable(str(error)) from None
        if value is None and none_means_unreadable:
            raise unreadable("WaveSpeed's answer did not state it as USD")
        return value

    # ---------------------------------------------------------------- triggerer

    async def aget_balance(self, *, deadline: float | None = None) -> float:
        """:meth:`get_balance` for the triggerer's event loop."""
        try:
            data = await self._aread("GET", costs.BALANCE_PATH, "Reading the balance", deadline=deadline)
        except MagiRejectedError as error:
            if error.http_status != 404:
                raise
            data = await self._aread(
                "GET", costs.LEGACY_BALANCE_PATH, "Reading the balance", deadline=deadline
            )
        return _balance_or_raise(data)

    async def aget_prediction_cost(
        self, prediction_id: str, *, deadline: float | None = None
    ) -> float | None:
        """:meth:`get_prediction_cost` for the triggerer's event loop."""
        what = f"Reading the billing of prediction {prediction_id}"
        found: dict[str, float | None] = {}
        for page in range(1, MAX_BILLING_PAGES + 1):
            body = _json(costs.billing_query([prediction_id], page=page, page_size=PAGE_SIZE))
            try:
                data = await self._aread("POST", costs.BILLINGS_PATH, what, body=body, deadline=deadline)
            except MagiResponseError as error:
                self.log.warning("%s: the cost is unknown: %s", what, error)
                return None
            if _merge_page(found, data, page, prediction_id, self.log):
                break
        return _cost_of(found, prediction_id)

    async def _aread(
        self, method: str, path: str, what: str, *, body: bytes | None = None, deadline: float | None
    ) -> Mapping[str, Any]:
        """One read on the shared client, retried by the GET rule (it starts nothing)."""
        settings = await self.aget_settings()
        shared = shared_async_client(settings)

        async def attempt() -> Mapping[str, Any]:
            async with shared.gate:
                answer = await asend(shared, method, settings.base_url + path, settings, body=body)
            return raise_for_answer(answer, what=what, conn_id=settings.conn_id)

        policy = RetryPolicy(
            "GET",
            max_retries=settings.max_retries,
            max_wait=settings.max_retry_wait,
            log=self.log,
            deadline=deadline,
        )
        try:
            data: Mapping[str, Any] = await policy.acall(attempt)
        except (ConnectFailure, ExchangeFailure, MagiError) as error:
            raise settle("GET", error, what=what, base_url=settings.base_url) from None
        return data


def _json(query: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(query)).encode()


def _balance_or_raise(data: Mapping[str, Any]) -> float:
    balance = costs.parse_balance(data)
    if balance is None:
        raise MagiResponseError(f"Reading the balance: no balance readable as USD in {dict(data)!r:.200}")
    return balance


def _merge_page(
    found: dict[str, float | None], data: Mapping[str, Any], page: int, prediction_id: str, log: Any
) -> bool:
    """Add one billing page to ``found``; True when there is nothing more to read."""
    parsed = costs.parse_billing_page(data)
    if parsed is None:
        log.warning("Billing search: the answer is not a page of records: %.200r", dict(data))
        found[prediction_id] = None
        return True
    for pid, price in parsed.prices.items():
        if pid in found:
            earlier = found[pid]
            found[pid] = None if earlier is None or price is None else earlier + price
        else:
            found[pid] = price
    if prediction_id in parsed.prices and parsed.prices[prediction_id] is None:
        log.warning("Prediction %s: its billing record has no price readable as USD", prediction_id)
    return parsed.items == 0 or page * PAGE_SIZE >= parsed.total


def _cost_of(found: dict[str, float | None], prediction_id: str) -> float | None:
    cost = found.get(prediction_id)
    if cost is not None and cost > costs.MAX_PRICE_USD:
        return None
    return cost
