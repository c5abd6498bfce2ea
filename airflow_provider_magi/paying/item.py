"""Paying for one item on a ledger record of its own: a single video, or one scene of a long video.

Before paying, the record says whether an earlier try (or a cleared run) already paid for these
inputs (:func:`~airflow_provider_magi.ledger.decide`): reattach to a live or finished prediction,
look up an intent whose answer was lost in WaveSpeed's history, or pay. Paying is a wave of one
through :func:`~airflow_provider_magi.paying.send.send_wave`, after the spend view's guards.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_magi.api import FAILED_STATUSES, Prediction
from airflow_provider_magi.exceptions import MagiLedgerError, MagiRejectedError, MagiSubmitUncertainError
from airflow_provider_magi.paying.send import PAID, UNCERTAIN, Wave, send_wave

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_magi.ledger import Claim, Decision, Ledger, LedgerRecord
    from airflow_provider_magi.paying.map_indexes import Holders

log = logging.getLogger(__name__)

# XCom key of the predictions an uncertain submit may have started (see MagiSubmitUncertainError).
XCOM_CANDIDATES = "prediction_candidates"
# What a status read reports for a stored id the API no longer knows (deleted after 7 days).
STATUS_NOT_FOUND = "not_found"
# A submit intent younger than this is left to land before WaveSpeed's history is asked about it:
# a POST cut off by a killed worker may still be creating its prediction on the server. One rule
# for every shape (the batch reads it too).
INTENT_SETTLE_SECONDS = 30.0


@dataclass
class Found:
    """What the ledger says of an item before paying: the prediction already paid for (None:
    pay), and that prediction when a status read found it finished."""

    prediction_id: str | None
    final: Prediction | None = None


def candidate(prediction: Prediction) -> dict[str, Any]:
    return {
        "prediction_id": prediction.id,
        "status": prediction.status,
        "created_at": prediction.created_at,
        "model": prediction.model,
    }


def clear_number(context: Context) -> int | None:
    """How many times the DAG run was cleared (a retry keeps it, a clear raises it)."""
    number = getattr(context.get("dag_run"), "clear_number", None)
    return number if isinstance(number, int) and not isinstance(number, bool) else None


def regenerate_flag(value: Any) -> bool:
    """``regenerate_on_clear`` as rendered: a bool, or its text from a template; else refused
    before anything is paid."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", "", "none"):
        return False
    from airflow_provider_magi.exceptions import MagiInputError

    raise MagiInputError(
        f"Invalid regenerate_on_clear: expected true or false (got {value!r:.80}). Fix: pass a bool, "
        "or a template that renders to 'true' or 'false'."
    )


class RecordJournal:
    """A wave of one on the item's own ledger record: intent, each resend, then the id (and a
    copy under the inputs' fingerprint, so a reordered mapped list finds it) or no record."""

    def __init__(self, ledger: Ledger, fingerprint: str, model: str, *, waiting: bool = False) -> None:
        self.ledger = ledger
        self.fingerprint = fingerprint
        self.model = model
        self.waiting = waiting
        self.record: LedgerRecord | None = None

    def intend(self, keys: Sequence[Hashable]) -> None:
        self.record = self.ledger.write_intent(self.fingerprint, self.model)

    def resent(self, key: Hashable) -> None:
        assert self.record is not None
        self.record = self.ledger.write_attempt(self.record)

    def settle(self, wave: Wave) -> None:
        (outcome,) = wave.outcomes.values()
        if outcome.kind == PAID and outcome.prediction is not None:
            self.paid(outcome.prediction.id)
        elif outcome.started is False:
            # Provably nothing started: a retry need not ask WaveSpeed's history about this intent.
            with contextlib.suppress(Exception):
                self.ledger.forget()

    def paid(self, prediction_id: str) -> None:
        """The id goes into the ledger before anything else (XCom, logs) can fail or be killed. A
        mapped task claims it, then lists it by inputs for its other map indexes: a prediction
        whose claim could not be written is not listed, so no other map index can take it."""
        assert self.record is not None
        self.record = self.ledger.write_paid(self.record, prediction_id)
        if self.ledger.by_inputs is not None:
            try:
                self.ledger.write_claim(prediction_id, strict=True, waiting=self.waiting)
            except MagiLedgerError as error:
                log.warning("%s Not shared with the other map indexes.", error)
                return
        self.ledger.write_by_inputs(self.record)


