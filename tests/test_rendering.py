"""#31 item 2: one rendering per try, for every shape (one video, a long video, a batch).

Each DAG test counts what the local server created (what WaveSpeed bills) and the POSTs it saw.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_magi.paying.rendering import (
    RENDERING_RECORD,
    RenderingRecord,
    leaves,
    one_rendering,
    path_text,
    put_back,
)
from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.helpers import DAG_TEST_LOGS_EXCEPTIONS, run_dag, task_instance, xcom

FIRST_PROMPT = "a lighthouse [[duration: 0.3]]"
NEW_PROMPT = "a harbour at night [[duration: 0.3]]"


def paid(server: LocalWaveSpeedServer) -> int:
    """Predictions the server created, each from one POST (none was resent)."""
    created = len(server.app.predictions)
    assert server.count("submit") == created
    return created


def prompts(server: LocalWaveSpeedServer) -> list[str]:
    return [p.inputs["prompt"] for p in sorted(server.app.predictions.values(), key=lambda p: p.started)]


# ---------------------------------------------------------------- the rule, as a function


class Store(dict[str, str]):
    def read(self, name: str) -> str | None:
        return self.get(name)

    def write(self, name: str, text: str) -> None:
        self[name] = text


def _enter(store: Store, rendered: dict[str, Any], again: dict[str, Any] | None, try_number: int) -> Any:
    return one_rendering(
        rendered=rendered,
        render_again=None if again is None else (lambda names: {n: again[n] for n in names}),
        try_number=try_number,
        read=store.read,
        write=store.write,
        where="a dict",
        log=__import__("logging").getLogger("test"),
    )


def test_a_resume_keeps_the_first_entrys_rendering_and_a_later_try_names_what_changed() -> None:
    store = Store()
    first = {"inputs": [{"prompt": "a", "seed": 1}, {"prompt": "b", "seed": 2}]}
    entry = _enter(store, first, {"inputs": [{"prompt": "a", "seed": 9}, {"prompt": "b", "seed": 8}]}, 1)
    assert entry.values == first and entry.earlier is None
    record = RenderingRecord.from_json(store[RENDERING_RECORD], where="x")
    assert [path_text(p) for p, _ in record.varying] == ["inputs[0].seed", "inputs[1].seed"]
    resumed = _enter(store, {"inputs": [{"prompt": "a", "seed": 5}, {"prompt": "b", "seed": 6}]}, None, 1)
    assert resumed.values == first and resumed.changed == []
    retried = _enter(
        store,
        {"inputs": [{"prompt": "a", "seed": 7}, {"prompt": "B", "seed": 3}]},
        {"inputs": [{"prompt": "a", "seed": 4}, {"prompt": "B", "seed": 0}]},
        2,
    )
    assert retried.values == {"inputs": [{"prompt": "a", "seed": 1}, {"prompt": "B", "seed": 2}]}
    assert retried.changed == ["inputs[1].prompt"]


def test_data_that_changes_mid_try_is_named_and_used_as_rendered_then() -> None:
    store = Store()
    _enter(store, {"prompt": "a", "seed": 1}, {"prompt": "a", "seed": 2}, 1)
    resumed = _enter(store, {"prompt": "b", "seed": 3}, None, 1)
    assert resumed.values == {"prompt": "b", "seed": 1}
    assert resumed.changed == ["prompt"]


def test_a_thousand_item_batch_keeps_a_small_record() -> None:
    store = Store()
    items = [{"prompt": f"a long prompt about item {i} " * 5, "seed": i} for i in range(1000)]
    again = [{**item, "seed": item["seed"] + 1} for item in items]
    _enter(store, {"inputs": items}, {"inputs": again}, 1)
    size = len(store[RENDERING_RECORD])
    assert size < 60_000, size  # the prompts alone are ~140 kB; only seeds and digests are kept


def test_put_back_leaves_a_path_that_is_gone_alone() -> None:
    assert put_back([{"seed": 1}], (0, "seed"), 5) == ([{"seed": 5}], True)
    assert put_back([{"seed": 1}], (3, "seed"), 5) == ([{"seed": 1}], False)
    assert set(leaves({"a": [1, {"b": 2}]}, ("x",))) == {("x", "a", 0), ("x", "a", 1, "b")}


# ---------------------------------------------------------------- every shape, deferred


@pytest.mark.money
def test_one_video_with_a_random_seed_pays_once(dag_bag: Any, magi_conn: LocalWaveSpeedServer) -> None:
    dag_run = run_dag(dag_bag, "magi_render_one_video")
    assert dag_run.state == "success"
    assert paid(magi_conn) == 1
    (prediction,) = magi_conn.app.predictions.values()
    assert xcom(dag_run, "generate")["inputs"]["seed"] == prediction.inputs["seed"]


@pytest.mark.money
def test_a_long_video_with_random_seeds_pays_once_per_scene(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_render_long_video")
    assert dag_run.state == "success"
    assert paid(magi_conn) == 3
    assert xcom(dag_run, "long_video")["prediction_ids"] == [
        p.id for p in sorted(magi_conn.app.predictions.values(), key=lambda p: p.started)
    ]


@pytest.mark.money
def test_a_batch_with_random_seeds_pays_once_per_item(dag_bag: Any, magi_conn: LocalWaveSpeedServer) -> None:
    dag_run = run_dag(dag_bag, "magi_render_batch")
    assert dag_run.state == "success"
    assert paid(magi_conn) == 3
    assert sorted(prompts(magi_conn)) == [f"batch item {i} [[duration: 0.3]]" for i in range(3)]


# ---------------------------------------------------------------- a second try: data kept or changed

SHAPES = [
    ("one_video", "generate", 1),  # (dag, task, predictions try 1 pays for)
    ("long_video", "long_video", 2),
    ("batch", "batch", 2),
]


@pytest.mark.money
@pytest.mark.parametrize(("shape", "task_id", "first"), SHAPES)
def test_a_second_try_with_unchanged_upstream_data_pays_for_nothing(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer, shape: str, task_id: str, first: int
) -> None:
    dag_run = run_dag(dag_bag, f"magi_render_{shape}_then_retried_unchanged")
    assert dag_run.state == "success"
    assert task_instance(dag_run, task_id).try_number == 2
    assert paid(magi_conn) == first
    assert NEW_PROMPT not in prompts(magi_conn)


@pytest.mark.money
@pytest.mark.parametrize(("shape", "task_id", "first"), SHAPES)
def test_a_second_try_with_a_new_upstream_prompt_pays_once_for_it_and_says_so(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer, task_logs: Any, shape: str, task_id: str, first: int
) -> None:
    dag_run = run_dag(dag_bag, f"magi_render_{shape}_then_retried_changed")
    assert dag_run.state == "success"
    assert task_instance(dag_run, task_id).try_number == 2
    assert paid(magi_conn) == first + 1  # the changed input (for a long video: its last scene)
    assert prompts(magi_conn)[-1] == NEW_PROMPT
    assert prompts(magi_conn).count(NEW_PROMPT) == 1
    field = {"one_video": "prompt", "long_video": "scenes[1].prompt", "batch": "inputs[1].prompt"}[shape]
    assert f"the data behind {field} changed since try 1" in task_logs()
    if shape == "one_video":  # the result names the inputs of the video it returns
        result = xcom(dag_run, task_id)
        assert result["inputs"]["prompt"] == NEW_PROMPT
        assert magi_conn.app.predictions[result["prediction_id"]].inputs["prompt"] == NEW_PROMPT


@pytest.mark.money
def test_a_record_of_the_previous_version_reattaches_in_every_later_try(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer
) -> None:
    """An upgrade mid-task: the record holds the template source and no rendering was recorded.
    Try 2 reattaches by the source and records its own rendering; try 3 must reattach too (the
    record still holds try 1's seed), not pay again because a rendering record now exists."""
    dag_run = run_dag(dag_bag, "magi_render_one_video_after_upgrade")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "generate").try_number == 3
    assert paid(magi_conn) == 1


