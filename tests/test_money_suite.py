"""The shared money suite (#31): every money scenario, for each operator shape.

Each test is one scenario parametrized over ``shape``: the single video
(``MagiGenerateVideoOperator``), the long video (``MagiLongVideoOperator``, two scenes) and the
batch (``MagiBatchOperator``, two inputs), so no scenario exists for one shape only. What was
paid is counted on the local server: the predictions it created (what WaveSpeed bills) and the
POSTs to the model endpoint it saw. The DAGs are in ``tests/dags/magi_money_dags.py``; they
reach the operators only through Airflow's entry points, XCom, files, the connection and the
server, so the suite holds however the paying code is arranged inside the operators.

No assertion depends on timing: a deferral is never asserted (a busy machine may finish first),
no wall-clock duration is measured, and nothing sleeps for an assertion.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowTaskTimeout

from airflow_provider_magi.compat import HAS_TASK_STATE_STORE
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.testing import LocalWaveSpeedServer
from airflow_provider_magi.testing.faults import Fault
from tests.helpers import (
    CANARY_KEY,
    DAG_TEST_LOGS_EXCEPTIONS,
    connection_json,
    run_dag,
    task_instance,
    wait_until,
    xcom,
)

pytestmark = [pytest.mark.money, pytest.mark.usefixtures("quick_settle")]

MAGI = "wavespeed-ai/magi-1-24b"
PRICE = 0.30
SHAPES = ("video", "long_video", "batch")
# Every scenario whose DAG names no model of its own also runs with MAGI-2 text-to-video (#33),
# priced per second; not the mapped ones (6: their operators are expanded, not built per model).
MODELS = ("magi-1", "magi-2")
SUFFIX = {"magi-1": "", "magi-2": "_magi2"}
ITEMS = {"video": 1, "long_video": 2, "batch": 2}  # predictions one task of the shape pays for
NEXT_CONN_ENV = "MAGI_TEST_MONEY_NEXT_CONN"
NEW_PROMPT = "a harbour at night [[duration: 0.3]]"


# ---------------------------------------------------------------- the server and what it was paid


@pytest.fixture
def books(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalWaveSpeedServer]:
    """A local WaveSpeed whose predictions take 0.3 s unless a prompt says otherwise."""
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.3, prices={MAGI: PRICE}) as running:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(running))
        yield running


def paid(server: LocalWaveSpeedServer) -> int:
    """Predictions the server created: what WaveSpeed bills."""
    return len(server.app.predictions)


def posts(server: LocalWaveSpeedServer, status: int | None = None) -> int:
    """POSTs to the model endpoint the server saw (every answer, or those with ``status``)."""
    return server.count("submit", status=status)


def prompt_of(server: LocalWaveSpeedServer, prediction_id: str) -> str:
    return str(server.app.predictions[prediction_id].inputs["prompt"])


def delivered(shape: str, dag_run: Any, task_id: str = "paying", map_index: int = -1) -> list[str]:
    """The prediction ids a successful task delivered, in item order."""
    result = xcom(dag_run, task_id, map_index=map_index)
    assert result is not None, f"{task_id}[{map_index}] returned nothing"
    if shape == "video":
        return [result["prediction_id"]]
    if shape == "long_video":
        assert Path(result["path"]).stat().st_size > 0
        return list(result["prediction_ids"])
    lines = [json.loads(line) for line in Path(result["manifest_path"]).read_text().splitlines()]
    assert [line["status"] for line in lines] == ["completed"] * len(lines)
    assert all(Path(line["paths"][0]).stat().st_size > 0 for line in lines)
    return [line["prediction_id"] for line in lines]


def named_as_uncertain(shape: str, dag_run: Any, prediction_id: str) -> None:
    """The task names ``prediction_id`` as a prediction its lost submit may have started: in XCom
    ``prediction_candidates`` (one video, a long video), or on the item's manifest line (a batch)."""
    if shape != "batch":
        candidates = xcom(dag_run, "paying", key="prediction_candidates")
        assert [c["prediction_id"] for c in candidates] == [prediction_id]
        return
    progress = xcom(dag_run, "paying", key="batch_progress")
    lines = [json.loads(line) for line in Path(progress["manifest_path"]).read_text().splitlines()]
    assert lines[-1]["status"] == "uncertain" and prediction_id in lines[-1]["error"]
    assert lines[0]["status"] == "completed"


