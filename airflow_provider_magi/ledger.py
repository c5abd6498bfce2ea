"""What a task has paid for: one record per task identity, written before and after each submit.

XCom is cleared at the start of every try, so it cannot remember a paid prediction across a
retry. The ledger can: it is keyed by what stays the same across tries (DAG, task, run, map
index; never the try number), and it is written in two phases:

1. **intent**, just before the submit POST: the inputs' fingerprint, the model, the time.
2. **paid**, the moment an answer names a prediction id: the same record plus that id.

A retry reads the record back and decides (:func:`decide`): reattach to the paid prediction, look
an intent without an id up in WaveSpeed's history, or submit afresh. The records hold ids and
digests only, never the API key or the inputs themselves.

The logic here is pure; the stores it writes through are the small adapters in
``airflow_provider_magi.ledger_stores``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from airflow_provider_magi.api import is_valid_prediction_id
from airflow_provider_magi.exceptions import MagiLedgerError

RECORD_VERSION = 1
# The record every generate task keeps; a long video keeps one per scene ("scene-1", ...).
DEFAULT_RECORD = "prediction"


@dataclass(frozen=True)
class TaskIdentity:
    """What names one task's work across all of its tries (and a manual clear)."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1

    @classmethod
    def of(cls, context: Mapping[str, Any]) -> TaskIdentity:
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        return cls(
            dag_id=str(ti.dag_id),
            task_id=str(ti.task_id),
            run_id=str(ti.run_id),
            map_index=-1 if map_index is None else int(map_index),
        )

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

    @property
    def is_paid(self) -> bool:
        return self.prediction_id is not None

    def paid(self, prediction_id: str) -> LedgerRecord:
        return replace(self, prediction_id=prediction_id)

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": RECORD_VERSION,
                "fingerprint": self.fingerprint,
                "model": self.model,
                "intent_at": self.intent_at.astimezone(UTC).isoformat(timespec="milliseconds"),
                "prediction_id": self.prediction_id,
            },
            ensure_ascii=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str, *, where: str) -> LedgerRecord:
        """Parse a stored record strictly: anything unexpected is corrupt, never "no record"."""
        try:
            raw = json.loads(text)
        except (TypeError, ValueError, RecursionError):
            raise _corrupt(where, "it is not JSON") from None
        if not isinstance(raw, dict) or raw.get("v") != RECORD_VERSION:
            raise _corrupt(where, f"expected a version {RECORD_VERSION} record")
        fingerprint, model, prediction_id = raw.get("fingerprint"), raw.get("model"), raw.get("prediction_id")
        if not isinstance(fingerprint, str) or not fingerprint or not isinstance(model, str) or not model:
            raise _corrupt(where, "fingerprint or model is missing")
        if prediction_id is not None and not (
            isinstance(prediction_id, str) and is_valid_prediction_id(prediction_id)
        ):
            raise _corrupt(where, "its prediction id is not a WaveSpeed id")
        try:
            intent_at = datetime.fromisoformat(str(raw.get("intent_at")))
        except ValueError:
            raise _corrupt(where, "intent_at is not a time") from None
        if intent_at.tzinfo is None:
            raise _corrupt(where, "intent_at has no time zone")
        return cls(fingerprint=fingerprint, model=model, intent_at=intent_at, prediction_id=prediction_id)


def _corrupt(where: str, why: str) -> MagiLedgerError:
    return MagiLedgerError(
        f"The ledger record at {where} cannot be read ({why}), so what this task already paid for "
        "is unknown and nothing is submitted. Fix: check the task's earlier logs and your WaveSpeed "
        "predictions, then delete that record to submit afresh."
    )


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
    """

    def __init__(self, store: LedgerStore, identity: TaskIdentity, record: str = DEFAULT_RECORD) -> None:
        self.store = store
        self.identity = identity
        self.record = record

    def for_record(self, name: str) -> Ledger:
        """The same ledger, defaulting to the record ``name`` (e.g. ``"scene-3"``)."""
        return Ledger(self.store, self.identity, name)

    def where(self, name: str | None = None) -> str:
        return self.store.where(name or self.record)

    def read(self, name: str | None = None) -> LedgerRecord | None:
        name = name or self.record
        text = self.store.read(name)
        return None if text is None else LedgerRecord.from_json(text, where=self.where(name))

    def write_intent(self, fingerprint: str, model: str, name: str | None = None) -> LedgerRecord:
        """Before the POST: if this write fails, nothing has been sent (the error is retryable)."""
        now = datetime.now(UTC)
        record = LedgerRecord(fingerprint, model, now.replace(microsecond=now.microsecond // 1000 * 1000))
        self.store.write(name or self.record, record.to_json())
        return record

    def write_paid(self, record: LedgerRecord, prediction_id: str, name: str | None = None) -> LedgerRecord:
        """After the POST named an id: a failure here must fail the run loudly, naming the id."""
        name = name or self.record
        paid = record.paid(prediction_id)
        try:
            self.store.write(name, paid.to_json())
        except Exception as error:
            raise MagiLedgerError(
                f"Prediction {prediction_id} was submitted (and is billed), but recording it in the "
                f"ledger at {self.where(name)} failed: {type(error).__name__}: {error}. The task stops "
                "here so that no retry pays again: wait for this prediction with MagiPredictionSensor "
                f"(prediction_id={prediction_id!r}), or delete the record to submit afresh.",
                prediction_id=prediction_id,
            ) from error
        return paid

    def forget(self, name: str | None = None) -> None:
        self.store.delete(name or self.record)


# ------------------------------------------------------------------ the retry decision

SUBMIT = "submit"  # nothing usable recorded: submit
REATTACH = "reattach"  # a paid prediction for these inputs: ask the API how it is
LOOK_UP = "look_up"  # an intent without an id for these inputs: search the history first


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    record: LedgerRecord | None = None


def decide(record: LedgerRecord | None, fingerprint: str) -> Decision:
    """What a try does with what the ledger holds (before asking WaveSpeed anything)."""
    if record is None:
        return Decision(SUBMIT, "no earlier submit is recorded")
    if record.fingerprint != fingerprint:
        return Decision(
            SUBMIT,
            f"the recorded submit ({record.prediction_id or 'intent only'}) was made for other inputs "
            "(the model, prompt, image, seed or extra_inputs changed since)",
            record,
        )
    if record.prediction_id is not None:
        return Decision(REATTACH, f"prediction {record.prediction_id} was paid for these inputs", record)
    return Decision(
        LOOK_UP,
        f"a submit was about to be sent at {record.intent_at.isoformat(timespec='seconds')} but no "
        "prediction id was recorded (the worker died mid-submit, or the answer was lost)",
        record,
    )
