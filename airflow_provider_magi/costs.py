"""What WaveSpeed says an account has and has spent, read as USD. No I/O: the hook reads.

Every reader here answers ``None`` ("cost unknown") for a value it cannot read as USD, never a
guess: a wrong number would let a budget guard pass a run it should stop, or stop one it should
pass, and the caller can say "unknown" honestly. A value is not read as USD when it is missing,
a bool (JSON ``true`` is not 1 dollar), NaN or infinite, negative, a string that is not a plain
decimal number, or of an implausible magnitude:

- one prediction's price above :data:`MAX_PRICE_USD` (100 USD) is not believed. A video on
  WaveSpeed costs cents to a few dollars; an older docs example shows ``price: 24300`` for one
  prediction, which is no dollar amount anyone pays per video (a unit mix-up, a cents or credits
  count): a value like that is unknown, not 24,300 dollars;
- a spend over a range is not believed above :data:`MAX_PRICE_USD` per request the same answer
  counts (or above :data:`MAX_SPEND_USD` when it counts none);
- a balance above :data:`MAX_BALANCE_USD` (ten million) is not believed.

The account endpoints and their answers are in shared/reference/CONTRACT.md ("Account").
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

BALANCE_PATH = "/api/v3/balance"
# One docs page shows this path instead (with a currency): read where the first answers 404.
LEGACY_BALANCE_PATH = "/api/v3/account/balance"
BILLINGS_PATH = "/api/v3/billings/search"
USAGE_PATH = "/api/v3/user/usage_stats"
# Predictions are paid with the "deduct" billing type (the docs' example); others are not prices.
DEDUCT = "deduct"
USAGE_MAX_RANGE = timedelta(days=31)  # the docs' limit for one usage-stats query

MAX_PRICE_USD = 100.0
MAX_SPEND_USD = 1_000_000.0
MAX_BALANCE_USD = 10_000_000.0

_DECIMAL = re.compile(r"^\s*\d{1,12}(\.\d{1,12})?\s*$")  # "0.30", " 12 ": no exponent, no sign


def read_usd(value: Any, *, limit: float) -> float | None:
    """``value`` as USD from 0 to ``limit``; None when it cannot be read as such (see above).

    Numbers and plain decimal strings are read; anything else (bools, NaN, negatives, ``"1e3"``,
    ``"$1"``, the parser's stand-in for a non-finite JSON number) is None.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):  # compared as an int: a 400-digit integer must not overflow a float
        return float(value) if 0 <= value <= limit else None
    if isinstance(value, float):
        return value if math.isfinite(value) and 0 <= value <= limit else None
    if isinstance(value, str) and _DECIMAL.match(value):
        amount = float(value)
        return amount if amount <= limit else None
    return None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


# ---------------------------------------------------------------- balance


def parse_balance(data: Mapping[str, Any]) -> float | None:
    """The USD balance in ``GET /api/v3/balance``'s ``data``, or None.

    One docs page also shows a ``currency`` field: a balance said to be in anything but USD is
    not read as dollars.
    """
    if not isinstance(data, Mapping):
        return None
    currency = data.get("currency")
    if currency is not None and (not isinstance(currency, str) or currency.strip().upper() != "USD"):
        return None
    return read_usd(data.get("balance"), limit=MAX_BALANCE_USD)


# ---------------------------------------------------------------- billing records


@dataclass(frozen=True)
class BillingPage:
    """One page of ``POST /api/v3/billings/search``.

    ``prices`` maps each prediction id on the page to what its deductions add up to, or None when
    one of them cannot be read (a prediction billed twice on a page is the sum: neither record
    alone is what it cost). ``items`` counts the records on the page, ``total`` those across all
    pages. ``billed_at`` is when each prediction's latest record on the page was made (None: no
    readable time): on which UTC day the money left the account.
    """

    prices: dict[str, float | None]
    total: int
    items: int
    billed_at: dict[str, datetime | None] = field(default_factory=dict)


def billing_query(
    prediction_ids: list[str] | None = None, *, page: int = 1, page_size: int = 100
) -> dict[str, Any]:
    """The body of a billing search for deductions (of these predictions, when given)."""
    if not 1 <= page_size <= 100:
        raise ValueError(f"page_size must be from 1 to 100, got {page_size}")
    query: dict[str, Any] = {"page": page, "page_size": page_size, "billing_type": DEDUCT}
    if prediction_ids is not None:
        query["prediction_uuids"] = list(prediction_ids)
    return query


def parse_billing_page(data: Mapping[str, Any]) -> BillingPage | None:
    """Read a billing page; None when it is not a page at all (no ``items`` list or ``total``).

    A record counts toward a prediction's price when its ``billing_type`` is ``deduct`` (or
    absent) and it names the prediction (``prediction.uuid``). Its ``price`` is the item's own
    (documented as USD); when the record carries an order whose ``state`` is not ``paid``, what
    was paid is not known, so the price is None.
    """
    if not isinstance(data, Mapping):
        return None
    items = data.get("items")
    total = _count(data.get("total"))
    if not isinstance(items, list) or total is None:
        return None
    prices: dict[str, float | None] = {}
    billed_at: dict[str, datetime | None] = {}
    for item in items:
        if not isinstance(item, Mapping):
            continue
        billing_type = item.get("billing_type", DEDUCT)
        prediction = item.get("prediction")
        prediction_id = prediction.get("uuid") if isinstance(prediction, Mapping) else None
        if billing_type != DEDUCT or not isinstance(prediction_id, str) or not prediction_id:
            continue
        price = read_usd(item.get("price"), limit=MAX_PRICE_USD)
        order = item.get("order")
        if isinstance(order, Mapping) and order.get("state", "paid") != "paid":
            price = None
        if prediction_id in prices:
            earlier = prices[prediction_id]
            price = None if earlier is None or price is None else earlier + price
            if price is not None and price > MAX_PRICE_USD:
                price = None
        prices[prediction_id] = price
        at = _timestamp(item.get("created_at"))
        earlier_at = billed_at.get(prediction_id)
        billed_at[prediction_id] = (
            at if earlier_at is None or (at is not None and at > earlier_at) else earlier_at
        )
    return BillingPage(prices=prices, total=total, items=len(items), billed_at=billed_at)


def _timestamp(value: Any) -> datetime | None:
    """An ISO 8601 time ('Z' allowed, no zone read as UTC); None when it is not one."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        return _utc(datetime.fromisoformat(text))
    except ValueError:
        return None


# ---------------------------------------------------------------- usage stats


def usage_query(start: datetime, end: datetime, model: str | None = None) -> dict[str, Any]:
    """The body of a usage-stats query for ``start`` .. ``end`` (naive times are UTC).

    Refused before sending when the range is backwards or longer than the docs' 31 days.
    """
    start, end = _utc(start), _utc(end)
    if end < start:
        raise ValueError(f"end ({end.isoformat()}) is before start ({start.isoformat()})")
    if end - start > USAGE_MAX_RANGE:
        raise ValueError("WaveSpeed's usage stats cover at most 31 days per query")
    query: dict[str, Any] = {"start_time": _iso(start), "end_time": _iso(end)}
    if model:
        query["model_uuid"] = model.strip().strip("/")
    return query


def parse_usage_spend(data: Mapping[str, Any], model: str | None = None) -> float | None:
    """The USD spent in a usage-stats answer's range (``summary.total_cost``), or None.

    With ``model``, the sum of that model's ``per_model_usage`` entries (0.0 when it has none):
    a service that ignored the ``model_uuid`` filter would otherwise make every model's spend
    look like this one's. The amounts are rounded to 3 decimals by WaveSpeed.
    """
    if not isinstance(data, Mapping):
        return None
    if model is not None:
        entries = data.get("per_model_usage")
        if not isinstance(entries, list):
            return None
        wanted = model.strip().strip("/")
        spent = 0.0
        for entry in entries:
            if not isinstance(entry, Mapping):
                return None
            if entry.get("model_uuid") != wanted:
                continue
            amount = _spend(entry.get("total_cost"), _count(entry.get("total_count")))
            if amount is None:
                return None
            spent += amount
        return spent
    summary = data.get("summary")
    if not isinstance(summary, Mapping):
        return None
    counts = [_count(summary.get(name)) for name in ("total_requests", "success_requests")]
    known = [n for n in counts if n is not None]
    return _spend(summary.get("total_cost"), max(known) if known else None)


def parse_daily_spend(data: Mapping[str, Any], day: date) -> float | None:
    """The USD spent on ``day`` (UTC) by a usage-stats answer's ``daily_usage``, or None.

    0.0 when the answer reads well and lists nothing for that day (nothing was spent).
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("daily_usage"), list):
        return None
    spent = 0.0
    for entry in data["daily_usage"]:
        if not isinstance(entry, Mapping):
            return None
        if entry.get("date") != day.isoformat():
            continue
        amount = _spend(entry.get("amount"), _count(entry.get("count")))
        if amount is None:
            return None
        spent += amount
    return spent