def use(server: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, **extra: object) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server, **extra))


def each_shape(**defects: str) -> Any:
    """Parametrize ``shape`` over the three shapes; a shape named here is a strict xfail whose
    reason names the defect the current code has there."""
    return pytest.mark.parametrize(
        "shape",
        [
            pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=defects[s])) if s in defects else s
            for s in SHAPES
        ],
    )


def exceptions_logged(logs: str) -> set[type]:
    """The exception classes named in the logs' tracebacks (``package.module.Class: message``)."""
    found: set[type] = set()
    for name in set(re.findall(r"\b((?:airflow|airflow_provider_magi)(?:\.\w+)+): ", logs)):
        module, _, attribute = name.rpartition(".")
        try:
            raised = getattr(importlib.import_module(module), attribute, None)
        except ImportError:
            continue
        if isinstance(raised, type) and issubclass(raised, BaseException):
            found.add(raised)
    return found


# ---------------------------------------------------------------- 1: a random seed, resumed and retried


@pytest.mark.parametrize("model", MODELS)
@each_shape()
def test_1_a_random_seed_pays_once_per_item_across_resumes_and_a_retry(
    dag_bag: Any, books: LocalWaveSpeedServer, shape: str, model: str
) -> None:
    """``{{ range(0, 100000) | random }}`` renders anew at every entry: each resume (if the task
    deferred) and try 2 (try 1 ends failed after its work) must keep the seed that was paid."""
    if model == "magi-2" and shape == "long_video":
        pytest.skip("MAGI-2 scenes after the first are image-to-video, which takes no seed")
    dag_run = run_dag(dag_bag, f"magi_money_random_seed_{shape}{SUFFIX[model]}")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "paying").try_number == 2
    assert paid(books) == posts(books) == ITEMS[shape]
    assert sorted(delivered(shape, dag_run)) == sorted(books.app.predictions)
    if shape == "video":  # the result names the seed of the video it returns
        (prediction,) = books.app.predictions.values()
        assert xcom(dag_run, "paying")["inputs"]["seed"] == prediction.inputs["seed"]


# ---------------------------------------------------------------- 2: killed around the POST


@pytest.mark.parametrize("kill", ["before_post", "after_post"])
@pytest.mark.parametrize("model", MODELS)
@each_shape()
def test_2_a_worker_killed_around_its_last_post_never_pays_twice(
    dag_bag: Any,
    books: LocalWaveSpeedServer,
    monkeypatch: pytest.MonkeyPatch,
    shape: str,
    kill: str,
    model: str,
) -> None:
    """Try 1's worker dies at its last paid POST: ``before_post`` after the intent, before the
    POST leaves (nothing started); ``after_post`` once WaveSpeed accepted it, before its id was
    recorded. The retry asks WaveSpeed's history: it pays for what never started, and never
    again for what did (that item is then uncertain: named, not resent).

    The kill is a RuntimeError from the hook's public ``MagiHook.create_prediction``: unlike a
    SIGKILL, the operator's ``finally`` blocks still run (a batch records the ids of the wave's
    earlier items). A real SIGKILL of a single video's worker is in tests/integration."""
    real = MagiHook.create_prediction
    calls: list[int] = []

    def killed_once(self: MagiHook, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == ITEMS[shape]:
            if kill == "after_post":
                real(self, *args, **kwargs)
            raise RuntimeError(f"simulated worker kill {kill.replace('_', ' ')}")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MagiHook, "create_prediction", killed_once)
    dag_run = run_dag(dag_bag, f"magi_money_plain_{shape}{SUFFIX[model]}")
    assert task_instance(dag_run, "paying").try_number == 2
    assert paid(books) == posts(books) == ITEMS[shape]
    if kill == "before_post":
        assert dag_run.state == "success"
        assert sorted(delivered(shape, dag_run)) == sorted(books.app.predictions)
    else:  # the last one started and its id is unknown: named, not delivered, not resent
        assert dag_run.state == "failed"
        named_as_uncertain(shape, dag_run, list(books.app.predictions)[-1])


