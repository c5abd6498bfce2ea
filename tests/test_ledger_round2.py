"""#26: no second payment through rate limits, store switches, re-rendered templates, runs made
again or Airflow 3.0's stale resume events. Each DAG test counts the predictions the server made.

Marked ``money``: ``make test`` runs them on every Airflow minor (3.0 to 3.3).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_magi.compat import HAS_TASK_STATE_STORE
from airflow_provider_magi.ledger import LOOK_UP, REATTACH, SUBMIT, LedgerRecord, decide, template_source
from airflow_provider_magi.testing import LocalWaveSpeedServer
from airflow_provider_magi.testing.faults import Fault
from tests.helpers import connection_json, run_dag, task_instance, xcom

pytestmark = [pytest.mark.money, pytest.mark.usefixtures("quick_settle")]

FINGERPRINT = "f" * 64
NEXT_CONN_ENV = "MAGI_TEST_CONN_AFTER_CRASH"


def paid(server: LocalWaveSpeedServer) -> int:
    """Predictions the server created (what WaveSpeed bills), checked against the POSTs it saw."""
    created = len(server.app.predictions)
    assert server.count("submit") >= created
    return created


# ---------------------------------------------------------------- 1: every attempt sent


def test_a_submit_resent_through_429s_whose_answer_was_lost_is_found_not_paid_again(
    dag_bag: Any, server: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three 429s (Retry-After 1 s) put the accepted POST 3 s after the intent, past the window
    a look-up used to search (intent + request_timeout 2 s + 0.5 s margin, scaled down from
    120 s + 60 s); the worker then dies before the id reaches the ledger."""
    from airflow_provider_magi.hooks import history

    monkeypatch.setattr(history, "CANDIDATE_WINDOW_SECONDS", 0.5)
    monkeypatch.setenv(
        "AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server, max_retry_wait=1, request_timeout=2)
    )
    server.set_faults([Fault(route="submit", kind="status", status=429, retry_after=1, times=3)])
    dag_run = run_dag(dag_bag, "magi_test_dies_before_ledger_id_sync_attach")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "generate").try_number == 2
    assert server.count("submit") == 4  # three refused, one accepted: no fifth on the retry
    assert paid(server) == 1
    (prediction_id,) = server.app.predictions
    assert xcom(dag_run, "generate")["prediction_id"] == prediction_id


def test_the_last_attempt_time_round_trips_and_is_where_the_window_ends() -> None:
    intent = datetime(2026, 12, 1, 7, 0, 0, tzinfo=UTC)
    record = LedgerRecord(FINGERPRINT, "m", intent, last_attempt_at=intent + timedelta(seconds=300))
    again = LedgerRecord.from_json(record.to_json(), where="here")
    assert again == record
    assert again.sent_until == intent + timedelta(seconds=300)
    assert LedgerRecord(FINGERPRINT, "m", intent).sent_until == intent


# ---------------------------------------------------------------- 2: found wherever written


def _ledger_path(tmp_path: Path, name: str) -> str:
    return f"file://{tmp_path}/{name}"


@pytest.mark.parametrize("switch", ["ledger_path added", "ledger_path removed", "ledger_path moved"])
def test_a_ledger_path_switched_between_tries_never_pays_again(
    dag_bag: Any, server: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, switch: str
) -> None:
    before = {} if switch == "ledger_path added" else {"ledger_path": _ledger_path(tmp_path, "a")}
    after = {} if switch == "ledger_path removed" else {"ledger_path": _ledger_path(tmp_path, "b")}
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server, **before))
    monkeypatch.setenv(NEXT_CONN_ENV, connection_json(server, **after))
    dag_run = run_dag(dag_bag, "magi_ledger_conn_switched_between_tries")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "generate").try_number == 2
    assert paid(server) == 1
    (prediction_id,) = server.app.predictions
    assert xcom(dag_run, "generate")["prediction_id"] == prediction_id


@pytest.mark.skipif(not HAS_TASK_STATE_STORE, reason="the task state store came with Airflow 3.3")
def test_an_upgrade_to_the_task_state_store_between_tries_never_pays_again(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_ledger_upgraded_between_tries")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "generate").try_number == 2
    assert paid(magi_conn) == 1


# ---------------------------------------------------------------- 3: re-rendered is not new


@pytest.mark.parametrize("mode", ["deferrable", "sync"])
def test_a_template_that_renders_differently_on_the_retry_reattaches(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer, mode: str
) -> None:
    dag_run = run_dag(dag_bag, f"magi_ledger_rerendered_seed_{mode}")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "generate").try_number == 2
    assert paid(magi_conn) == 1
    (prediction,) = magi_conn.app.predictions.values()
    result = xcom(dag_run, "generate")
    assert result["prediction_id"] == prediction.id
    assert result["inputs"]["seed"] == prediction.inputs["seed"]  # try 1's rendering, the one paid for


