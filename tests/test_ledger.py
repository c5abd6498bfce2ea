"""#20: never pay twice, on every Airflow 3. Each DAG test counts the paid submits the server saw.

The ``money`` tests run on every supported Airflow minor (``make test`` runs them on 3.0, 3.1,
3.2 and 3.3): on 3.3 the ledger lives in the task state store, on older releases in Variables.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_magi.exceptions import MagiLedgerError, MagiLedgerUnavailableError
from airflow_provider_magi.ledger import (
    LOOK_UP,
    REATTACH,
    SUBMIT,
    Ledger,
    LedgerRecord,
    TaskIdentity,
    decide,
)
from airflow_provider_magi.ledger_stores import (
    ObjectStorageLedgerStore,
    TaskStateLedgerStore,
    VariableLedgerStore,
)
from airflow_provider_magi.testing import LocalWaveSpeedServer
from airflow_provider_magi.testing.faults import Fault
from tests.helpers import CANARY_KEY, DAG_TEST_LOGS_EXCEPTIONS, connection_json, run_dag, task_instance, xcom

# Every test here proves a rule about what is paid for: `make test` runs them on every Airflow minor.
pytestmark = [pytest.mark.money, pytest.mark.usefixtures("quick_settle")]

IDENTITY = TaskIdentity(dag_id="d", task_id="t", run_id="manual__2026-12-01T00:00:00+00:00")
FINGERPRINT = "f" * 64


def paid_submits(server: LocalWaveSpeedServer) -> int:
    """Predictions the server created (what WaveSpeed bills), checked against the POSTs it saw."""
    created = len(server.app.predictions)
    assert server.count("submit") >= created
    return created


# ---------------------------------------------------------------- records and the decision


def test_a_record_round_trips_and_holds_no_more_than_ids_and_digests() -> None:
    when = datetime(2026, 12, 1, 7, 56, 20, 163000, tzinfo=UTC)
    record = LedgerRecord(FINGERPRINT, "wavespeed-ai/magi-1-24b", when).paid("abc123")
    text = record.to_json()
    assert set(json.loads(text)) == {"v", "fingerprint", "model", "intent_at", "prediction_id"}
    assert LedgerRecord.from_json(text, where="here") == record
    assert len(text) < 200


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        '{"v": 2}',
        json.dumps({"v": 1, "fingerprint": "", "model": "m", "intent_at": "2026-01-01T00:00:00+00:00"}),
        json.dumps({"v": 1, "fingerprint": "f", "model": "m", "intent_at": "yesterday"}),
        json.dumps({"v": 1, "fingerprint": "f", "model": "m", "intent_at": "2026-01-01T00:00:00"}),
        json.dumps(
            {
                "v": 1,
                "fingerprint": "f",
                "model": "m",
                "intent_at": "2026-01-01T00:00:00Z",
                "prediction_id": 7,
            }
        ),
        json.dumps(
            {
                "v": 1,
                "fingerprint": "f",
                "model": "m",
                "intent_at": "2026-01-01T00:00:00Z",
                "prediction_id": "paid-\ud800",
            }
        ),
    ],
)
def test_a_corrupt_record_is_an_error_never_no_record(text: str) -> None:
    with pytest.raises(MagiLedgerError, match=r"cannot be read.*nothing is submitted"):
        LedgerRecord.from_json(text, where="the test store")


def test_the_decision_for_each_kind_of_record() -> None:
    now = datetime.now(UTC)
    intent = LedgerRecord(FINGERPRINT, "m", now)
    assert decide(None, FINGERPRINT).action == SUBMIT
    assert decide(intent, "other").action == SUBMIT
    assert decide(intent.paid("p1"), "other").action == SUBMIT
    assert decide(intent, FINGERPRINT).action == LOOK_UP
    assert decide(intent.paid("p1"), FINGERPRINT).action == REATTACH


# ---------------------------------------------------------------- stores


def test_the_object_storage_store_replaces_a_record_whole(tmp_path: Path) -> None:
    store = ObjectStorageLedgerStore(f"file://{tmp_path}/ledger", IDENTITY)
    ledger = Ledger(store, IDENTITY)
    assert ledger.read() is None
    intent = ledger.write_intent(FINGERPRINT, "m")
    ledger.write_paid(intent, "p1")
    assert ledger.read() == intent.paid("p1")
    (record_file,) = (tmp_path / "ledger").rglob("*.json")
    assert "manual__2026-12-01T00%3A00%3A00%2B00%3A00" in str(record_file)  # one folder per run
    assert not [p for p in (tmp_path / "ledger").rglob("*") if p.name.endswith(".part")]


def test_an_object_store_that_cannot_be_read_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "ledger").write_text("a file where the folder should be")
    store = ObjectStorageLedgerStore(f"file://{tmp_path}/ledger", IDENTITY)
    with pytest.raises(MagiLedgerUnavailableError):
        store.write("prediction", "{}")


class BrokenAccessor:
    def get(self, key: str) -> Any:
        raise RuntimeError("API server unreachable")

    def set(self, key: str, value: Any) -> None:
        raise RuntimeError("API server unreachable")


def test_a_task_state_store_that_does_not_answer_is_an_error_not_an_empty_ledger() -> None:
    ledger = Ledger(TaskStateLedgerStore(BrokenAccessor()), IDENTITY)
    with pytest.raises(MagiLedgerUnavailableError, match="unreachable"):
        ledger.read()


def test_a_failed_id_write_fails_loudly_with_the_id() -> None:
    ledger = Ledger(TaskStateLedgerStore(BrokenAccessor()), IDENTITY)
    record = LedgerRecord(FINGERPRINT, "m", datetime.now(UTC))
    with pytest.raises(MagiLedgerError, match="Prediction p1 was submitted") as raised:
        ledger.write_paid(record, "p1")
    assert raised.value.prediction_id == "p1"


def test_variable_keys_fit_airflow_and_differ_per_task_and_run() -> None:
    long = TaskIdentity(dag_id="d" * 250, task_id="t" * 250, run_id="r" * 250, map_index=3)
    keys = {
        VariableLedgerStore(identity).key("prediction")
        for identity in (IDENTITY, long, TaskIdentity("d", "t", "other-run"), TaskIdentity("d", "t2", "r"))
    }
    assert len(keys) == 4
    assert all(len(key) <= 250 and key.startswith("magi_ledger.") for key in keys)


# ---------------------------------------------------------------- retries on every Airflow 3


@pytest.mark.parametrize("mode", ["deferrable", "sync"])
def test_a_retry_after_dying_right_after_the_submit_pays_once(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs, mode: str
) -> None:
    dag_run = run_dag(dag_bag, f"magi_test_dies_after_submit_{mode}")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "generate").try_number == 2
    assert paid_submits(magi_conn) == 1
    assert magi_conn.count("submit") == 1
    (prediction_id,) = magi_conn.app.predictions
    assert xcom(dag_run, "generate")["prediction_id"] == prediction_id
    assert f"prediction {prediction_id} was paid for these inputs; not submitting again" in task_logs()


def test_a_retry_after_poll_failures_past_the_hooks_retries_pays_once(
    dag_bag, magi_conn: LocalWaveSpeedServer
) -> None:
    # The first try's poll fails 4 times (1 + max_retries=3): that try fails, the next reattaches.
    magi_conn.set_faults([Fault(route="result", kind="status", status=503, times=4)])
    dag_run = run_dag(dag_bag, "magi_test_transient_poll_failure")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "generate").try_number == 2
    assert magi_conn.count("submit") == 1


@pytest.mark.parametrize("mode", ["deferrable", "sync"])
def test_killed_between_the_post_and_the_ledger_the_history_names_the_prediction(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs, mode: str
) -> None:
    dag_run = run_dag(dag_bag, f"magi_test_dies_before_ledger_id_{mode}")
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "generate").try_number == 2  # the second try stops, unretried
    assert magi_conn.count("submit") == 1
    (prediction_id,) = magi_conn.app.predictions
    candidates = xcom(dag_run, "generate", key="prediction_candidates")
    assert [c["prediction_id"] for c in candidates] == [prediction_id]
    if DAG_TEST_LOGS_EXCEPTIONS:
        assert "Nothing is submitted again" in task_logs()
        assert prediction_id in task_logs()


@pytest.mark.parametrize("mode", ["deferrable", "sync"])
def test_killed_between_the_post_and_the_ledger_attaches_when_asked(
    dag_bag, magi_conn: LocalWaveSpeedServer, mode: str
) -> None:
    dag_run = run_dag(dag_bag, f"magi_test_dies_before_ledger_id_{mode}_attach")
    assert dag_run.state == "success"
    assert magi_conn.count("submit") == 1
    (prediction_id,) = magi_conn.app.predictions
    assert xcom(dag_run, "generate")["prediction_id"] == prediction_id


@pytest.mark.parametrize("mode", ["deferrable", "sync"])
def test_an_intent_that_never_left_is_submitted_once_after_the_history_says_so(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs, mode: str
) -> None:
    dag_run = run_dag(dag_bag, f"magi_test_dies_before_post_{mode}")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "generate").try_number == 2
    assert magi_conn.count("submit") == 1
    assert magi_conn.count("history") >= 1  # asked before paying
    assert "history lists no prediction" in task_logs()


def test_a_corrupt_record_stops_the_retry_without_paying_again(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs
) -> None:
    dag_run = run_dag(dag_bag, "magi_test_dies_corrupt_record_deferrable")
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "generate").try_number == 2
    assert magi_conn.count("submit") == 1
    assert not DAG_TEST_LOGS_EXCEPTIONS or "cannot be read" in task_logs()


def test_a_store_that_refuses_the_id_fails_the_run_naming_the_paid_prediction(
    dag_bag, magi_conn: LocalWaveSpeedServer, task_logs
) -> None:
    dag_run = run_dag(dag_bag, "magi_test_dies_paid_write_fails_sync")
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "generate").try_number == 1  # not retried: a retry would pay
    assert magi_conn.count("submit") == 1
    (prediction_id,) = magi_conn.app.predictions
    assert not DAG_TEST_LOGS_EXCEPTIONS or f"Prediction {prediction_id} was submitted" in task_logs()


def test_the_ledger_can_live_in_object_storage(
    dag_bag, server: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ledger_path = f"file://{tmp_path}/magi-ledger"
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server, ledger_path=ledger_path))
    dag_run = run_dag(dag_bag, "magi_test_dies_after_submit_sync")
    assert dag_run.state == "success"
    assert server.count("submit") == 1
    files = {path.name: path for path in (tmp_path / "magi-ledger").rglob("*.json")}
    assert set(files) == {"prediction.json", "rendering.json"}  # the paid record, the try's rendering
    record = json.loads(files["prediction.json"].read_text())
    assert record["prediction_id"] == next(iter(server.app.predictions))
    assert not any(CANARY_KEY in path.read_text() for path in files.values())


def test_pruning_deletes_only_readable_records_older_than_the_cutoff(dag_bag) -> None:
    from datetime import timedelta

    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_provider_magi.ledger_prune import main, prune

    now = datetime.now(UTC)
    old, new, garbage = ("magi_ledger." + digit * 40 for digit in "abc")  # keys as the store makes them
    rows = {
        old: LedgerRecord(FINGERPRINT, "m", now - timedelta(days=10)).paid("p1").to_json(),
        new: LedgerRecord(FINGERPRINT, "m", now - timedelta(days=1)).paid("p2").to_json(),
        garbage: "{not a record",
        "magiXledger.other": LedgerRecord(FINGERPRINT, "m", now - timedelta(days=10)).to_json(),
    }
    with create_session() as session:
        for key, value in rows.items():
            session.add(Variable(key=key, val=value))
    deleted, unreadable = prune(timedelta(days=8), dry_run=True)  # other tests' records may be there too
    assert old in deleted and new not in deleted
    assert garbage in unreadable and old not in unreadable
    assert main(["--older-than-days", "8"]) == 0
    with create_session() as session:
        left = set(session.scalars(select(Variable.key).where(Variable.key.in_(list(rows)))))
        for key in left:
            session.delete(session.scalars(select(Variable).where(Variable.key == key)).one())
    assert left == {new, garbage, "magiXledger.other"}
    with pytest.raises(SystemExit):
        main(["--older-than-days", "3"])