@pytest.mark.money
@pytest.mark.parametrize(("shape", "task_id"), [("batch", "batch"), ("long_video", "long_video")])
def test_a_value_that_follows_the_clock_never_pays_again_at_a_resume(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer, task_logs: Any, shape: str, task_id: str
) -> None:
    """A seed that renders the same twice at the first entry and anew at each resume (a clock to
    the second): paid for as rendered at each resume, every resume paid for item 0 (scene 1)
    again, without end. The try stops instead, having paid for the first wave only."""
    dag_run = run_dag(dag_bag, f"magi_render_{shape}_on_the_clock")
    assert dag_run.state == "failed"
    assert paid(magi_conn) == 1
    if DAG_TEST_LOGS_EXCEPTIONS:
        assert "rendered differently at this resume" in task_logs()


def test_a_first_entry_never_takes_a_record_of_its_own_try_number_as_its_own() -> None:
    """A DAG run deleted and created again under its run id (``airflow dags test`` for a date, on a
    store keyed by the run id) meets the old run's record of try 1 at its own try 1's first entry:
    that is not a resume, so nothing of the old run is put back and this entry records afresh."""
    store = Store()
    _enter(store, {"prompt": "a", "seed": 1}, {"prompt": "a", "seed": 2}, 1)
    entry = one_rendering(
        rendered={"prompt": "b", "seed": 3},
        render_again=lambda names: {"prompt": "b", "seed": 4},
        try_number=1,
        read=store.read,
        write=store.write,
        where="a dict",
        log=__import__("logging").getLogger("test"),
        resuming=False,
    )
    assert entry.values == {"prompt": "b", "seed": 3} and entry.earlier is None and entry.changed == []
    assert RenderingRecord.from_json(store[RENDERING_RECORD], where="x").varying == [(("seed",), 3)]