def test_a_mapped_template_that_renders_differently_on_the_retry_reattaches(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_ledger_mapped_rerendered_seed")
    assert dag_run.state == "success"
    assert paid(magi_conn) == 2  # one per map index (was 4: each retry re-rendered its seed)
    for index in range(2):
        assert task_instance(dag_run, "generate", map_index=index).try_number == 2
        result = xcom(dag_run, "generate", map_index=index)
        assert magi_conn.app.predictions[result["prediction_id"]].inputs["seed"] == result["inputs"]["seed"]


def test_the_decision_tells_a_re_rendered_template_from_an_edited_one() -> None:
    source = template_source({"prompt": "a boat", "seed": "{{ range(0, 100000) | random }}"})
    edited = template_source({"prompt": "a ship", "seed": "{{ range(0, 100000) | random }}"})
    record = LedgerRecord(FINGERPRINT, "m", datetime.now(UTC), source=source)
    rerendered = decide(record.paid("p1"), "other rendering", source)
    assert rerendered.action == REATTACH
    assert "template source is unchanged" in rerendered.reason
    assert decide(record, "other rendering", source).action == LOOK_UP
    assert decide(record.paid("p1"), "other rendering", edited).action == SUBMIT
    assert decide(record.paid("p1"), "other rendering", None).action == SUBMIT  # source unknown
    old = LedgerRecord(FINGERPRINT, "m", datetime.now(UTC)).paid("p1")  # written before #26
    assert decide(old, "other rendering", source).action == SUBMIT


# ---------------------------------------------------------------- 5: a run made again is new


@pytest.mark.parametrize("store", ["airflow", "ledger_path"])
@pytest.mark.parametrize("made_again", ["triggered again", "same run_after"])
def test_a_run_deleted_and_made_again_with_the_same_run_id_pays_for_its_own_video(
    dag_bag: Any,
    server: LocalWaveSpeedServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    store: str,
    made_again: str,
) -> None:
    """dag.test deletes the run of its logical date and creates one anew, here under the same
    run id: "triggered again" (run_after is the new trigger's time, as for a run triggered with
    the old run id), or "same run_after" (as a scheduled run created again: only 3.3's task
    state store, keyed by the run's database id, can tell those runs apart)."""
    from airflow.models.dagrun import DagRun

    if made_again == "same run_after" and not HAS_TASK_STATE_STORE:
        pytest.skip("before 3.3 nothing a task can read tells a run from its copy with the same run_after")
    extra = {"ledger_path": _ledger_path(tmp_path, "ledger")} if store == "ledger_path" else {}
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server, **extra))
    monkeypatch.setattr(DagRun, "generate_run_id", staticmethod(lambda **_: "manual__made_again"))
    when = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    dag = dag_bag.get_dag("magi_ledger_run_made_again")
    first = dag.test(logical_date=when, **({"run_after": when} if made_again == "same run_after" else {}))
    second = dag.test(logical_date=when, **({"run_after": when} if made_again == "same run_after" else {}))
    assert first.run_id == second.run_id == "manual__made_again"
    assert first.state == second.state == "success"
    assert paid(server) == 2
    newest = list(server.app.predictions)[-1]
    assert xcom(second, "generate")["prediction_id"] == newest  # the new run's own video


def test_record_json_stays_small_and_holds_no_inputs() -> None:
    when = datetime(2026, 12, 1, 7, 56, 20, 163000, tzinfo=UTC)
    record = LedgerRecord(
        FINGERPRINT,
        "wavespeed-ai/magi-1-24b",
        when,
        source="s" * 32,
        last_attempt_at=when + timedelta(seconds=75),
        delivered=True,
    ).paid("abc123")
    text = record.to_json()
    assert set(json.loads(text)) == {
        "v",
        "fingerprint",
        "model",
        "intent_at",
        "prediction_id",
        "source",
        "last_attempt_at",
        "delivered",
    }
    assert LedgerRecord.from_json(text, where="here") == record
    assert len(text) < 320


# ---------------------------------------------------------------- 12: 3.0's stale resume event