# ---------------------------------------------------------------- 3: a lost answer


@pytest.mark.parametrize("model", MODELS)
@each_shape()
def test_3_a_submit_whose_answer_is_lost_is_uncertain_and_never_resent(
    dag_bag: Any, books: LocalWaveSpeedServer, shape: str, model: str
) -> None:
    """The shape's last submit is accepted and its connection dropped before the answer."""
    last = ITEMS[shape]
    books.set_faults(
        [
            Fault(route="submit", kind="slow", delay=0, times=last - 1),  # the ones before: answered
            Fault(route="submit", kind="drop_after_accept", times=1),
        ]
    )
    dag_run = run_dag(dag_bag, f"magi_money_plain_{shape}{SUFFIX[model]}")
    assert dag_run.state == "failed"  # retries=1: the retry did not resend it either
    assert paid(books) == posts(books) == last
    named_as_uncertain(shape, dag_run, list(books.app.predictions)[-1])


# ---------------------------------------------------------------- 4: a 429, then the resend


@pytest.mark.parametrize("model", MODELS)
@each_shape()
def test_4_a_submit_refused_with_429_is_resent_and_paid_once(
    dag_bag: Any, books: LocalWaveSpeedServer, shape: str, model: str
) -> None:
    books.set_faults([Fault(route="submit", kind="status", status=429, retry_after=0.2, times=2)])
    dag_run = run_dag(dag_bag, f"magi_money_plain_{shape}{SUFFIX[model]}")
    assert dag_run.state == "success"
    assert posts(books, status=429) == 2
    assert paid(books) == posts(books, status=200) == ITEMS[shape]
    assert sorted(delivered(shape, dag_run)) == sorted(books.app.predictions)


# ---------------------------------------------------------------- 5: ledger_path switched between tries


@pytest.mark.parametrize("switch", ["ledger_path added", "ledger_path removed", "ledger_path moved"])
@pytest.mark.parametrize("model", MODELS)
@each_shape()
def test_5_a_ledger_path_switched_between_tries_never_pays_again(
    dag_bag: Any,
    books: LocalWaveSpeedServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    shape: str,
    switch: str,
    model: str,
) -> None:
    """Try 1 pays, then its worker dies (at its first deferral, else at its end) after the
    connection was edited: the retry must find what try 1 paid wherever try 1 recorded it."""
    before = {} if switch == "ledger_path added" else {"ledger_path": f"file://{tmp_path}/a"}
    after = {} if switch == "ledger_path removed" else {"ledger_path": f"file://{tmp_path}/b"}
    use(books, monkeypatch, **before)
    monkeypatch.setenv(NEXT_CONN_ENV, connection_json(books, **after))
    dag_run = run_dag(dag_bag, f"magi_money_store_switched_{shape}{SUFFIX[model]}")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "paying").try_number == 2
    assert paid(books) == posts(books) == ITEMS[shape]
    assert sorted(delivered(shape, dag_run)) == sorted(books.app.predictions)


@pytest.mark.skipif(not HAS_TASK_STATE_STORE, reason="the task state store came with Airflow 3.3")
@pytest.mark.parametrize("model", MODELS)
@each_shape()
def test_5_an_upgrade_from_3_2_to_3_3_between_tries_never_pays_again(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, shape: str, model: str
) -> None:
    """Try 1 pays as on 3.2 (the ledger in Variables), its worker dies; try 2 runs as on 3.3
    (the task state store): it must read what try 1 recorded, not pay again."""
    monkeypatch.setenv(NEXT_CONN_ENV, connection_json(books))
    dag_run = run_dag(dag_bag, f"magi_money_upgraded_{shape}{SUFFIX[model]}")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "paying").try_number == 2
    assert paid(books) == posts(books) == ITEMS[shape]
    assert sorted(delivered(shape, dag_run)) == sorted(books.app.predictions)