def _spend(value: Any, count: int | None) -> float | None:
    """A spend over ``count`` requests: at most :data:`MAX_PRICE_USD` each."""
    limit = MAX_SPEND_USD if count is None else min(MAX_SPEND_USD, MAX_PRICE_USD * count)
    return read_usd(value, limit=limit)


def _utc(when: datetime) -> datetime:
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_unit_price(data: Mapping[str, Any], model: str) -> float | None:
    """What one prediction of ``model`` costs by a usage-stats answer (``per_model_usage``'s
    ``unit_price``); None when the model has no entry (usage stats list only models used in
    their range, so a model not used there has no known price).

    Several entries for the model (a price change inside the range) answer the highest: a budget
    guard must not under-count.

    :raises ValueError: when the answer cannot be read (no ``per_model_usage`` list, an entry
        that is not an object, the model's ``unit_price`` not readable as USD): that is not
        "no price known", and a guard must not treat it as such.
    """
    entries = data.get("per_model_usage") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        raise ValueError(f"no per_model_usage list in {data!r:.200}")
    wanted = model.strip().strip("/")
    prices: list[float] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise ValueError(f"a per_model_usage entry is not an object: {entry!r:.100}")
        if entry.get("model_uuid") != wanted:
            continue
        price = read_usd(entry.get("unit_price"), limit=MAX_PRICE_USD)
        if price is None:
            raise ValueError(f"the unit_price of {wanted} is not readable as USD: {entry!r:.200}")
        prices.append(price)
    return max(prices) if prices else None