def test_a_retry_after_a_deferred_execution_timeout_reattaches_and_succeeds(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_ledger_retry_after_a_deferred_timeout")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "generate").try_number >= 2
    assert paid(magi_conn) == 1
    (prediction_id,) = magi_conn.app.predictions
    assert xcom(dag_run, "generate")["prediction_id"] == prediction_id


# ---------------------------------------------------------------- 7: the settle before a look-up


class SettleSleeps:
    """Stands in for the operator module's ``time``: records sleeps made inside the look-up
    (returning at once), and passes every other call through."""

    def __init__(self) -> None:
        self.in_look_up: list[float] = []

    def __getattr__(self, name: str) -> Any:
        import time

        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        import inspect
        import time

        if any(frame.function == "look_up_intent" for frame in inspect.stack()[1:4]):
            self.in_look_up.append(seconds)
            return
        time.sleep(seconds)


@pytest.fixture
def settle_sleeps(monkeypatch: pytest.MonkeyPatch) -> SettleSleeps:
    from airflow_provider_magi.operators import magi

    shim = SettleSleeps()
    monkeypatch.setattr(magi, "time", shim)
    return shim


def test_a_deferrable_task_settles_in_the_triggerer_not_a_worker_slot(
    dag_bag: Any,
    magi_conn: LocalWaveSpeedServer,
    monkeypatch: pytest.MonkeyPatch,
    settle_sleeps: SettleSleeps,
) -> None:
    """The intent (no POST left) is left 6 s to land; the retry comes sooner than that."""
    from airflow_provider_magi.paying import item

    monkeypatch.setattr(item, "INTENT_SETTLE_SECONDS", 6.0)
    dag_run = run_dag(dag_bag, "magi_test_dies_before_post_deferrable")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "generate").try_number == 2
    assert paid(magi_conn) == 1
    assert settle_sleeps.in_look_up == []  # deferred (TimeDeltaTrigger), never slept in the worker


def test_the_settle_is_measured_on_wavespeeds_clock_not_the_workers(
    dag_bag: Any,
    magi_conn: LocalWaveSpeedServer,
    monkeypatch: pytest.MonkeyPatch,
    settle_sleeps: SettleSleeps,
) -> None:
    """This worker's clock says the intent is a moment old; WaveSpeed's (its Date) says 60 s:
    the 30 s have passed where the submit would have landed, so the look-up does not wait."""
    import time

    from airflow_provider_magi.hooks.magi import MagiHook
    from airflow_provider_magi.paying import item

    monkeypatch.setattr(item, "INTENT_SETTLE_SECONDS", 30.0)
    monkeypatch.setattr(MagiHook, "wavespeed_now", lambda self: time.time() + 60)
    dag_run = run_dag(dag_bag, "magi_test_dies_before_post_sync")
    assert dag_run.state == "success"
    assert paid(magi_conn) == 1
    assert settle_sleeps.in_look_up == []


def test_wavespeeds_clock_is_read_from_the_date_header() -> None:
    import time
    from email.utils import formatdate

    from airflow_provider_magi.hooks.magi import MagiHook

    hook = MagiHook()
    hook._note_server_clock(formatdate(time.time() + 3600, usegmt=True))
    assert 3598 < hook.server_now() - time.time() < 3601
    hook._note_server_clock("not a date")  # ignored: the last good reading stays
    assert 3598 < hook.server_now() - time.time() < 3601


# ---------------------------------------------------------------- 6: a new video on purpose


class DictState:
    """A task state store accessor (Airflow 3.3's, by its get/set/delete), held in a dict."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


@pytest.fixture
def variables(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Ledger Variables in a dict: these tests call ``execute`` outside a task runner, where
    Airflow 3.0's Task SDK cannot reach Variables."""
    from airflow_provider_magi.ledger_stores import VariableLedgerStore

    held: dict[str, str] = {}
    monkeypatch.setattr(VariableLedgerStore, "read", lambda self, name: held.get(self.key(name)))
    monkeypatch.setattr(
        VariableLedgerStore, "write", lambda self, name, text: held.update({self.key(name): text})
    )
    monkeypatch.setattr(VariableLedgerStore, "delete", lambda self, name: held.pop(self.key(name), None))
    return held


def _run_task(operator: Any, state: DictState, try_number: int, clear_number: int = 0) -> Any:
    """One try of ``operator`` in the same DAG run (a clear raises the try number and the run's
    clear_number; a retry only the try number)."""
    from types import SimpleNamespace

    ti = SimpleNamespace(
        dag_id="d", task_id=operator.task_id, run_id="manual__cleared", map_index=-1, try_number=try_number
    )
    ti.xcom_push = lambda **_: None
    run = SimpleNamespace(run_after=datetime(2026, 12, 1, tzinfo=UTC), clear_number=clear_number)
    operator.__dict__.pop("hook", None)
    return operator.execute({"ti": ti, "dag_run": run, "task_state_store": state})