# ---------------------------------------------------------------- 6: a mapped list reordered


@each_shape()
def test_6_a_mapped_list_with_duplicates_reordered_pays_nothing_more(
    dag_bag: Any, books: LocalWaveSpeedServer, shape: str
) -> None:
    """Map indexes over [X, X, Y, Y] each pay (duplicates are paid as listed), then end try 1;
    the list comes back as [Y, Y, X, X] for try 2. Nothing is paid again, and each map index
    delivers a prediction of its own input, no two the same one.

    Two borrowers of each input: whatever order the map indexes run in, each takes a paid
    prediction no other map index took this round (the ledger's claims). The issue's own list is
    the next test."""
    dag_run = run_dag(dag_bag, f"magi_money_mapped_reordered_{shape}")
    assert dag_run.state == "success"
    assert paid(books) == posts(books) == 4
    ids = []
    for index, label in enumerate(["duplicated Y", "duplicated Y", "duplicated X", "duplicated X"]):
        assert task_instance(dag_run, "paying", map_index=index).try_number == 2
        (prediction_id,) = delivered(shape, dag_run, map_index=index)
        assert prompt_of(books, prediction_id).startswith(label)
        ids.append(prediction_id)
    assert len(set(ids)) == 4, ids  # two map indexes never deliver one prediction


@each_shape()
def test_6_the_issue_s_mapped_list_x_x_y_back_as_y_x_x_pays_nothing_more(
    dag_bag: Any, books: LocalWaveSpeedServer, shape: str
) -> None:
    """[X, X, Y] back as [Y, X, X], in whatever order the map indexes run: 3 paid for 3, each map
    index delivers a prediction of its own input, no two the same one (was: map indexes 1 and 2
    could deliver one X, the other paid X dropped)."""
    dag_run = run_dag(dag_bag, f"magi_money_mapped_reordered_issue_{shape}")
    assert dag_run.state == "success"
    assert paid(books) == posts(books) == 3
    ids = []
    for index, label in enumerate(["duplicated Y", "duplicated X", "duplicated X"]):
        (prediction_id,) = delivered(shape, dag_run, map_index=index)
        assert prompt_of(books, prediction_id).startswith(label)
        ids.append(prediction_id)
    assert len(set(ids)) == 3, ids


@each_shape()
def test_6_a_new_input_twice_in_the_reordered_list_is_paid_once_per_map_index(
    dag_bag: Any, books: LocalWaveSpeedServer, shape: str
) -> None:
    """[X, Y] back as [Z, Z]: Z was never paid for, and each map index pays for a Z of its own (a
    map index's new prediction is claimed for it, so the other never takes it): 4 paid, and the
    two map indexes deliver two predictions of Z."""
    dag_run = run_dag(dag_bag, f"magi_money_mapped_new_duplicate_{shape}")
    assert dag_run.state == "success"
    assert paid(books) == posts(books) == 4
    ids = [delivered(shape, dag_run, map_index=index)[0] for index in (0, 1)]
    assert all(prompt_of(books, prediction_id).startswith("new Z") for prediction_id in ids)
    assert len(set(ids)) == 2, ids


@each_shape()
def test_6_a_plain_retry_never_takes_what_another_map_index_delivered(
    dag_bag: Any, books: LocalWaveSpeedServer, shape: str
) -> None:
    """[X, X], never reordered: map index 0's try 1 ends before paying, map index 1's pays and
    succeeds. Map index 0's retry pays for an X of its own: 2 paid, two predictions delivered
    (an attacker's read: the batch's retry took map index 1's, one video delivered twice)."""
    dag_run = run_dag(dag_bag, f"magi_money_mapped_plain_retry_{shape}")
    assert dag_run.state == "success"
    assert [task_instance(dag_run, "paying", map_index=i).try_number for i in (0, 1)] == [2, 1]
    assert paid(books) == posts(books) == 2  # one prediction per map index in every shape here
    ids = [delivered(shape, dag_run, map_index=index) for index in (0, 1)]
    assert not set(ids[0]) & set(ids[1]), ids


