"""How many of a batch's next submits the connection's balance floor and daily budget allow.

The single-video guards (``costs``) answer yes or no for one prediction; a batch asks how many,
in input order, so that a budget with room for 4 of 10 pays for exactly 4. WaveSpeed's usage
stats count billed predictions only, so the key's started-but-unbilled predictions are
reserved at the model's price: checking the spend alone would let 500 in flight pass the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from airflow_provider_magi import costs
from airflow_provider_magi.exceptions import MagiAuthError, MagiBudgetCheckError, MagiError


def micro(amount: float) -> int:
    """USD as whole millionths, so that sums and comparisons are exact."""
    return round(amount * 1_000_000)


def room(hook: Any, model: str, wanted: int, own_unbilled: set[str], log: Any) -> tuple[int, str | None]:
    """``(fits, refusal)``: how many of ``wanted`` may be submitted now; ``refusal`` says why the
    rest may not be in this try (None: they may go in a later wave, e.g. once a price is known).

    Spent is what the usage stats show plus every prediction of this key started today and not
    billed yet (other tasks' too, from the history: the single-video guard's rule), plus this
    batch's own unbilled ones the history does not list yet, each at its model's price.

    :raises MagiBudgetCheckError: a guard could not read what it guards (nothing more is
        submitted; the task may be retried, what was paid is kept in the ledger).
    """
    settings = hook.settings
    if settings.min_balance_usd is None and settings.daily_budget_usd is None:
        return wanted, None

    def read(what: str, extra: str, call: Callable[[], Any], *, none_is_unreadable: bool = True) -> Any:
        try:
            value = call()
        except MagiAuthError:
            raise
        except MagiError as error:
            value, why = None, str(error)
        else:
            why = "WaveSpeed's answer did not state it as USD"
        if value is None and none_is_unreadable:
            raise MagiBudgetCheckError(
                f"Connection '{settings.conn_id}': the {extra} guard could not read {what} ({why}), so "
                "no more inputs were submitted; the task may be retried (what was paid is kept)."
            )
        return value

    if settings.min_balance_usd is not None:
        balance = read("the balance", "min_balance_usd", hook.get_balance)
        if costs.balance_floor_refusal(balance, settings.min_balance_usd, settings.conn_id):
            # Its own words, not the single video's: earlier waves may have been paid, and the
            # task's error adds the fix after the inputs it did not submit.
            return 0, (
                f"Connection '{settings.conn_id}': when the balance was checked, it was "
                f"{costs.usd_text(balance)}, below the connection's min_balance_usd of "
                f"{costs.usd_text(settings.min_balance_usd)}, so the batch stopped submitting there"
            )
    if settings.daily_budget_usd is None:
        return wanted, None
    now = datetime.now(UTC)
    spent = read("today's spend", "daily_budget_usd", lambda: hook.get_spend(costs.utc_midnight(now), now))
    price = read(
        f"the price of {model}",
        "daily_budget_usd",
        lambda: hook.get_unit_price(model),
        none_is_unreadable=False,
    )
    started_today, billed = read(
        "today's started predictions from WaveSpeed's history and billing records",
        "daily_budget_usd",
        lambda: hook.get_started_since(costs.utc_midnight(now)),
    )
    # Usage stats lag billing: today's billing records count even before the stats show them.
    spent = max(spent, billed)
    unbilled = len({prediction.id for prediction in started_today} | own_unbilled)
    budget = settings.daily_budget_usd
    where = f"Connection '{settings.conn_id}'"
    if price is None:
        if micro(spent) >= micro(budget):
            return 0, (
                f"{where}: when the budget was checked, {costs.usd_text(spent)} spent today (UTC) "
                f"had reached daily_budget_usd {costs.usd_text(budget)}"
            )
        if unbilled:  # its price shows in the usage stats once billed: wait for it
            log.info("Batch: the price of %s is not known yet; the next inputs wait for it.", model)
            return 0, None
        log.warning(
            "%s: the price of %s is unknown (WaveSpeed's usage stats list no use of it in the last 30 "
            "days); one prediction goes first and the rest wait for its price, so the budget may be "
            "passed by that one prediction's price.",
            where,
            model,
        )
        return min(1, wanted), None
    listed = {prediction.id for prediction in started_today}
    pending = hook.pending_cost(started_today, model, price, None) + len(own_unbilled - listed) * price
    reserved = micro(spent) + micro(pending)
    fits = min(wanted, max(0, (micro(budget) - reserved) // max(1, micro(price))))
    if fits == wanted:
        return wanted, None
    # Past tense: this text ends the task's error after the ``fits`` it allowed were submitted.
    room_left = f"room for {fits} more" if fits else "no room for one more"
    return fits, (
        f"{where}: when the budget was checked, {costs.usd_text(spent)} spent today (UTC) plus "
        f"{unbilled} of today's predictions not billed yet (this batch's and others') left "
        f"{room_left} at {costs.usd_text(price)} within daily_budget_usd {costs.usd_text(budget)}, "
        f"so the batch stopped submitting {'after those' if fits else 'there'}"
    )
