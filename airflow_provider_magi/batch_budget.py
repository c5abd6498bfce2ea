"""How many of a batch's next submits the connection's balance floor and daily budget allow.

The single-video guard asks the spend view (``spend``) whether all of its predictions fit; a
batch asks the same view how many, in input order, so that a budget with room for 4 of 10 pays
for exactly 4. WaveSpeed's usage stats and balance count billed predictions only, so the key's
started-but-unbilled predictions are reserved at the model's price: checking the spend alone
would let 500 in flight pass the budget, and the balance alone a batch of 10 pass the floor.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_magi import costs, spend


def micro(amount: float) -> int:
    """USD as whole millionths, so that sums and comparisons are exact."""
    return round(amount * 1_000_000)


def room(
    hook: Any,
    model: str,
    wanted: int,
    own_unbilled: set[str],
    log: Any,
    *,
    prices: tuple[float, ...] = (),
    own_prices: dict[str, float] | None = None,
) -> tuple[int, str | None]:
    """``(fits, refusal)``: how many of ``wanted`` may be submitted now; ``refusal`` says why the
    rest may not be in this try (None: they may go in a later wave, e.g. once a price is known).
    ``prices``: each wanted one's, when the catalogue knows them (MAGI-2); ``own_prices``: the
    batch's running ones' known prices.

    The hook reads the account and asks the one spend view the single-video guard asks too
    (:func:`~airflow_provider_magi.spend.room`): the balance less every started, unbilled
    prediction must stay at or above ``min_balance_usd``, and what was billed today plus them at
    or below ``daily_budget_usd``, once the wave is billed too. Reserved are the key's started,
    unbilled predictions (other tasks' too, and those started before UTC midnight), plus this
    batch's own unbilled ones the history does not list yet, each at its model's price.

    :raises MagiBudgetCheckError: a guard could not read what it guards (nothing more is
        submitted; the task may be retried, what was paid is kept in the ledger).
    """
    settings = hook.settings
    if settings.min_balance_usd is None and settings.daily_budget_usd is None:
        return wanted, None
    view, facts = hook.spend_room(
        model,
        wanted,
        whole=False,
        own_unbilled=own_unbilled,
        prices=prices,
        own_prices=own_prices,
        fails_safe=(
            "no more inputs were submitted; the task may be retried (what was paid is kept in the ledger)"
        ),
    )
    where = f"Connection '{settings.conn_id}'"
    if view.fits == wanted:
        return wanted, None
    if view.wait and not view.limit:
        if view.fits:
            log.warning(
                "%s: the price of %s is unknown (WaveSpeed's usage stats list no use of it in the last "
                "30 days); one prediction goes first and the rest wait for its price, so the guards "
                "may be passed by that one prediction's price.",
                where,
                model,
            )
        else:
            log.info("Batch: the price of %s is not known yet; the next inputs wait for it.", model)
        return view.fits, None
    price, spent, unbilled = facts.price, facts.billed_today, view.reserved_count
    if view.limit == spend.FLOOR:
        if view.below_floor:
            # Its own words, not the single video's: earlier waves may have been paid, and the
            # task's error adds the fix after the inputs it did not submit.
            return 0, (
                f"{where}: when the balance was checked, it was {costs.usd_text(facts.balance)}, below "
                f"the connection's min_balance_usd of {costs.usd_text(settings.min_balance_usd)}, so "
                "the batch stopped submitting there"
            )
        return view.fits, (
            f"{where}: when the balance was checked, {costs.usd_text(facts.balance)} less {unbilled} "
            f"started prediction(s) not billed yet (this batch's and others', "
            f"{costs.usd_text(view.reserved_usd)}) left {_room(view.fits)} at "
            f"{costs.usd_text(price or 0.0)} above min_balance_usd "
            f"{costs.usd_text(settings.min_balance_usd)}, so the batch stopped submitting "
            f"{_stopped(view.fits)}"
        )
    budget = settings.daily_budget_usd
    if price is None:
        return 0, (
            f"{where}: when the budget was checked, {costs.usd_text(spent + view.reserved_usd)} spent "
            f"today (UTC) had reached daily_budget_usd {costs.usd_text(budget)}"
        )
    fits = view.fits
    # Past tense: this text ends the task's error after the ``fits`` it allowed were submitted.
    room_left = _room(fits)
    return fits, (
        f"{where}: when the budget was checked, {costs.usd_text(spent)} spent today (UTC) plus "
        f"{unbilled} of today's predictions not billed yet (this batch's and others') left "
        f"{room_left} at {costs.usd_text(price)} within daily_budget_usd {costs.usd_text(budget)}, "
        f"so the batch stopped submitting {_stopped(fits)}"
    )


def _room(fits: int) -> str:
    return f"room for {fits} more" if fits else "no room for one more"


def _stopped(fits: int) -> str:
    return "after those" if fits else "there"


class SaidOnce:
    """The log the spending guards get: a note the same as the last one is not said again (a
    batch waiting for a price asks at every wave; the last note rides in the carry, so resumes
    after a deferral stay quiet too)."""

    def __init__(self, log: Any, carry: dict[str, Any]) -> None:
        self._log = log
        self._carry = carry

    def _say(self, level: str, message: str, *args: Any) -> None:
        text = message % args if args else message
        if self._carry.get("last_note") == text:
            return
        self._carry["last_note"] = text
        getattr(self._log, level)(message, *args)

    def debug(self, message: str, *args: Any, **_: Any) -> None:
        self._say("debug", message, *args)

    def info(self, message: str, *args: Any, **_: Any) -> None:
        self._say("info", message, *args)

    def warning(self, message: str, *args: Any, **_: Any) -> None:
        self._say("warning", message, *args)

    def error(self, message: str, *args: Any, **_: Any) -> None:
        self._say("error", message, *args)