@each_shape()
def test_6_a_list_flipped_back_within_one_round_pays_nothing_again(
    dag_bag: Any, books: LocalWaveSpeedServer, shape: str
) -> None:
    """[X, Y] for try 1, [Y, X] for try 2, [X, Y] for try 3, no clear between: 2 map indexes'
    inputs paid once (an attacker's read: the claims of try 2 were never released, 4 paid)."""
    dag_run = run_dag(dag_bag, f"magi_money_mapped_flipped_back_{shape}")
    assert dag_run.state == "success"
    assert [task_instance(dag_run, "paying", map_index=i).try_number for i in (0, 1)] == [3, 3]
    assert paid(books) == posts(books) == 2
    for index, label in enumerate(["duplicated X", "duplicated Y"]):
        (prediction_id,) = delivered(shape, dag_run, map_index=index)
        assert prompt_of(books, prediction_id).startswith(label)


# ---------------------------------------------------------------- 7: a clear, upstream data kept or changed


@pytest.mark.parametrize("change", [False, True], ids=["unchanged", "changed"])
@pytest.mark.parametrize("model", MODELS)
@each_shape()
def test_7_a_clear_reattaches_or_pays_once_for_changed_upstream_data(
    dag_bag: Any, books: LocalWaveSpeedServer, shape: str, change: bool, model: str
) -> None:
    """Try 1 delivers, then fails at its end; try 2 stands in for the clear (``dag.test`` cannot
    clear a task, so the clear number does not change, as in tests/test_rendering.py). With
    ``changed`` the upstream task's XCom holds a new prompt for the last item first."""
    dag_run = run_dag(
        dag_bag, f"magi_money_cleared_{'changed' if change else 'unchanged'}_{shape}{SUFFIX[model]}"
    )
    assert dag_run.state == "success"
    assert task_instance(dag_run, "paying").try_number == 2
    assert paid(books) == posts(books) == ITEMS[shape] + change
    prompts = [prompt_of(books, p) for p in books.app.predictions]
    assert prompts.count(NEW_PROMPT) == change
    ids = delivered(shape, dag_run)
    assert len(ids) == ITEMS[shape]
    assert (prompt_of(books, ids[-1]) == NEW_PROMPT) is change


# ---------------------------------------------------------------- 8: the guards while billing lags

MIDNIGHT = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), UTC)  # the last one


def _priced(server: LocalWaveSpeedServer) -> None:
    """One video paid and billed, so the model's price is known; nothing is billed after it."""
    first = MagiHook().create_prediction({"prompt": "earlier [[duration: 0]]"}, MAGI)
    wait_until(lambda: any(b.prediction_id == first.id for b in server.billings), 10)
    server.app.account.billing_delay = 3600.0


