"""The one spend view both guards ask: how many of N predictions fit now. No I/O: the hook reads.

The balance floor (``min_balance_usd``) and the daily budget (``daily_budget_usd``) are one
question asked of one set of facts::

    available = min(balance - floor, budget - billed today) - reserved

``reserved`` is every prediction on the key that has started and is not billed yet, at its
model's price: this task's own (a long video's earlier scenes, a batch's running items), other
tasks', and those started before UTC midnight and billed after it (they are billed today, so
they are today's spend; yesterday's guard counted them as reserved too). ``fits`` is how many
predictions at ``price`` fit in ``available``: the balance stays at or above the floor, and the
day's spend at or below the budget, once all of them are billed. Equal fits.

This is exact for tasks that check one after another (each sees the others' started
predictions in WaveSpeed's history) and inside a batch (the batch reserves its own). Tasks whose
checks run at the same instant cannot see each other's submits: that window is measured by
``bench/budget_overrun.py`` and documented in the README ("What it costs").

When the price is not known (the model was not used within the usage stats' 30 days), the
available room is checked alone: one prediction may pass a guard by its own price (a single
check says so in the log; a batch sends one and waits for its price). A started, unbilled
prediction whose price is unknown when this model's is unknown too cannot be counted at all:
the view says so (``uncountable``) and the guard fails safe.

Amounts are compared in whole millionths of a dollar, so float sums such as 0.1 + 0.2 do not
refuse a spend that fits exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

FLOOR = "min_balance_usd"
BUDGET = "daily_budget_usd"


def micro(amount: float) -> int:
    """USD as whole millionths, so that sums and comparisons are exact."""
    return round(amount * 1_000_000)


@dataclass(frozen=True)
class Reserved:
    """A started prediction on the key that is not billed yet.

    ``price`` is its model's unit price (None: unknown); ``own`` marks the caller's own earlier
    predictions (a long video's scenes, a batch's running items), which never make the guard
    fail safe; ``before_midnight`` one started before today's UTC midnight (billed today).
    """

    prediction_id: str
    price: float | None
    own: bool = False
    before_midnight: bool = False


@dataclass(frozen=True)
class SpendFacts:
    """What the hook read for the guards. ``balance`` is None when no floor is set (then it is
    not read), ``budget`` None when no daily budget is set; ``billed_today`` is what was billed
    since UTC midnight (0.0 without a budget: not read)."""

    conn_id: str
    model: str
    day: date
    price: float | None
    floor: float | None = None
    balance: float | None = None
    budget: float | None = None
    billed_today: float = 0.0
    reserved: tuple[Reserved, ...] = ()
    # The wanted predictions' own prices, in order, when the model's price rule knows them before
    # any bill (MAGI-2: per second of video); then ``price`` is their average, for the words.
    prices: tuple[float, ...] = ()


@dataclass(frozen=True)
class Room:
    """The view's answer for ``wanted`` predictions.

    ``fits``: how many may start now, in order. ``limit``: the guard that stops the rest
    (``min_balance_usd`` or ``daily_budget_usd``; None when nothing stops them, or they only
    wait for a price). ``below_floor``: the balance alone is already under the floor.
    ``wait``: the rest may go once a price is known (a batch's later wave). ``unknown_price``:
    the price was not known, so a prediction may pass a guard by its own price.
    ``uncountable``: a started, unbilled prediction that cannot be counted (fail safe).
    ``reserved_usd``/``reserved_count``: what the started, unbilled predictions count, and how
    many (``overnight`` of them started before midnight). ``floor_room``/``budget_room``: USD
    left under each guard after them (None: that guard is not set).
    """

    wanted: int
    fits: int
    limit: str | None = None
    below_floor: bool = False
    wait: bool = False
    unknown_price: bool = False
    uncountable: str | None = None
    reserved_usd: float = 0.0
    reserved_count: int = 0
    overnight: int = 0
    floor_room: float | None = None
    budget_room: float | None = None


def room(facts: SpendFacts, wanted: int, *, whole: bool) -> Room:
    """How many of ``wanted`` predictions of ``facts.model`` fit under the connection's guards.

    ``whole``: all or none (one video, a long video's remaining scenes: never half a video);
    otherwise as many as fit, in order (a batch's wave).
    """
    if wanted <= 0:
        return Room(wanted, 0)
    if facts.floor is not None and facts.balance is not None and micro(facts.balance) < micro(facts.floor):
        return Room(wanted, 0, limit=FLOOR, below_floor=True, floor_room=facts.balance - facts.floor)
    each = [micro(p) for p in facts.prices[:wanted]] if len(facts.prices) >= wanted else None
    price = max(each) if each else None if facts.price is None else micro(facts.price)
    reserved = 0
    for item in facts.reserved:
        if item.price is not None:
            reserved += micro(item.price)
        elif price is not None:
            reserved += price  # an unknown price counts at this model's: never as free
        elif not item.own and whole:
            return Room(wanted, 0, uncountable=item.prediction_id, reserved_count=len(facts.reserved))
    rooms: dict[str, int] = {}
    if facts.floor is not None and facts.balance is not None:
        rooms[FLOOR] = micro(facts.balance) - micro(facts.floor) - reserved
    if facts.budget is not None:
        rooms[BUDGET] = micro(facts.budget) - micro(facts.billed_today) - reserved
    counted = Room(
        wanted,
        0,
        reserved_usd=reserved / 1_000_000,
        reserved_count=len(facts.reserved),
        overnight=sum(1 for item in facts.reserved if item.before_midnight),
        floor_room=rooms[FLOOR] / 1_000_000 if FLOOR in rooms else None,
        budget_room=rooms[BUDGET] / 1_000_000 if BUDGET in rooms else None,
    )
    if not rooms:
        return replace(counted, fits=wanted)
    if price is None:
        # The floor holds at its edge (a balance at the floor may pay); the budget is spent
        # once the day's spend reaches it.
        for name, left in rooms.items():
            if left < 0 or (name == BUDGET and left == 0):
                return replace(counted, limit=name, unknown_price=True)
        if whole:
            return replace(counted, fits=wanted, unknown_price=True)
        # Its price shows in the usage stats once one of its predictions is billed: wait for one
        # started and not priced. Other models' priced predictions are counted above; waiting
        # for them would not tell this model's price (on a busy key, never submit at all).
        if any(item.price is None for item in facts.reserved):
            return replace(counted, wait=True, unknown_price=True)
        return replace(counted, fits=min(1, wanted), wait=wanted > 1, unknown_price=True)
    fits = {
        name: (
            _how_many(each, left)
            if each
            else max(0, left) // price
            if price
            else (wanted if left >= 0 else 0)
        )
        for name, left in rooms.items()
    }
    limit = min(fits, key=lambda name: fits[name])
    if fits[limit] >= wanted:
        return replace(counted, fits=wanted)
    return replace(counted, fits=0 if whole else fits[limit], limit=limit)


def _how_many(prices: list[int], left: int) -> int:
    """How many of ``prices`` (millionths, in order) fit in ``left``."""
    count = total = 0
    for price in prices:
        if total + price > left:
            break
        total += price
        count += 1
    return count


# ---------------------------------------------------------------- what a refusal says


def refusal_text(room: Room, facts: SpendFacts, paid: str | None = None) -> str | None:
    """Why not all of ``room.wanted`` may start (None: they may): the guard that stops them,
    with the figures it counted. ``paid`` names what the caller already paid."""
    from airflow_provider_magi import costs

    if room.fits >= room.wanted or room.wait:
        return None
    if room.limit == FLOOR and facts.floor is not None and facts.balance is not None:
        if room.below_floor:
            return costs.balance_floor_refusal(facts.balance, facts.floor, facts.conn_id, paid)
        return floor_refusal(room, facts, paid)
    if room.limit == BUDGET and facts.budget is not None:
        return costs.daily_budget_decision(
            facts.billed_today,
            facts.price,
            facts.budget,
            facts.conn_id,
            facts.day,
            facts.model,
            count=room.wanted,
            paid=paid,
            pending=room.reserved_usd,
            pending_count=room.reserved_count,
        ).refusal
    return None


def floor_refusal(room: Room, facts: SpendFacts, paid: str | None = None) -> str:
    """The floor's refusal when the balance is above it, but not by enough for what is started
    and not billed yet plus ``room.wanted`` more predictions."""
    from airflow_provider_magi import costs

    assert facts.balance is not None and facts.floor is not None
    usd = costs.usd_text
    where = f"Connection '{facts.conn_id}'"
    started = ""
    if room.reserved_count:
        started = (
            f", and {room.reserved_count} started prediction(s) not billed yet will take "
            f"{usd(room.reserved_usd)} of it"
        )
    if facts.price is None:
        left = facts.balance - room.reserved_usd
        return (
            f"{where}: the WaveSpeed balance is {usd(facts.balance)}{started}, which leaves "
            f"{usd(left)}, below the connection's min_balance_usd of {usd(facts.floor)}. "
            f"{costs.nothing_sent(paid)} Fix: top up the account (https://wavespeed.ai) or lower "
            "min_balance_usd."
        )
    more = (
        f"one more prediction of {facts.model} at {usd(facts.price)}"
        if room.wanted == 1
        else f"{room.wanted} more predictions of {facts.model} at {usd(facts.price)} each"
    )
    left = facts.balance - room.reserved_usd - room.wanted * facts.price
    return (
        f"{where}: the WaveSpeed balance is {usd(facts.balance)}{started}; {more} would leave "
        f"{usd(left) if left >= 0 else '-' + usd(-left)}, below the connection's min_balance_usd of "
        f"{usd(facts.floor)}. {costs.nothing_sent(paid)} Fix: top up the account "
        "(https://wavespeed.ai) or lower min_balance_usd."
    )


def uncountable_text(room: Room, facts: SpendFacts, paid: str | None = None) -> str:
    """Why the guard fails safe: a started, unbilled prediction whose price is unknown while
    this model's is unknown too (counted as free, every task would pass while it waits to be
    billed)."""
    from airflow_provider_magi import costs

    extra = BUDGET if facts.budget is not None else FLOOR
    when = next(
        ("before UTC midnight" if r.before_midnight else "today")
        for r in facts.reserved
        if r.prediction_id == room.uncountable
    )
    left = costs.nothing_sent(paid).rstrip(".")
    return (
        f"Connection '{facts.conn_id}': the {extra} guard cannot count prediction "
        f"{room.uncountable}, started {when} and not billed yet: neither its model's price nor "
        f"that of {facts.model} is known (WaveSpeed's usage stats list no use of them in the last "
        f"30 days), so it fails safe: {left[0].lower()}{left[1:]}, and the task may be retried "
        "once it is billed."
    )
