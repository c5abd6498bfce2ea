"""What a task has paid for: one record per task identity, written before and after each submit.

XCom is cleared at the start of every try, so it cannot remember a paid prediction across a
retry. The ledger can: it is keyed by what stays the same across tries (DAG, task, run, map
index; never the try number), and it is written in two phases:

1. **intent**, just before the submit POST: the inputs' fingerprint, the model, the time (and,
   before every resend of the same submit, the time of that last attempt).
2. **paid**, the moment an answer names a prediction id: the same record plus that id.

The run part of the key tells a DAG run from one deleted and made again under the same run id
(``run_after``, the run's start and clear count; on 3.3 the task state store's own scoping).

A retry reads the record back and decides (:func:`decide`): reattach to the paid prediction, look
an intent without an id up in WaveSpeed's history, or submit afresh. The records hold ids and
digests only, never the API key or the inputs themselves. Which rendering of a task's templates a
try pays for is the ``rendering`` record's (``airflow_provider_magi.paying.rendering``), kept in
the same stores through :meth:`Ledger.read_text` and :meth:`Ledger.write_text`.

The logic here is pure; the stores it writes through are the small adapters in
``airflow_provider_magi.ledger_stores``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from airflow_provider_magi.api import is_valid_prediction_id
from airflow_provider_magi.exceptions import MagiLedgerError

log = logging.getLogger(__name__)

RECORD_VERSION = 2
# Version 1 records (no template source, no attempt time) are still read: a retry that straddles a
# provider upgrade finds them.
READABLE_VERSIONS = (1, 2)
# The record every generate task keeps; a long video keeps one per scene ("scene-1", ...).
DEFAULT_RECORD = "prediction"


@dataclass(frozen=True)
class TaskIdentity:
    """What names one task's work across all of its tries (and a manual clear)."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    # When the DAG run was created to run (its ``run_after``): a run deleted and created again
    # with the same run id gets a new one, so its records are not the deleted run's. None where
    # unknown (then the run id alone names the run, as before).
    run_after: str | None = None
    # When the run started, and how often it was cleared: not part of any key, but stamped on
    # each record. A record from a run that started at another time, in no earlier clear, was
    # written by a deleted run of the same run id and run_after (a scheduled run made again).
    run_started: str | None = None
    run_clears: int | None = None

    @classmethod
    def of(cls, context: Mapping[str, Any]) -> TaskIdentity:
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        run = context.get("dag_run")
        run_after = getattr(run, "run_after", None)
        started = getattr(run, "start_date", None)
        clears = getattr(run, "clear_number", None)
        return cls(
            dag_id=str(ti.dag_id),
            task_id=str(ti.task_id),
            run_id=str(ti.run_id),
            map_index=-1 if map_index is None else int(map_index),
            run_after=_utc_text(run_after) if isinstance(run_after, datetime) else None,
            run_started=_utc_text(started) if isinstance(started, datetime) else None,
            run_clears=clears if isinstance(clears, int) and not isinstance(clears, bool) else None,
        )

    def without_run_after(self) -> TaskIdentity:
        """The identity as records written before ``run_after`` was part of it name it."""
        return replace(self, run_after=None)

    def unmapped(self) -> TaskIdentity:
        """The identity every map index of this task and run shares."""
        return replace(self, map_index=-1)

    def describe(self) -> str:
        mapped = f", map_index={self.map_index}" if self.map_index >= 0 else ""
        return f"dag_id={self.dag_id}, task_id={self.task_id}, run_id={self.run_id}{mapped}"