@pytest.mark.parametrize("guard", ["min_balance_usd", "daily_budget_usd", "daily_budget_usd after midnight"])
@pytest.mark.parametrize("model", MODELS)
@each_shape()
def test_8_the_guards_count_what_is_started_and_not_billed_yet(
    dag_bag: Any,
    books: LocalWaveSpeedServer,
    monkeypatch: pytest.MonkeyPatch,
    shape: str,
    guard: str,
    model: str,
) -> None:
    """Two tasks of the shape one after another while billing lags (nothing they start is
    billed during the test). The guard leaves room for the first task's predictions and $0.10:
    the second must count the first's unbilled predictions and pay nothing. After midnight: a
    $0.30 video started at 23:59:50 and billed after midnight takes room from today. With MAGI-2
    each of the shape's videos costs $0.40 (5 s at $0.08), known before any bill."""
    n = ITEMS[shape]
    price = PRICE if model == "magi-1" else 0.40
    if guard == "daily_budget_usd after midnight":
        from airflow_provider_magi.hooks import account

        class ServerClock(datetime):
            """The guards' clock, on the server's (the day a budget counts is WaveSpeed's)."""

            @classmethod
            def now(cls, tz: Any = None) -> Any:
                return datetime.fromtimestamp(books.now(), tz)

        monkeypatch.setattr(account, "datetime", ServerClock, raising=False)
        books.set_clock((MIDNIGHT - timedelta(seconds=60)).timestamp())
        _priced(books)  # at 23:59:00: billed yesterday
        books.set_clock((MIDNIGHT - timedelta(seconds=10)).timestamp())
        MagiHook().create_prediction({"prompt": "late [[duration: 0]]"}, MAGI, check_guards=False)
        books.advance_clock(15)  # 00:00:05: the late one is done, not billed yet
        before = paid(books)
        use(books, monkeypatch, daily_budget_usd=n * price + 0.10, cost_lookup_seconds=0)
        dag_run = run_dag(dag_bag, f"magi_money_guarded_{shape}{SUFFIX[model]}")
        # The late one takes $0.30 of today: room for n - 1, and a long video is all or nothing.
        expected = {"video": 0, "long_video": 0, "batch": 1}[shape]
        assert paid(books) - before == expected
        assert task_instance(dag_run, "second").state == "failed"
        return
    _priced(books)
    books.set_balance(10.0)
    before = paid(books)
    if guard == "min_balance_usd":
        use(books, monkeypatch, min_balance_usd=10.0 - n * price - 0.10, cost_lookup_seconds=0)
    else:  # the earlier one is billed today
        use(books, monkeypatch, daily_budget_usd=PRICE + n * price + 0.10, cost_lookup_seconds=0)
    dag_run = run_dag(dag_bag, f"magi_money_guarded_{shape}{SUFFIX[model]}")
    assert task_instance(dag_run, "first").state == "success"
    assert task_instance(dag_run, "second").state == "failed"
    assert paid(books) - before == posts(books) - before == n  # the first task's only
    assert task_instance(dag_run, "second").try_number == 1  # a refusal is not retried


# ---------------------------------------------------------------- 9: execution_timeout, retried


@pytest.mark.parametrize("model", MODELS)
@each_shape()
def test_9_an_execution_timeout_is_retried_and_the_retry_reattaches(
    dag_bag: Any, books: LocalWaveSpeedServer, task_logs: Any, shape: str, model: str
) -> None:
    """Try 1 cannot finish within its execution_timeout (the server takes longer than that,
    whatever the machine's speed): it raises AirflowTaskTimeout, which is retried, and each retry
    waits for what was paid instead of paying again."""
    dag_run = run_dag(dag_bag, f"magi_money_execution_timeout_{shape}{SUFFIX[model]}")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "paying").try_number >= 2
    assert paid(books) == posts(books) == ITEMS[shape]
    assert sorted(delivered(shape, dag_run)) == sorted(books.app.predictions)
    if DAG_TEST_LOGS_EXCEPTIONS:
        assert any(issubclass(raised, AirflowTaskTimeout) for raised in exceptions_logged(task_logs()))


# ---------------------------------------------------------------- 10: two writers, one path


def _files(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    return {
        str(path): (path.read_bytes(), path.stat().st_ino, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("model", MODELS)
@each_shape()
def test_10_a_second_writer_of_one_output_path_is_refused_never_overwrites(
    dag_bag: Any, books: LocalWaveSpeedServer, shape: str, model: str
) -> None:
    """Two runs on one day whose filename pattern (``{ds}``) gives them one path. The second is
    refused before paying (the long video, the batch), or its download's claim is refused (the
    single video: the generating task is not told the path): never an overwrite."""
    import os

    dag_id = f"magi_money_one_path_{shape}{SUFFIX[model]}"
    folder = Path(os.environ["MAGI_TEST_OUTPUT_DIR"]) / "money" / dag_id
    morning = run_dag(dag_bag, dag_id, logical_date=datetime(2026, 3, 7, 1, tzinfo=UTC))
    assert morning.state == "success"
    assert paid(books) == ITEMS[shape]
    kept = _files(folder)
    assert kept
    evening = run_dag(dag_bag, dag_id, logical_date=datetime(2026, 3, 7, 13, tzinfo=UTC))
    assert evening.state == "failed"
    assert _files(folder) == kept  # not a byte, inode or modification time changed
    second_pays = 1 if shape == "video" else 0
    assert paid(books) == posts(books) == ITEMS[shape] + second_pays
