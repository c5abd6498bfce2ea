"""Issue 31 items 4 and 5, for every operator shape, counted on the local server's side:

* outputs claimed: a pattern that sends two items, two tasks or two runs to one path is refused
  before anything is paid (the refused task's POSTs: 0), and a batch's manifest is never
  overwritten by another task or run;
* ``execution_timeout`` with Airflow's meaning: a retried ``AirflowTaskTimeout`` (the retry
  reattaches, paying nothing again), counted from when the try's ``execute`` began.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_magi.exceptions import MagiInputError
from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.helpers import (
    CANARY_KEY,
    DAG_TEST_LOGS_EXCEPTIONS,
    connection_json,
    lines_with,
    run_dag,
    task_instance,
    xcom,
)

MAGI = "wavespeed-ai/magi-1-24b"


@pytest.fixture
def books(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalWaveSpeedServer]:
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.3, prices={MAGI: 0.3}) as running:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(running))
        yield running


def paid(server: LocalWaveSpeedServer) -> int:
    return server.count("submit")


def manifest_of(dag_run: Any, task_id: str) -> list[dict[str, Any]]:
    path = Path(xcom(dag_run, task_id, key="batch_progress")["manifest_path"])
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- item 4: claims


@pytest.mark.money
def test_a_batch_pattern_without_a_per_item_field_is_refused_before_paying(
    dag_bag: Any, books: LocalWaveSpeedServer, task_logs: Any
) -> None:
    """The old code paid 3 videos, wrote them into one file, listed it 3 times as completed."""
    dag_run = run_dag(dag_bag, "magi_claims_batch_one_path")
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "batch").try_number == 1  # bad input: not retried
    assert paid(books) == 0 and not books.app.predictions
    if DAG_TEST_LOGS_EXCEPTIONS:
        logs = task_logs()
        assert "Invalid filename" in logs and "all 3 inputs of the batch to the same path" in logs
        assert "put {index}" in logs


@pytest.mark.money
def test_a_second_batch_task_on_one_folder_is_refused_before_paying(
    dag_bag: Any, books: LocalWaveSpeedServer, task_logs: Any
) -> None:
    dag_run = run_dag(dag_bag, "magi_claims_batch_two_tasks")
    assert task_instance(dag_run, "first").state == "success"
    assert task_instance(dag_run, "second").state == "failed"
    assert paid(books) == 2  # the first task's two; the second paid nothing
    prompts = {p.id: p.inputs["prompt"] for p in books.app.predictions.values()}
    lines = manifest_of(dag_run, "first")
    assert [line["status"] for line in lines] == ["completed", "completed"]
    assert all(prompts[line["prediction_id"]].startswith("first task") for line in lines)
    if DAG_TEST_LOGS_EXCEPTIONS:
        assert "written by another task instance" in task_logs()


@pytest.mark.money
def test_a_second_run_on_one_day_never_overwrites_the_first_runs_batch(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    morning = run_dag(dag_bag, "magi_claims_batch_daily", logical_date=datetime(2026, 3, 1, 1, tzinfo=UTC))
    assert morning.state == "success" and paid(books) == 2
    kept = manifest_of(morning, "batch")
    manifest = Path(xcom(morning, "batch", key="batch_progress")["manifest_path"])
    sizes = {path: Path(path).stat().st_size for line in kept for path in line["paths"]}
    evening = run_dag(dag_bag, "magi_claims_batch_daily", logical_date=datetime(2026, 3, 1, 13, tzinfo=UTC))
    assert evening.state == "failed"
    assert paid(books) == 2  # the evening run paid nothing
    assert [json.loads(line) for line in manifest.read_text().splitlines()] == kept  # untouched
    assert {path: Path(path).stat().st_size for path in sizes} == sizes


@pytest.mark.money
def test_a_second_run_on_one_day_never_replaces_the_first_runs_long_video(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    dag_id = "magi_claims_long_video_daily"
    morning = run_dag(dag_bag, dag_id, logical_date=datetime(2026, 3, 2, 1, tzinfo=UTC))
    assert morning.state == "success" and paid(books) == 2
    video = Path(xcom(morning, "long_video")["path"])
    before = video.read_bytes()
    evening = run_dag(dag_bag, dag_id, logical_date=datetime(2026, 3, 2, 13, tzinfo=UTC))
    assert evening.state == "failed"
    assert paid(books) == 2  # refused before scene 1
    assert video.read_bytes() == before


def test_the_claim_lets_the_same_task_instance_write_again_and_refuses_another(tmp_path: Path) -> None:
    from airflow_provider_magi.paying.claims import WRITER_SUFFIX, claim, writer_of

    def writer(run_id: str) -> dict[str, Any]:
        ti = SimpleNamespace(dag_id="d", task_id="batch", run_id=run_id, map_index=-1)
        return writer_of({"ti": ti})

    target = tmp_path / "manifest.jsonl"
    claim(target, writer("r1"), what="the batch's manifest", fix="a folder of its own")
    target.write_text("{}\n")
    claim(target, writer("r1"), what="the batch's manifest", fix="a folder of its own")  # a retry
    with pytest.raises(MagiInputError, match=r"written by another task instance .*run_id=r1"):
        claim(target, writer("r2"), what="the batch's manifest", fix="a folder of its own")
    (tmp_path / f"manifest.jsonl{WRITER_SUFFIX}").unlink()
    with pytest.raises(MagiInputError, match="no writer marker"):  # a file no task instance claimed
        claim(target, writer("r1"), what="the batch's manifest", fix="a folder of its own")


# ---------------------------------------------------------------- item 5: execution_timeout


@pytest.mark.money
def test_a_batch_whose_first_try_times_out_is_retried_and_the_retry_reattaches(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    """The old code ended the try with MagiTimeoutError (never retried): 2 paid, nothing delivered."""
    dag_run = run_dag(dag_bag, "magi_claims_batch_execution_timeout")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "batch").try_number == 2
    assert paid(books) == 2 and len(books.app.predictions) == 2  # the retry paid nothing again
    lines = manifest_of(dag_run, "batch")
    assert [line["status"] for line in lines] == ["completed", "completed"]
    assert {line["prediction_id"] for line in lines} == set(books.app.predictions)
    assert all(Path(line["paths"][0]).stat().st_size > 0 for line in lines)


@pytest.mark.money
def test_a_long_video_whose_try_times_out_is_retried_and_reuses_its_paid_scenes(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_claims_long_video_execution_timeout")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "long_video").try_number >= 2
    assert paid(books) == 2 and len(books.app.predictions) == 2  # each scene paid once
    result = xcom(dag_run, "long_video")
    assert set(result["prediction_ids"]) == set(books.app.predictions)
    assert Path(result["path"]).stat().st_size > 0


@pytest.mark.money
def test_execution_timeout_counts_from_execute_not_from_a_start_date_long_past(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    """A try whose task instance started a day ago (by its start_date) still has its whole
    execution_timeout: the old code ended each shape at once (the batch before submitting)."""
    dag_run = run_dag(dag_bag, "magi_claims_start_date_long_ago")
    states = {task: task_instance(dag_run, task).state for task in ("batch", "generate", "long_video")}
    assert states == {"batch": "success", "generate": "success", "long_video": "success"}
    assert paid(books) == 2 + 1 + 2


def test_a_resume_within_the_try_keeps_the_start_and_a_new_try_starts_afresh() -> None:
    from airflow_provider_magi.paying.deadline import XCOM_TRY_STARTED, try_deadline, try_started

    class Ti(SimpleNamespace):
        def xcom_push(self, key: str, value: Any) -> None:
            store[key] = value

        def xcom_pull(self, task_ids: str, key: str, map_indexes: int) -> Any:
            return store.get(key)

    store: dict[str, Any] = {}
    long_ago = datetime.now(UTC) - timedelta(days=1)
    first = try_started({"ti": Ti(task_id="t", map_index=-1, try_number=1, start_date=long_ago)})  # type: ignore[typeddict-item]
    assert store[XCOM_TRY_STARTED] == {"try_number": 1, "started": first}
    # A resume is a new process with a new ti: it reads the start back.
    assert try_started({"ti": Ti(task_id="t", map_index=-1, try_number=1)}) == first  # type: ignore[typeddict-item]
    store[XCOM_TRY_STARTED] = {"try_number": 1, "started": first - 50}
    operator = SimpleNamespace(execution_timeout=timedelta(seconds=30))
    resumed = try_deadline(operator, {"ti": Ti(task_id="t", map_index=-1, try_number=1)})  # type: ignore[typeddict-item]
    assert resumed == first - 50 + 30  # the recorded start, not the resume's
    # Airflow 3.0 can keep a try's state into the next: the try number tells them apart.
    second = try_started({"ti": Ti(task_id="t", map_index=-1, try_number=2)})  # type: ignore[typeddict-item]
    assert second >= first and store[XCOM_TRY_STARTED] == {"try_number": 2, "started": second}


# ---------------------------------------------------------------- item 6: a batch to trust


def test_each_failed_input_s_reason_is_logged_and_the_summary_is_said_once(
    dag_bag: Any, books: LocalWaveSpeedServer, task_logs: Any
) -> None:
    dag_run = run_dag(dag_bag, "magi_claims_batch_reasons")
    assert dag_run.state == "success"  # fail_on_partial_error=False
    logs = task_logs()
    (first,) = lines_with(logs, "Batch: input 1 failed")
    (second,) = lines_with(logs, "Batch: input 3 failed")
    assert "safety filter" in first and "GPU lost" in second
    assert len(lines_with(logs, "Batch finished: 2/4 completed, 2 failed")) == 1
    progress = [line.split("Batch: ", 1)[1] for line in lines_with(logs, " so far")]
    assert progress and all(a != b for a, b in itertools.pairwise(progress))


def test_the_summary_and_the_log_say_how_many_prices_are_not_known_yet(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, task_logs: Any
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books, cost_lookup_seconds=0))
    dag_run = run_dag(dag_bag, "magi_claims_batch_waits_for_a_price")
    assert dag_run.state == "success"
    result = xcom(dag_run, "batch")
    assert result["succeeded"] == 4 and result["cost_usd"] == 0 and result["prices_unknown"] == 4
    assert len(lines_with(task_logs(), "Batch finished: 4/4 completed")) == 1
    assert "(4 price(s) not known yet" in lines_with(task_logs(), "Batch finished:")[0]


@pytest.mark.money
def test_waiting_for_a_price_is_said_once_not_at_every_wave(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, task_logs: Any
) -> None:
    """The model's first use today under a budget: one goes first, the rest wait for its price
    (billed 10 s after it completes: the resume after it ended reads no price yet, however busy
    the machine). The old code said so at every wave while nothing changed."""
    books.app.account.billing_delay = 10.0
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books, daily_budget_usd=100))
    dag_run = run_dag(dag_bag, "magi_claims_batch_waits_for_a_price")
    assert dag_run.state == "success"
    assert paid(books) == 4
    said = lines_with(task_logs(), "is not known yet; the next inputs wait for it")
    said = [line for line in said if "DeferTask" not in line]  # 3.0 logs the trigger's kwargs too
    assert len(said) == 1, said


def test_an_unmarked_file_is_adopted_only_by_a_writer_whose_ledger_shows_it_wrote_there(
    tmp_path: Path,
) -> None:
    """A manifest from a version that wrote no markers: the task instance that paid there (a
    retry after the upgrade) takes it over; any other is refused."""
    from airflow_provider_magi.paying.claims import claim, marker_of

    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("{}\n")
    me = {"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": -1}
    with pytest.raises(MagiInputError, match="no writer marker"):
        claim(manifest, me, what="the batch's manifest", fix="a folder of its own")
    assert not marker_of(manifest).exists()
    claim(manifest, me, what="the batch's manifest", fix="a folder of its own", adopt_unmarked=True)
    assert json.loads(marker_of(manifest).read_text()) == me
    other = {**me, "run_id": "r2"}
    with pytest.raises(MagiInputError, match="run_id=r,"):
        claim(manifest, other, what="the batch's manifest", fix="a folder of its own", adopt_unmarked=True)


def test_two_writers_that_both_found_a_file_url_free_are_not_both_let_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``file://`` destination is a local path (an ObjectStoragePath): its marker is created
    exclusively too. Both writers saw no marker (the instant two mapped tasks start together):
    the second must be refused, not replace the first's claim."""
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_magi.paying import claims

    target = ObjectStoragePath(f"file://{tmp_path}/film.mp4")
    first = {"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": 0}
    second = {**first, "map_index": 1}
    claims.claim(target, first, what="the long video", fix="put {map_index} in filename")
    # The second writer checked before the first wrote its marker: both found the path free.
    monkeypatch.setattr(type(claims.marker_of(target)), "exists", lambda self: False)
    with pytest.raises(MagiInputError, match="map_index=0"):
        claims.claim(target, second, what="the long video", fix="put {map_index} in filename")
    monkeypatch.undo()
    assert json.loads(claims.marker_of(target).read_text()) == first


def test_a_marker_whose_write_failed_does_not_lock_its_own_task_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk (or a kill) between creating the marker and writing it must not leave an empty
    marker that refuses the same task instance's retry for ever ("unreadable")."""
    from airflow_provider_magi.paying import claims

    target = tmp_path / "film.mp4"
    me = {"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": -1}
    real_open = Path.open

    class DiskFull:
        def __init__(self, file: Any) -> None:
            self.file = file

        def __enter__(self) -> DiskFull:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    def open_on_a_full_disk(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = real_open(self, mode, *args, **kwargs)
        return DiskFull(file) if mode == "x" else file

    monkeypatch.setattr(Path, "open", open_on_a_full_disk)
    with pytest.raises(OSError, match="No space"):
        claims.claim(target, me, what="the long video", fix="put {map_index} in filename")
    monkeypatch.undo()
    claims.claim(target, me, what="the long video", fix="put {map_index} in filename")  # the retry
    assert json.loads(claims.marker_of(target).read_text()) == me