def utc_midnight(now: datetime) -> datetime:
    """The start of ``now``'s UTC day (naive times are UTC): where a daily budget starts."""
    now = _utc(now)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


# ---------------------------------------------------------------- the spending guards
#
# Pure decisions: the operator reads the balance and the spend through the hook, then asks these.
# Amounts are compared rounded to a millionth of a dollar, so float sums such as 0.1 + 0.2 do
# not refuse a spend that fits exactly.


def _micro(amount: float) -> int:
    return round(amount * 1_000_000)


def usd_text(amount: float) -> str:
    """``$0.45``, ``$12.30``; amounts below a cent keep WaveSpeed's third decimal (``$0.005``)."""
    text = f"{amount:,.3f}"
    return "$" + (text[:-1] if text.endswith("0") else text)


def nothing_sent(paid: str | None = None) -> str:
    """What a refusal left behind: nothing, or (a long video's later scene) what was paid before."""
    if paid:
        return f"Nothing more was uploaded or submitted; already paid: {paid}."
    return "Nothing was uploaded or submitted."


def balance_floor_refusal(balance: float, floor: float, conn_id: str, paid: str | None = None) -> str | None:
    """Why the submit is refused when ``balance`` is below ``floor``; None when it may go ahead."""
    if _micro(balance) >= _micro(floor):
        return None
    return (
        f"Connection '{conn_id}': the WaveSpeed balance is {usd_text(balance)}, below the "
        f"connection's min_balance_usd of {usd_text(floor)}. {nothing_sent(paid)} "
        "Fix: top up the account (https://wavespeed.ai) or lower min_balance_usd."
    )


@dataclass(frozen=True)
class BudgetDecision:
    """The daily budget's answer: ``refusal`` says why not (None: go ahead); ``note`` is a line
    for the log when the decision could not count this prediction's price."""

    refusal: str | None
    note: str | None = None


def daily_budget_decision(
    spent: float,
    price: float | None,
    budget: float,
    conn_id: str,
    day: date,
    model: str,
    *,
    count: int = 1,
    paid: str | None = None,
    pending: float = 0.0,
    pending_count: int = 0,
) -> BudgetDecision:
    """May ``count`` more predictions of ``model`` start, with ``spent`` USD spent on ``day`` (UTC)?

    Yes when the spend plus ``count`` times their ``price`` fits in ``budget`` (equal fits): a
    long video asks for all its remaining scenes at once, so it never pays for half a video and
    then stops. When the price is not known (the model was not used within the usage stats'
    reach), the spend alone is checked, and the note says the budget may be passed by these
    predictions' price: refusing every first use of a model would make the budget unusable, and
    guessing a price would be wrong. ``paid`` names what was already paid (a refusal says so).

    ``pending`` is what the ``pending_count`` predictions started today but not billed yet will
    cost (billing lags completion): counted as spent, so a budget holds while billing lags.
    """
    where = f"Connection '{conn_id}'"
    if pending_count:
        started = (
            f"{usd_text(spent)} was billed on {day.isoformat()} (UTC) and {pending_count} started "
            f"prediction(s) not billed yet count {usd_text(pending)}, {usd_text(spent + pending)} in all"
        )
        spent += pending
    else:
        started = f"{usd_text(spent)} was spent on {day.isoformat()} (UTC)"
    these = "this prediction" if count == 1 else f"these {count} predictions"
    if price is None:
        if _micro(spent) >= _micro(budget):
            return BudgetDecision(
                f"{where}: {started}, which reaches "
                f"the connection's daily_budget_usd of {usd_text(budget)}. {nothing_sent(paid)} "
                "Fix: wait for the next UTC day or raise daily_budget_usd."
            )
        return BudgetDecision(
            None,
            f"{where}: the price of {model} is unknown (WaveSpeed's usage stats list no use of it "
            f"in the last 30 days); only the day's spend ({usd_text(spent)} of "
            f"{usd_text(budget)}) was checked, so {these} may pass daily_budget_usd by "
            f"{'its' if count == 1 else 'their'} own price.",
        )
    if _micro(spent) + count * _micro(price) <= _micro(budget):
        return BudgetDecision(None)
    more = (
        f"one more prediction of {model} at {usd_text(price)}"
        if count == 1
        else f"{count} more predictions of {model} at {usd_text(price)} each"
    )
    return BudgetDecision(
        f"{where}: {started}; {more} would make "
        f"{usd_text(spent + count * price)}, above the connection's daily_budget_usd of "
        f"{usd_text(budget)}. {nothing_sent(paid)} Fix: wait for the next UTC day or raise "
        "daily_budget_usd."
    )
