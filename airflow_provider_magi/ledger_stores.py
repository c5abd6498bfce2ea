"""Where the ledger's records live: three small adapters, one chosen per task by :func:`open_ledger`.

- Airflow 3.3+: the task state store (AIP-103), made for exactly this; kept after success and
  expired by Airflow's own ``[state_store] default_retention_days``.
- Airflow 3.0-3.2: Airflow Variables. They are the one thing the Task SDK lets a task write that
  lives in the metadata database (so it survives a retry on another Celery worker, a new pod, a
  restarted scheduler) and that the next try can read back; XCom cannot do it, since Airflow
  clears a task's XComs when a new try starts. Each record is one Variable, keyed by a digest of
  the task's identity, with a description a person can read.
- Any version, opt in: an ``ObjectStoragePath`` (``s3://``, ``gs://``, ``file://``...) named by the
  connection extra ``ledger_path``, for teams that want the records in their own bucket.

Every write is checked (Airflow 3.0's ``Variable.set`` logs a failed write and returns), and every
read failure is an error: a ledger that cannot be read is never taken for an empty one.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import quote

from airflow_provider_magi.exceptions import MagiLedgerError, MagiLedgerUnavailableError
from airflow_provider_magi.ledger import DEFAULT_RECORD, RECORD_VERSION, Ledger, LedgerStore, TaskIdentity

VARIABLE_PREFIX = "magi_ledger."
TASK_STATE_PREFIX = "magi_ledger."
# Where the provider kept {id, fingerprint} on Airflow 3.3 before the ledger: still read, so a
# retry that straddles an upgrade reattaches too.
LEGACY_TASK_STATE_KEY = "magi_prediction_id"


def open_ledger(context: Mapping[str, Any], *, ledger_path: str | None = None) -> Ledger:
    """The ledger of the running task: object storage if asked, else the best store Airflow has.

    With ``ledger_path``, Airflow's own store keeps a copy of every record, so a try after
    ``ledger_path`` is removed or moved still finds it. A try that finds nothing in its store
    reads the others before paying: Airflow's own store (``ledger_path`` switched on between
    tries), Variables under 3.3's task state store (a task that straddled the upgrade), and
    records keyed as before a run's creation was part of the key (only if written after this run
    was created: an older one belongs to a deleted run of the same run id).
    """
    identity = TaskIdentity.of(context)
    accessor = context.get("task_state_store")
    if accessor is not None:  # 3.3+: the task state store lives and dies with this very run
        identity = replace(identity, run_after=f"run-{_run_token(accessor)}")
    airflow_store: LedgerStore = (
        TaskStateLedgerStore(accessor) if accessor is not None else VariableLedgerStore(identity)
    )
    fallbacks: list[tuple[LedgerStore, datetime | None]] = []
    mirrors: list[LedgerStore] = []
    store: LedgerStore
    if ledger_path:
        store = ObjectStorageLedgerStore(ledger_path, identity)
        mirrors.append(airflow_store)
        fallbacks.append((airflow_store, None))
    else:
        store = airflow_store
    plain = TaskIdentity.of(context)
    if accessor is not None and plain.run_after is not None:
        fallbacks.append((VariableLedgerStore(plain), None))  # written on 3.2, before the upgrade
    created = None if plain.run_after is None else datetime.fromisoformat(plain.run_after)
    fallbacks.append((VariableLedgerStore(plain.without_run_after()), created))
    if ledger_path:
        fallbacks.append((ObjectStorageLedgerStore(ledger_path, plain.without_run_after()), created))
    by_inputs: LedgerStore | None = None
    if identity.map_index >= 0:  # shared by every map index: Variables, or the ledger_path
        unmapped = plain.unmapped()  # (each map index has its own task state store, and token)
        by_inputs = (
            ObjectStorageLedgerStore(ledger_path, unmapped) if ledger_path else VariableLedgerStore(unmapped)
        )
    return Ledger(store, identity, mirrors=mirrors, fallbacks=fallbacks, by_inputs=by_inputs)


RUN_TOKEN_KEY = TASK_STATE_PREFIX + "run"


def _run_token(accessor: Any) -> str:
    """A random name for this run, kept in its task state store (keyed by the run's database id,
    so a run deleted and created again under the same run id gets a new one)."""
    try:
        token = accessor.get(RUN_TOKEN_KEY)
        if not isinstance(token, str) or not token:
            token = uuid.uuid4().hex
            accessor.set(RUN_TOKEN_KEY, token)
    except Exception as error:
        raise MagiLedgerUnavailableError(f"Reading this task's task state store failed: {error}") from error
    return token


class TaskStateLedgerStore:
    """Airflow 3.3+'s task state store, scoped by Airflow to this task instance across tries."""

    exact_run = True  # keyed by the run's database id: a run made again starts empty

    def __init__(self, accessor: Any) -> None:
        self.accessor = accessor

    def where(self, name: str) -> str:
        return f"this task's task state store, key {TASK_STATE_PREFIX + name!r}"

    def read(self, name: str) -> str | None:
        try:
            value = self.accessor.get(TASK_STATE_PREFIX + name)
            if value is None and name == DEFAULT_RECORD:
                return _from_legacy(self.accessor.get(LEGACY_TASK_STATE_KEY))
        except Exception as error:
            raise MagiLedgerUnavailableError(f"Reading {self.where(name)} failed: {error}") from error
        if value is None:
            return None
        if not isinstance(value, str):
            raise MagiLedgerError(f"{self.where(name)} holds {type(value).__name__}, not a ledger record")
        return value

    def write(self, name: str, text: str) -> None:
        try:
            self.accessor.set(TASK_STATE_PREFIX + name, text)
        except Exception as error:
            raise MagiLedgerUnavailableError(f"Writing {self.where(name)} failed: {error}") from error

    def delete(self, name: str) -> None:
        self.accessor.delete(TASK_STATE_PREFIX + name)