@pytest.mark.parametrize("regenerate", [False, True, "{{ params.regenerate }}"])
def test_a_clear_of_a_successful_task_regenerates_only_when_asked(
    dag_bag: Any,
    server: LocalWaveSpeedServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    variables: dict[str, str],
    regenerate: Any,
) -> None:
    from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator

    monkeypatch.setenv(
        "AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server, ledger_path=_ledger_path(tmp_path, "ledger"))
    )
    rendered = "true" if isinstance(regenerate, str) else regenerate  # as the template renders
    operator = MagiGenerateVideoOperator(
        task_id="generate",
        prompt="a cleared video [[duration: 0.1]]",
        regenerate_on_clear=rendered,
        deferrable=False,
        poll_interval=0.1,
    )
    state = DictState()
    first = _run_task(operator, state, try_number=1)
    retried = _run_task(operator, state, try_number=2)  # a retry (no clear): never regenerates
    assert paid(server) == 1
    cleared = _run_task(operator, state, try_number=3, clear_number=1)  # the user clears it
    asked = rendered in (True, "true")
    assert paid(server) == (2 if asked else 1)
    assert retried["prediction_id"] == first["prediction_id"]
    assert (cleared["prediction_id"] != first["prediction_id"]) is asked


def test_a_retry_after_a_failure_never_regenerates(
    dag_bag: Any,
    server: LocalWaveSpeedServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    variables: dict[str, str],
) -> None:
    """Try 1 paid and died before succeeding: nothing was delivered, so try 2 reattaches."""
    from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator

    class DiesWaiting(MagiGenerateVideoOperator):
        def poll_until_complete(self, external_id: Any, context: Any) -> Any:
            if context["ti"].try_number == 1:
                raise RuntimeError("killed while waiting")
            return super().poll_until_complete(external_id, context)

    monkeypatch.setenv(
        "AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server, ledger_path=_ledger_path(tmp_path, "ledger"))
    )
    operator = DiesWaiting(
        task_id="generate",
        prompt="a retried video [[duration: 0.1]]",
        regenerate_on_clear=True,
        deferrable=False,
        poll_interval=0.1,
    )
    state = DictState()
    with pytest.raises(RuntimeError, match="killed"):
        _run_task(operator, state, try_number=1)
    _run_task(operator, state, try_number=2)
    assert paid(server) == 1


def test_regenerate_on_clear_that_is_not_a_bool_is_refused_before_any_request(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer, variables: dict[str, str]
) -> None:
    from airflow_provider_magi.exceptions import MagiInputError
    from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator

    operator = MagiGenerateVideoOperator(task_id="generate", prompt="x", regenerate_on_clear="maybe")
    with pytest.raises(MagiInputError, match="regenerate_on_clear"):
        _run_task(operator, DictState(), try_number=1)
    assert magi_conn.count("submit") == 0


# ---------------------------------------------------------------- 4: mapped lists reordered


def test_a_mapped_list_that_comes_back_reordered_pays_for_nothing_again(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_ledger_mapped_list_reordered")
    assert dag_run.state == "success"
    assert paid(magi_conn) == 3  # one per prompt, whichever map index asks for it
    by_prompt = {p.id: p.inputs["prompt"] for p in magi_conn.app.predictions.values()}
    for index in range(3):
        assert task_instance(dag_run, "generate", map_index=index).try_number == 2
        result = xcom(dag_run, "generate", map_index=index)
        assert by_prompt[result["prediction_id"]] == result["inputs"]["prompt"]


def _context(started: datetime, clears: int) -> dict[str, Any]:
    """A scheduled run's context: its run id and run_after come from the schedule, so a copy
    made after the run is deleted has the same ones; only its start (and clears) differ."""
    from types import SimpleNamespace

    when = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    ti = SimpleNamespace(dag_id="d", task_id="t", run_id="scheduled__2026-11-30T06:00:00+00:00", map_index=-1)
    return {"ti": ti, "dag_run": SimpleNamespace(run_after=when, start_date=started, clear_number=clears)}


def test_a_scheduled_run_made_again_is_told_from_a_retry_and_a_clear(variables: dict[str, str]) -> None:
    from airflow_provider_magi.ledger_stores import open_ledger

    started = datetime(2026, 11, 30, 6, 0, 5, tzinfo=UTC)
    ledger = open_ledger(_context(started, clears=0))
    ledger.write_paid(ledger.write_intent(FINGERPRINT, "m"), "p1")
    assert open_ledger(_context(started, clears=0)).read() is not None  # a retry
    cleared = started + timedelta(hours=2)
    assert open_ledger(_context(cleared, clears=1)).read() is not None  # a clear restarts the run
    assert open_ledger(_context(cleared, clears=0)).read() is None  # deleted and scheduled again