@dataclass(frozen=True)
class LedgerRecord:
    """One submit: what it was for, when it was about to be sent, and the id once known."""

    fingerprint: str
    model: str
    intent_at: datetime
    prediction_id: str | None = None
    # A digest of the template fields before rendering, as records written before the rendering
    # rule (paying.rendering) hold it: read so that a retry straddling the upgrade still matches.
    source: str | None = None
    # When the last submit attempt was about to be sent (429 Retry-After and connect failures
    # resend): the history look-up searches up to past this, not only past the intent.
    last_attempt_at: datetime | None = None
    # Set once the task succeeded with this prediction: only then may ``regenerate_on_clear``
    # pay for a new video instead of handing this one back. ``delivered_at_clear`` is the DAG
    # run's clear_number then: a retry keeps it, a clear raises it.
    delivered: bool = False
    delivered_at_clear: int | None = None
    # The run's start and clear_number when the intent was written (see TaskIdentity).
    run_started: str | None = None
    run_clears: int | None = None

    @property
    def is_paid(self) -> bool:
        return self.prediction_id is not None

    @property
    def sent_until(self) -> datetime:
        """When the last attempt of this submit was about to be sent (the intent, if only one)."""
        return self.last_attempt_at or self.intent_at

    def paid(self, prediction_id: str) -> LedgerRecord:
        return replace(self, prediction_id=prediction_id)

    def to_json(self) -> str:
        raw: dict[str, Any] = {
            "v": RECORD_VERSION,
            "fingerprint": self.fingerprint,
            "model": self.model,
            "intent_at": _utc_text(self.intent_at),
            "prediction_id": self.prediction_id,
        }
        if self.source is not None:
            raw["source"] = self.source
        if self.last_attempt_at is not None:
            raw["last_attempt_at"] = _utc_text(self.last_attempt_at)
        if self.delivered:
            raw["delivered"] = True
        if self.delivered_at_clear is not None:
            raw["delivered_at_clear"] = self.delivered_at_clear
        if self.run_started is not None:
            raw["run_started"] = self.run_started
        if self.run_clears is not None:
            raw["run_clears"] = self.run_clears
        return json.dumps(raw, ensure_ascii=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, *, where: str) -> LedgerRecord:
        """Parse a stored record strictly: anything unexpected is corrupt, never "no record"."""
        try:
            raw = json.loads(text)
        except (TypeError, ValueError, RecursionError):
            raise _corrupt(where, "it is not JSON") from None
        if not isinstance(raw, dict) or raw.get("v") not in READABLE_VERSIONS or raw.get("v") is True:
            raise _corrupt(where, f"expected a version {RECORD_VERSION} record")
        fingerprint, model, prediction_id = raw.get("fingerprint"), raw.get("model"), raw.get("prediction_id")
        if not isinstance(fingerprint, str) or not fingerprint or not isinstance(model, str) or not model:
            raise _corrupt(where, "fingerprint or model is missing")
        if prediction_id is not None and not (
            isinstance(prediction_id, str) and is_valid_prediction_id(prediction_id)
        ):
            raise _corrupt(where, "its prediction id is not a WaveSpeed id")
        intent_at = _stored_time(raw.get("intent_at"), "intent_at", where)
        last = raw.get("last_attempt_at")
        source, delivered = raw.get("source"), raw.get("delivered", False)
        if source is not None and not (isinstance(source, str) and source):
            raise _corrupt(where, "source is not a digest")
        if not isinstance(delivered, bool):
            raise _corrupt(where, "delivered is not true or false")
        at_clear, run_started, run_clears = (
            raw.get("delivered_at_clear"),
            raw.get("run_started"),
            raw.get("run_clears"),
        )
        for name, number in (("delivered_at_clear", at_clear), ("run_clears", run_clears)):
            if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
                raise _corrupt(where, f"{name} is not a number")
        if run_started is not None and not isinstance(run_started, str):
            raise _corrupt(where, "run_started is not a time")
        return cls(
            fingerprint=fingerprint,
            model=model,
            intent_at=intent_at,
            prediction_id=prediction_id,
            source=source,
            last_attempt_at=None if last is None else _stored_time(last, "last_attempt_at", where),
            delivered=delivered,
            delivered_at_clear=at_clear,
            run_started=run_started,
            run_clears=run_clears,
        )