def _from_legacy(value: Any) -> str | None:
    """A record in the shape the provider stored before the ledger ({id, fingerprint}), if any."""
    if not isinstance(value, dict) or not value.get("id") or not value.get("fingerprint"):
        return None
    return json.dumps(
        {
            "v": RECORD_VERSION,
            "fingerprint": value["fingerprint"],
            "model": "unknown (recorded before the ledger)",
            "intent_at": "1970-01-01T00:00:00+00:00",
            "prediction_id": value["id"],
        }
    )


class VariableLedgerStore:
    """Airflow Variables through the Task SDK: durable across workers on Airflow 3.0-3.2."""

    def __init__(self, identity: TaskIdentity) -> None:
        self.identity = identity

    def key(self, name: str) -> str:
        # Variable keys are at most 250 characters; DAG, task and run ids can each be longer.
        digest = hashlib.sha256(json.dumps([*_identity_parts(self.identity), name]).encode()).hexdigest()
        return VARIABLE_PREFIX + digest[:40]

    def where(self, name: str) -> str:
        return f"Airflow Variable {self.key(name)!r} ({self.identity.describe()}, record {name})"

    def read(self, name: str) -> str | None:
        from airflow.sdk import Variable

        try:
            value = Variable.get(self.key(name), default=None)
        except Exception as error:
            raise MagiLedgerUnavailableError(f"Reading {self.where(name)} failed: {error}") from error
        if value is not None and not isinstance(value, str):
            raise MagiLedgerError(f"{self.where(name)} holds {type(value).__name__}, not a ledger record")
        return value

    def write(self, name: str, text: str) -> None:
        from airflow.sdk import Variable

        key = self.key(name)
        description = f"airflow-provider-magi ledger: {self.identity.describe()}, record {name}"
        try:
            Variable.set(key, text, description=description)
            stored = Variable.get(key, default=None)
        except Exception as error:
            raise MagiLedgerUnavailableError(f"Writing {self.where(name)} failed: {error}") from error
        if stored != text:  # Airflow 3.0 logs a refused write and carries on: read it back
            raise MagiLedgerUnavailableError(
                f"Writing {self.where(name)} did not take (read back {stored!r:.80})"
            )

    def delete(self, name: str) -> None:
        from airflow.sdk import Variable

        Variable.delete(self.key(name))


class ObjectStorageLedgerStore:
    """One small JSON object per record under ``ledger_path``, replaced whole on each write."""

    def __init__(self, ledger_path: str, identity: TaskIdentity) -> None:
        self.base = ledger_path.rstrip("/")
        self.identity = identity

    def url(self, name: str) -> str:
        parts = [quote(part, safe="") for part in _identity_parts(self.identity)]
        return "/".join([self.base, *parts, f"{quote(name, safe='')}.json"])

    def where(self, name: str) -> str:
        return self.url(name)

    def _path(self, name: str) -> Any:
        from airflow.sdk import ObjectStoragePath

        try:
            return ObjectStoragePath(self.url(name))
        except (ImportError, ValueError) as error:
            raise MagiLedgerError(
                f"ledger_path {self.base!r} cannot be opened ({error}). Fix: install the filesystem "
                "package for its scheme (s3fs for s3://, gcsfs for gs://, adlfs for abfs://), or "
                "use file:// for a shared disk."
            ) from error

    def read(self, name: str) -> str | None:
        path = self._path(name)
        try:
            if not path.exists():
                return None
            return str(path.read_text())
        except Exception as error:
            raise MagiLedgerUnavailableError(f"Reading {self.url(name)} failed: {error}") from error

    def write(self, name: str, text: str) -> None:
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staged = path.parent / f".{path.name}.{uuid.uuid4().hex}.part"
            staged.write_text(text)
            staged.rename(path)  # a reader sees the old record or the new one, never half of one
            stored = path.read_text()
        except Exception as error:
            raise MagiLedgerUnavailableError(f"Writing {self.url(name)} failed: {error}") from error
        if stored != text:
            raise MagiLedgerUnavailableError(f"Writing {self.url(name)} did not take")

    def delete(self, name: str) -> None:
        path = self._path(name)
        if path.exists():
            path.unlink()


def _identity_parts(identity: TaskIdentity) -> list[str]:
    """The parts that name a task run's records; ``run_after`` (when known) tells a run deleted
    and created again under the same run id from the one before."""
    run = identity.run_id if identity.run_after is None else f"{identity.run_id}@{identity.run_after}"
    return [identity.dag_id, run, identity.task_id, str(identity.map_index)]