class ItemPayer:
    """One item's never-pay-twice steps, for an operator that makes one prediction at a time.

    :param settle_wait: Waits the given seconds before an intent is looked up (an operator that
        defers waits in the triggerer, holding no worker slot).
    :param waiting: The task defers with its prediction: scheduled or queued to resume, it still
        holds it (a mapped task's claims say so; paying.map_indexes).
    """

    def __init__(
        self,
        hook: Any,
        model: str,
        log: Any,
        *,
        attach_to_single_candidate: bool,
        settle_wait: Callable[[float], None],
        waiting: bool = False,
    ) -> None:
        self.hook = hook
        self.model = model
        self.log = log
        self.attach_to_single_candidate = attach_to_single_candidate
        self.settle_wait = settle_wait
        self.waiting = waiting

    # ------------------------------------------------------------ before paying

    def find_paid(
        self,
        ledger: Ledger,
        context: Context,
        fingerprint: str,
        source_fingerprint: str | None,
        *,
        regenerate: bool,
    ) -> Found:
        """The prediction an earlier try (or a cleared run) already paid for these inputs."""
        from airflow_provider_magi.ledger import LOOK_UP, SUBMIT, decide, is_cleared_since_delivery

        clears = clear_number(context)
        own = ledger.read()
        decision = decide(own, fingerprint, source_fingerprint, regenerate=regenerate, clear_number=clears)
        holds = self._holds(ledger, context)  # reads Airflow's states only when a claim is judged
        if ledger.found_in:
            self.log.info(
                "Ledger: the record was found at %s (an earlier try wrote it there).", ledger.found_in
            )
        if decision.action == SUBMIT:
            # Released first: a map index deciding at the same time may take it (of two that
            # release before they read, at least one sees the other's release).
            self._release(ledger, own, keep=None)
            if not (decision.record and regenerate and is_cleared_since_delivery(decision.record, clears)):
                decision = self._from_another_map_index(ledger, context, fingerprint, holds) or decision
        if decision.action == SUBMIT:
            if decision.record is not None:
                self.log.warning("Not reusing the recorded submit: %s. Submitting afresh.", decision.reason)
            return Found(None)
        assert decision.record is not None
        if decision.action == LOOK_UP:
            return Found(self.look_up_intent(ledger, decision.record, context))
        prediction_id = str(decision.record.prediction_id)
        if ledger.by_inputs is not None and ledger.claimed_by_another(prediction_id, holds):
            # Another map index holds it now (a reordered mapped list): take another of these
            # inputs' predictions, or pay (two map indexes never deliver one prediction).
            self.log.info("Ledger: prediction %s is held by another map index now.", prediction_id)
            other = self._from_another_map_index(ledger, context, fingerprint, holds)
            if other is None:
                return Found(None)
            decision = other
            prediction_id = str(decision.record.prediction_id) if decision.record else prediction_id
        elif ledger.by_inputs is not None and not self._claimed_as(ledger, prediction_id):
            # Strict: unclaimed, it could be taken while this map index delivers it.
            ledger.write_claim(prediction_id, strict=True, waiting=self.waiting)
        self._release(ledger, own, keep=prediction_id)
        status, final = self._status(prediction_id)
        if status == STATUS_NOT_FOUND or status in FAILED_STATUSES:
            self.log.warning(
                "The prediction %s paid for by an earlier try is %s: submitting afresh.",
                prediction_id,
                "gone (WaveSpeed deletes predictions after 7 days)" if status == STATUS_NOT_FOUND else status,
            )
            return Found(None)
        self.log.info("Ledger: %s; not submitting again.", decision.reason)
        return Found(prediction_id, final)

    def _status(self, prediction_id: str) -> tuple[str, Prediction | None]:
        try:
            prediction = self.hook.get_prediction(prediction_id)
        except MagiRejectedError as error:
            if error.http_status == 404:
                return STATUS_NOT_FOUND, None
            raise
        return prediction.status, prediction if prediction.is_terminal else None

    @staticmethod
    def _holds(ledger: Ledger, context: Context) -> Holders | None:
        """Who holds a claim for real (paying.map_indexes); None for a task that is not mapped."""
        from airflow_provider_magi.paying.map_indexes import Holders

        return None if ledger.by_inputs is None else Holders(context)

    def _claimed_as(self, ledger: Ledger, prediction_id: str) -> bool:
        """The claim already names this map index, waiting as this task does: nothing to write."""
        claim = ledger.claim(prediction_id)
        return (
            claim is not None
            and claim.map_index == ledger.identity.map_index
            and claim.waiting == self.waiting
        )

    @staticmethod
    def _release(ledger: Ledger, own: LedgerRecord | None, *, keep: str | None) -> None:
        """This map index moves off its record's prediction: another may take it."""
        if own is not None and own.prediction_id and own.prediction_id != keep:
            ledger.release_claim(own.prediction_id)

    @staticmethod
    def _mapped_retry(ledger: Ledger, context: Context) -> bool:
        """A retry or clear of a mapped task (its first try pays for every map index's inputs,
        duplicates included, as asked)."""
        return ledger.by_inputs is not None and getattr(context["ti"], "try_number", 1) > 1

    def _from_another_map_index(
        self, ledger: Ledger, context: Context, fingerprint: str, holds: Holders | None
    ) -> Decision | None:
        """A retry or clear of a mapped task: these inputs may have been paid for under another
        map index of this task and run (the mapped list came back in another order). Each
        duplicate of the inputs has its own prediction; one another map index holds for real is
        left to it (see :meth:`Ledger.claimed_by_another`), unless that map index is deciding right
        now: then its release is waited for a moment (paying.map_indexes)."""
        if not self._mapped_retry(ledger, context):
            return None
        records = ledger.read_by_inputs(fingerprint)
        claims = self._claims(ledger, records)
        taken = self._take_one(ledger, records, claims, holds)
        if taken is not None or holds is None:
            return taken
        from airflow_provider_magi.paying.map_indexes import is_deciding, sibling_states, wait_for_release

        states = sibling_states(context) or {}
        started = ledger.identity.run_started
        deciding = {
            pid: claim
            for pid, claim in claims.items()
            if claim.map_index is not None
            and is_deciding(states.get(claim.map_index, "none"), claim.at, started)
        }
        if not deciding:
            return None
        self.log.info(
            "Ledger: map index(es) %s hold predictions of these inputs and are deciding now; waiting up "
            "to a few seconds for what they release.",
            sorted({claim.map_index for claim in deciding.values() if claim.map_index is not None}),
        )
        if not wait_for_release(lambda: any(ledger.claim(pid) != claim for pid, claim in deciding.items())):
            return None
        records = ledger.read_by_inputs(fingerprint)
        return self._take_one(ledger, records, self._claims(ledger, records), holds)

    @staticmethod
    def _claims(ledger: Ledger, records: list[LedgerRecord]) -> dict[str, Claim]:
        """The claims of these records' predictions, as read now."""
        claims = {r.prediction_id: ledger.claim(r.prediction_id) for r in records if r.prediction_id}
        return {pid: claim for pid, claim in claims.items() if claim is not None}

    def _take_one(
        self, ledger: Ledger, records: list[LedgerRecord], claims: dict[str, Claim], holds: Holders | None
    ) -> Decision | None:
        """The first of these records' predictions no other map index holds for real, claimed
        for this map index. ``claims`` were read before this call's one read of Airflow's states
        (a state read before a claim could predate it)."""
        from airflow_provider_magi.ledger import REATTACH, Decision

        mine = ledger.identity.map_index
        others = {pid: claim for pid, claim in claims.items() if claim.map_index != mine}
        judge = holds.now() if holds is not None and others else None
        for found in records:
            if found.prediction_id is None:
                continue
            claim = others.get(found.prediction_id)
            if claim is not None and (
                judge is None or claim.map_index is None or judge(claim.map_index, claim.waiting)
            ):
                continue  # another map index holds it for real (or its claim does not say who)
            ledger.write_claim(found.prediction_id, strict=True, waiting=self.waiting)  # before delivering
            if ledger.claimed_by_another(found.prediction_id, by_anyone=True):
                continue  # another map index claimed it since: the later claim is theirs
            ledger.write_paid(found, found.prediction_id)  # this map index's own record from now on
            return Decision(
                REATTACH,
                f"prediction {found.prediction_id} was paid for these inputs under another map index "
                "of this task and run (the mapped list came back in another order)",
                found,
            )
        return None

    def look_up_intent(self, ledger: Ledger, record: LedgerRecord, context: Context) -> str | None:
        """An intent without an id: WaveSpeed's history says whether that submit started anything."""
        # A submit cut off a moment ago may still be landing on WaveSpeed's side: leave its last
        # attempt INTENT_SETTLE_SECONDS to land, on WaveSpeed's clock (one read of its Date).
        settle = record.sent_until.timestamp() + INTENT_SETTLE_SECONDS - self.hook.wavespeed_now()
        if settle > 0:
            self.log.info(
                "Ledger: leaving the last submit attempt %.1fs more to land before the look-up.", settle
            )
            self.settle_wait(settle)
        # Every attempt actually sent (429 Retry-After, connect failures) is inside the window.
        until = record.sent_until + timedelta(seconds=self.hook.settings.request_timeout)
        found = self.hook.find_submit_candidates(record.model, record.intent_at, until=until)
        if not found:
            self.log.warning(
                "The ledger holds a submit intent from %s without a prediction id, and WaveSpeed's "
                "history lists no prediction of %s created around it: it never started. Submitting afresh.",
                record.intent_at.isoformat(timespec="seconds"),
                record.model,
            )
            return None
        candidates = [candidate(p) for p in found]
        context["ti"].xcom_push(key=XCOM_CANDIDATES, value=candidates)
        if self.attach_to_single_candidate and len(found) == 1:
            (only,) = found
            self.log.warning(
                "The ledger holds a submit intent without an id; carrying on with %s, the only "
                "prediction of %s created around it (attach_to_single_candidate=True).",
                only.id,
                record.model,
            )
            ledger.write_paid(record, only.id)
            return only.id
        listed = "; ".join(
            f"{c['prediction_id']} ({c['status']}, created {c['created_at']})" for c in candidates
        )
        raise MagiSubmitUncertainError(
            f"An earlier try of this task sent a submit whose answer never reached the ledger "
            f"({ledger.where()}), and WaveSpeed lists {len(found)} prediction(s) of {record.model} "
            f"created around it: {listed}. Nothing is submitted again. Fix: if one is this task's, "
            "set attach_to_single_candidate=True (one candidate) or wait for it with "
            "MagiPredictionSensor; to pay for a new video instead, delete that ledger record and "
            "clear the task.",
            candidates=candidates,
        )

    # ------------------------------------------------------------ paying

    def pay(
        self,
        ledger: Ledger,
        context: Context,
        fingerprint: str,
        inputs: Mapping[str, Any],
        *,
        webhook_url: str | None = None,
        count: int = 1,
        paid: str | None = None,
        prices: Sequence[float] = (),
        own_prices: Mapping[str, float] | None = None,
    ) -> str:
        """The guards, then intent -> POST -> id; the new prediction's id.

        The connection's balance floor and daily budget are checked just before paying (never
        when the ledger reattaches), for ``count`` predictions (this one and those the task must
        still pay for after it); ``paid`` names what the task paid already, for the refusal;
        ``prices`` are theirs when the model's price rule knows them (MAGI-2: per second), and
        ``own_prices`` those of the task's own started predictions (a long video's scenes).
        """
        # Before the upload too: nothing that costs money leaves unchecked.
        self.hook.check_spending(
            self.model, count=count, paid=paid, log=self.log, prices=prices, own_prices=own_prices
        )
        journal = RecordJournal(ledger, fingerprint, self.model, waiting=self.waiting)
        wave = send_wave(self.hook, self.model, [(0, inputs)], journal, webhook_url=webhook_url)
        outcome = wave.outcomes[0]
        if outcome.kind == PAID and outcome.prediction is not None:
            return outcome.prediction.id
        assert outcome.error is not None
        if outcome.kind == UNCERTAIN:
            assert isinstance(outcome.error, MagiSubmitUncertainError)
            prediction_id = self._attach_to_candidate(context, outcome.error)
            journal.paid(prediction_id)
            return prediction_id
        raise outcome.error

    def _attach_to_candidate(self, context: Context, error: MagiSubmitUncertainError) -> str:
        """Publish the candidates; carry on with the only one if asked to, else fail as before."""
        context["ti"].xcom_push(key=XCOM_CANDIDATES, value=error.candidates)
        if not (self.attach_to_single_candidate and len(error.candidates) == 1):
            raise error
        (only,) = error.candidates
        self.log.warning(
            "The submit's answer was lost; carrying on with %s, the only prediction of %s created "
            "around it (attach_to_single_candidate=True).",
            only["prediction_id"],
            self.model,
        )
        return str(only["prediction_id"])