def _utc_text(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds")


def _stored_time(value: Any, name: str, where: str) -> datetime:
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise _corrupt(where, f"{name} is not a time") from None
    if when.tzinfo is None:
        raise _corrupt(where, f"{name} has no time zone")
    return when


def _corrupt(where: str, why: str) -> MagiLedgerError:
    return MagiLedgerError(
        f"The ledger record at {where} cannot be read ({why}), so what this task already paid for "
        "is unknown and nothing is submitted. Fix: check the task's earlier logs and your WaveSpeed "
        "predictions, then delete that record to submit afresh."
    )


@dataclass(frozen=True)
class Claim:
    """Which map index holds a prediction (``claim-<id>``): ``waiting``, it deferred with it;
    ``at``, when the claim was written. ``map_index`` is None when the record does not say."""

    map_index: int | None
    clears: int | None
    waiting: bool
    at: str | None

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> Claim:
        index, clears, at = raw.get("map_index"), raw.get("clears"), raw.get("at")
        return cls(
            index if isinstance(index, int) and not isinstance(index, bool) else None,
            clears if isinstance(clears, int) and not isinstance(clears, bool) else None,
            raw.get("waiting") is True,
            at if isinstance(at, str) else None,
        )


class Stamped(Protocol):
    """A record stamped with its run's start and clear_number (see TaskIdentity)."""

    @property
    def run_started(self) -> str | None: ...

    @property
    def run_clears(self) -> int | None: ...


class LedgerStore(Protocol):
    """Where records live. ``read`` returns None only when there is provably no record."""

    def read(self, name: str) -> str | None: ...

    def write(self, name: str, text: str) -> None: ...

    def delete(self, name: str) -> None: ...

    def where(self, name: str) -> str:
        """A person's description of the record's place, for error messages."""
        ...


class Ledger:
    """One task identity's records in one store; ``record`` names the one used by default.

    A generate task keeps one record; a long video keeps one per scene and hands each scene's
    steps the ledger :meth:`for_record` gives, so those steps are the generate task's own.

    ``mirrors`` get a copy of every write (best effort: the primary store is the truth), and
    ``fallbacks`` are read when the primary store has no record: together they make a record
    findable wherever an earlier try wrote it (``ledger_path`` switched on, off or moved between
    tries; Variables before an upgrade to 3.3's task state store). A fallback pair's time, when
    set, drops records whose intent is older (written by a deleted run of the same run id).
    """

    def __init__(
        self,
        store: LedgerStore,
        identity: TaskIdentity,
        record: str = DEFAULT_RECORD,
        *,
        mirrors: Sequence[LedgerStore] = (),
        fallbacks: Sequence[tuple[LedgerStore, datetime | None]] = (),
        by_inputs: LedgerStore | None = None,
    ) -> None:
        self.by_inputs = by_inputs  # mapped tasks: paid records by inputs, shared by map indexes
        self.store = store
        self.identity = identity
        self.record = record
        self.mirrors = tuple(mirrors)
        self.fallbacks = tuple(fallbacks)
        self.found_in: str | None = None  # where the last read found its record, if not the primary
        # Unix time of the records' times: the operator sets WaveSpeed's clock (its ``Date``), so
        # a look-up compares them with the history's times and the settle on one clock.
        self.clock: Callable[[], float] = time.time

    def for_record(self, name: str) -> Ledger:
        """The same ledger, defaulting to the record ``name`` (e.g. ``"scene-3"``)."""
        ledger = Ledger(
            self.store,
            self.identity,
            name,
            mirrors=self.mirrors,
            fallbacks=self.fallbacks,
            by_inputs=self.by_inputs,
        )
        ledger.clock = self.clock
        return ledger

    def where(self, name: str | None = None) -> str:
        return self.store.where(name or self.record)

    def read(self, name: str | None = None) -> LedgerRecord | None:
        name = name or self.record
        self.found_in = None
        text = self.store.read(name)
        if text is not None:
            record = LedgerRecord.from_json(text, where=self.where(name))
            if not self.from_a_deleted_run(record, self.store, name):
                return record
        for store, not_before in self.fallbacks:
            text = store.read(name)
            if text is None:
                continue
            record = LedgerRecord.from_json(text, where=store.where(name))
            if not_before is not None and record.intent_at < not_before:
                continue  # a deleted run's record under the same run id: not this run's
            if self.from_a_deleted_run(record, store, name):
                continue
            self.found_in = store.where(name)
            return record
        return None

    def from_a_deleted_run(self, record: Stamped, store: LedgerStore, name: str) -> bool:
        """True for a record a deleted DAG run of the same run id and run_after wrote: its run
        started at another time and this run was not cleared since (a clear restarts a finished
        run and raises clear_number; a retry changes neither). A store scoped to the run's
        database row (3.3's task state store, ``exact_run``) needs no such check."""
        run = self.identity
        if getattr(store, "exact_run", False):
            return False
        if not (record.run_started and run.run_started) or record.run_started == run.run_started:
            return False
        if (
            record.run_clears is not None
            and run.run_clears is not None
            and run.run_clears > record.run_clears
        ):
            return False
        log.warning(
            "Ignoring the ledger record at %s: an earlier DAG run with this run id wrote it (that run "
            "started %s, this one %s, not cleared since).",
            store.where(name),
            record.run_started,
            run.run_started,
        )
        return True

    def _write(self, name: str, text: str) -> None:
        self.store.write(name, text)
        for mirror in self.mirrors:
            try:
                mirror.write(name, text)
            except Exception as error:  # the primary holds the record; a copy is a convenience
                log.warning("The ledger's copy at %s was not written: %s", mirror.where(name), error)

    def write_intent(
        self, fingerprint: str, model: str, name: str | None = None, *, source: str | None = None
    ) -> LedgerRecord:
        """Before the POST: if this write fails, nothing has been sent (the error is retryable)."""
        record = LedgerRecord(
            fingerprint,
            model,
            self._now(),
            source=source,
            run_started=self.identity.run_started,
            run_clears=self.identity.run_clears,
        )
        self._write(name or self.record, record.to_json())
        return record

    def read_text(self, name: str) -> str | None:
        """Another record of this task (e.g. ``rendering``) as stored, wherever an earlier try
        wrote it: the primary store first, then the fallbacks."""
        self.found_in = None
        text = self.store.read(name)
        if text is not None:
            return text
        for store, not_before in self.fallbacks:
            if not_before is not None:  # keyed as before run_after: no version wrote these there
                continue
            text = store.read(name)
            if text is not None:
                self.found_in = store.where(name)
                return text
        return None

    def write_text(self, name: str, text: str) -> None:
        """Write another record of this task (its mirrors get a copy, as for every record)."""
        self._write(name, text)

    def write_attempt(self, record: LedgerRecord, name: str | None = None) -> LedgerRecord:
        """Before a resend of the same submit (after a 429 or a connection never made): a later
        look-up then searches the history up to past this attempt."""
        attempt = replace(record, last_attempt_at=self._now())
        self._write(name or self.record, attempt.to_json())
        return attempt

    def write_paid(self, record: LedgerRecord, prediction_id: str, name: str | None = None) -> LedgerRecord:
        """After the POST named an id: a failure here must fail the run loudly, naming the id."""
        name = name or self.record
        paid = record.paid(prediction_id)
        try:
            self._write(name, paid.to_json())
        except Exception as error:
            raise MagiLedgerError(
                f"Prediction {prediction_id} was submitted (and is billed), but recording it in the "
                f"ledger at {self.where(name)} failed: {type(error).__name__}: {error}. The task stops "
                "here so that no retry pays again: wait for this prediction with MagiPredictionSensor "
                f"(prediction_id={prediction_id!r}), or delete the record to submit afresh.",
                prediction_id=prediction_id,
            ) from error
        return paid

    def write_delivered(
        self, record: LedgerRecord, clear_number: int | None, name: str | None = None
    ) -> None:
        """The task succeeded with this record's prediction (best effort: it is done and paid)."""
        delivered = replace(record, delivered=True, delivered_at_clear=clear_number)
        try:
            self._write(name or self.record, delivered.to_json())
        except Exception as error:
            log.warning("The ledger could not mark %s as delivered: %s", record.prediction_id, error)

    def read_by_inputs(self, fingerprint: str) -> list[LedgerRecord]:
        """Every paid record for these inputs written by any map index of this task and run,
        oldest first: one per duplicate of the inputs in the mapped list."""
        if self.by_inputs is None:
            return []
        name = _by_inputs_name(fingerprint)
        text = self.by_inputs.read(name)
        if text is None:
            return []
        where = self.by_inputs.where(name)
        records = [LedgerRecord.from_json(one, where=where) for one in _paid_texts(text, where)]
        return [record for record in records if not self.from_a_deleted_run(record, self.by_inputs, name)]

    def write_by_inputs(self, record: LedgerRecord) -> None:
        """Share a paid record with the other map indexes (best effort: this task's own record
        holds it): a mapped list that comes back in another order then pays for nothing again.
        Each duplicate of the inputs keeps its own prediction in the list."""
        if self.by_inputs is None or record.prediction_id is None:
            return
        name = _by_inputs_name(record.fingerprint)
        try:
            text = self.by_inputs.read(name)
            kept = [] if text is None else _paid_texts(text, self.by_inputs.where(name))
            kept = [one for one in kept if json.loads(one).get("prediction_id") != record.prediction_id]
            paid = [json.loads(one) for one in [*kept, record.to_json()]]
            self.by_inputs.write(
                name,
                json.dumps(
                    {"v": BY_INPUTS_VERSION, "at": _utc_text(self._now()), "paid": paid},
                    separators=(",", ":"),
                ),
            )
        except Exception as error:
            log.warning("The ledger's record by inputs was not written: %s", error)

    def claimed_by_another(
        self,
        prediction_id: str,
        holds: Callable[[int, bool], bool] | None = None,
        *,
        by_anyone: bool = False,
    ) -> bool:
        """Whether another map index holds ``prediction_id``: two map indexes of one mapped list
        never deliver one prediction. ``holds(map_index, waiting)`` says whether the claimant holds
        it for real (Airflow's state of it; ``waiting``: it deferred with it) or only on paper (it
        gives it up at its next first entry); unknown, every claim of this round counts, and with
        ``by_anyone`` every claim at all (the re-read after writing one's own)."""
        claim = self.claim(prediction_id)
        if claim is None or claim.map_index in (None, self.identity.map_index):
            return False  # unclaimed, this map index's own, or unreadable (the ids are by inputs)
        if by_anyone:
            return True
        if holds is not None:
            return holds(claim.map_index, claim.waiting)
        return claim.clears == self.identity.run_clears

    def claim(self, prediction_id: str) -> Claim | None:
        """The claim of ``prediction_id`` as written, or None (none, or not JSON)."""
        if self.by_inputs is None:
            return None
        text = self.by_inputs.read(_claim_name(prediction_id))
        try:
            raw = None if text is None else json.loads(text)
        except ValueError:
            return None
        return Claim.of(raw) if isinstance(raw, dict) else None

    def release_claim(self, prediction_id: str) -> None:
        """This map index no longer holds ``prediction_id`` (its inputs moved): another may take
        it. Only its own claim is released (best effort)."""
        claim = self.claim(prediction_id)
        if self.by_inputs is None or claim is None or claim.map_index != self.identity.map_index:
            return
        try:
            self.by_inputs.delete(_claim_name(prediction_id))
        except Exception as error:
            log.warning("The ledger's claim of %s was not released: %s", prediction_id, error)

    def write_claim(self, prediction_id: str, *, strict: bool = False, waiting: bool = False) -> None:
        """Hold ``prediction_id`` for this map index (``waiting``: the task defers with it). Best
        effort, unless ``strict`` (a prediction taken from another map index: unclaimed, it could
        be delivered twice)."""
        if self.by_inputs is None:
            return
        claim = {
            "map_index": self.identity.map_index,
            "clears": self.identity.run_clears,
            "waiting": waiting,
            "at": _utc_text(self._now()),  # its write time, for ledger_prune
        }
        try:
            self.by_inputs.write(_claim_name(prediction_id), json.dumps(claim))
        except Exception as error:
            if strict:
                raise MagiLedgerError(
                    f"Prediction {prediction_id} was taken from another map index, but claiming it at "
                    f"{self.by_inputs.where(_claim_name(prediction_id))} failed: {type(error).__name__}: "
                    f"{error}. The task stops before delivering it, so it is not delivered twice.",
                    prediction_id=prediction_id,
                ) from error
            log.warning("The ledger's claim of %s was not written: %s", prediction_id, error)

    def forget(self, name: str | None = None) -> None:
        name = name or self.record
        self.store.delete(name)
        for mirror in self.mirrors:
            with contextlib.suppress(Exception):
                mirror.delete(name)

    def _now(self) -> datetime:
        now = datetime.fromtimestamp(self.clock(), UTC)
        return now.replace(microsecond=now.microsecond // 1000 * 1000)

    def now_text(self) -> str:
        """A write time as the records carry it (``"at"``, read by ``ledger_prune``)."""
        return _utc_text(self._now())


def is_cleared_since_delivery(record: LedgerRecord, clear_number: int | None) -> bool:
    """The record's video was delivered, and this is a later clear of the run (where known)."""
    if not record.delivered:
        return False
    if record.delivered_at_clear is None or clear_number is None:
        return True
    return clear_number > record.delivered_at_clear


def _by_inputs_name(fingerprint: str) -> str:
    return f"inputs-{fingerprint[:40]}"


def _claim_name(prediction_id: str) -> str:
    return f"claim-{prediction_id}"


# The records by inputs: a list of paid records (version 2); version 1 held one record alone.
BY_INPUTS_VERSION = 2


def _paid_texts(text: str, where: str) -> list[str]:
    """The paid records' texts a record by inputs holds (one, as an older version wrote it)."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise _corrupt(where, "not JSON") from None
    if isinstance(raw, dict) and raw.get("v") == BY_INPUTS_VERSION and isinstance(raw.get("paid"), list):
        return [json.dumps(one) for one in raw["paid"]]
    return [text]


def template_source(values: Mapping[str, Any]) -> str:
    """A digest of template fields before rendering (the DAG's code, not what it rendered to)."""
    text = json.dumps(values, sort_keys=True, default=_stable_text, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _stable_text(value: Any) -> str:
    """Objects by their text, without the memory address a default repr carries."""
    return f"{type(value).__qualname__}:{re.sub(r' at 0x[0-9a-f]+', '', str(value))}"


# ------------------------------------------------------------------ the retry decision

SUBMIT = "submit"  # nothing usable recorded: submit
REATTACH = "reattach"  # a paid prediction for these inputs: ask the API how it is
LOOK_UP = "look_up"  # an intent without an id for these inputs: search the history first


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    record: LedgerRecord | None = None


def decide(
    record: LedgerRecord | None,
    fingerprint: str,
    source: str | None = None,
    *,
    regenerate: bool = False,
    clear_number: int | None = None,
) -> Decision:
    """What a try does with what the ledger holds (before asking WaveSpeed anything).

    ``source`` is the digest of the template fields before rendering, passed only for a record
    written before the rendering rule (``paying.rendering``, which puts self-varying values back so
    the fingerprints match): then inputs that rendered differently from an unchanged source are
    the same logical inputs, as that version decided. ``regenerate`` pays for a new video when
    the recorded one was delivered (a clear of a successful task, on purpose): in a later clear
    of the DAG run than the one that delivered it (``clear_number``), where both are known; a
    retry never regenerates.
    """
    if record is None:
        return Decision(SUBMIT, "no earlier submit is recorded")
    if regenerate and is_cleared_since_delivery(record, clear_number):
        return Decision(
            SUBMIT,
            f"prediction {record.prediction_id} was delivered by an earlier run of this task and "
            "regenerate_on_clear is set: paying for a new video on purpose",
            record,
        )
    rerendered = record.fingerprint != fingerprint and source is not None and record.source == source
    if record.fingerprint != fingerprint and not rerendered:
        return Decision(
            SUBMIT,
            f"the recorded submit ({record.prediction_id or 'intent only'}) was made for other inputs "
            "(the model, prompt, image, seed or extra_inputs changed since)",
            record,
        )
    note = (
        " (the inputs rendered differently this time, e.g. a random seed, now() or a presigned URL, "
        "but the template source is unchanged: the same task)"
        if rerendered
        else ""
    )
    if record.prediction_id is not None:
        return Decision(
            REATTACH, f"prediction {record.prediction_id} was paid for these inputs{note}", record
        )
    return Decision(
        LOOK_UP,
        f"a submit was about to be sent at {record.sent_until.isoformat(timespec='seconds')} but no "
        f"prediction id was recorded (the worker died mid-submit, or the answer was lost){note}",
        record,
    )
