"""DAGs for #31 item 2, one rendering per try (tests/test_rendering.py runs them).

Every shape (one video, a long video, a batch) takes a seed that renders to a new number each time
(the README's ``{{ range(0, 100000) | random }}``) and waits deferred, so each resume renders its
templates anew. The ``..._then_retried`` DAGs finish try 1 and fail it at the very end, as a
clear would re-run a finished task; ``change`` first replaces the upstream task's XCom, as when
the upstream task is cleared and returns a new prompt.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_magi.operators.batch import MagiBatchOperator
from airflow_provider_magi.operators.long_video import MagiLongVideoOperator
from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator

OUTPUT_DIR = os.environ.get("MAGI_TEST_OUTPUT_DIR", "/tmp/magi-test-output")
FAST = {"poll_interval": 0.1, "max_poll_interval": 0.2}
RANDOM_SEED = "{{ range(0, 100000) | random }}"
FIRST_PROMPT = "a lighthouse [[duration: 0.3]]"
NEW_PROMPT = "a harbour at night [[duration: 0.3]]"
UPSTREAM_PROMPT = "{{ ti.xcom_pull(task_ids='make_prompt') }}"
RETRY = {"retries": 1, "retry_delay": timedelta(seconds=0)}


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False)


class EndsTryOne:
    """Try 1 completes its work, then fails at the end (optionally after the upstream task's XCom
    got a new prompt); try 2 runs the same task again in the same DAG run."""

    change: bool = False

    def execute(self, context: Any) -> Any:
        # A prediction that completed before the first status read is not deferred for (a busy
        # machine): try 1 ends here then, as it does after a deferral.
        return self._end_try_one(context, super().execute(context))  # type: ignore[misc]

    def execute_complete(self, context: Any, event: Any = None) -> Any:
        return self._end_try_one(context, super().execute_complete(context, event))  # type: ignore[misc]

    def _end_try_one(self, context: Any, result: Any) -> Any:
        ti = context["ti"]
        if ti.try_number == 1:
            if self.change:
                from airflow.sdk.bases.xcom import BaseXCom

                BaseXCom.set(
                    key="return_value",
                    value=NEW_PROMPT,
                    dag_id=ti.dag_id,
                    task_id="make_prompt",
                    run_id=ti.run_id,
                )
            raise RuntimeError("try 1 ends here (its work is done and paid)")
        return result


class GenerateEndsTryOne(EndsTryOne, MagiGenerateVideoOperator):
    def __init__(self, *, change: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.change = change


class LongVideoEndsTryOne(EndsTryOne, MagiLongVideoOperator):
    def __init__(self, *, change: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.change = change


class BatchEndsTryOne(EndsTryOne, MagiBatchOperator):
    def __init__(self, *, change: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.change = change


@task
def make_prompt() -> str:
    return FIRST_PROMPT


# ---------------------------------------------------------------- a random seed, deferred

with _dag("magi_render_one_video"):
    MagiGenerateVideoOperator(
        task_id="generate", prompt=FIRST_PROMPT, seed=RANDOM_SEED, deferrable=True, **FAST
    )

with _dag("magi_render_long_video"):
    MagiLongVideoOperator(
        task_id="long_video",
        scenes=[
            {"prompt": "a lighthouse at dusk [[duration: 0.3]]", "seed": RANDOM_SEED},
            {"prompt": "the beam sweeps the sea [[duration: 0.3]]", "seed": RANDOM_SEED},
            {"prompt": "a ship turns toward it [[duration: 0.3]]", "seed": RANDOM_SEED},
        ],
        destination=OUTPUT_DIR,
        filename="render/{run_id}/film.mp4",
        deferrable=True,
        **FAST,
    )

with _dag("magi_render_batch"):
    MagiBatchOperator(
        task_id="batch",
        inputs=[{"prompt": f"batch item {i} [[duration: 0.3]]", "seed": RANDOM_SEED} for i in range(3)],
        destination=OUTPUT_DIR,
        filename="render/{run_id}/{index}.mp4",
        max_in_flight=1,  # one wave per item: a resume between every two submits
        deferrable=True,
        **FAST,
    )

# ---------------------------------------------------------------- a second try, data kept or changed

for change in (False, True):
    suffix = "changed" if change else "unchanged"
    with _dag(f"magi_render_one_video_then_retried_{suffix}"):
        make_prompt() >> GenerateEndsTryOne(
            task_id="generate",
            prompt=UPSTREAM_PROMPT,
            seed=RANDOM_SEED,
            change=change,
            deferrable=True,
            **RETRY,
            **FAST,
        )

    with _dag(f"magi_render_long_video_then_retried_{suffix}"):
        make_prompt() >> LongVideoEndsTryOne(
            task_id="long_video",
            scenes=[
                {"prompt": "a lighthouse at dusk [[duration: 0.3]]", "seed": RANDOM_SEED},
                {"prompt": UPSTREAM_PROMPT, "seed": RANDOM_SEED},
            ],
            destination=OUTPUT_DIR,
            filename="render/{run_id}/film.mp4",
            change=change,
            deferrable=True,
            **RETRY,
            **FAST,
        )

    with _dag(f"magi_render_batch_then_retried_{suffix}"):
        make_prompt() >> BatchEndsTryOne(
            task_id="batch",
            inputs=[
                {"prompt": "batch item 0 [[duration: 0.3]]", "seed": RANDOM_SEED},
                {"prompt": UPSTREAM_PROMPT, "seed": RANDOM_SEED},
            ],
            destination=OUTPUT_DIR,
            filename="render/{run_id}/{index}.mp4",
            change=change,
            max_in_flight=1,
            deferrable=True,
            **RETRY,
            **FAST,
        )

# ---------------------------------------------------------------- a record the previous version wrote


class PaidByTheOldVersion(MagiGenerateVideoOperator):
    """Try 1 leaves what the version before the rendering rule left: a paid record holding the
    template source, and no rendering record; then fails. Try 2 (this version) fails at its end
    too, as a retried execution_timeout would; try 3 must still reattach."""

    def execute_complete(self, context: Any, event: Any = None) -> Any:
        from dataclasses import replace

        from airflow_provider_magi.paying.rendering import RENDERING_RECORD

        result = super().execute_complete(context, event)
        ti = context["ti"]
        if ti.try_number == 1:
            ledger = self._open_ledger(context)
            record = ledger.read()
            assert record is not None and record.prediction_id is not None
            ledger.write_paid(replace(record, source=self._template_source), record.prediction_id)
            ledger.store.delete(RENDERING_RECORD)
        return self._end(ti, result)

    def execute(self, context: Any) -> Any:  # try 2 reattaches to a finished video: no deferral
        return self._end(context["ti"], super().execute(context))

    @staticmethod
    def _end(ti: Any, result: Any) -> Any:
        if ti.try_number < 3:
            raise RuntimeError(f"try {ti.try_number} ends here (its work is done and paid)")
        return result


with _dag("magi_render_one_video_after_upgrade"):
    PaidByTheOldVersion(
        task_id="generate",
        prompt=FIRST_PROMPT,
        seed=RANDOM_SEED,
        deferrable=True,
        retries=2,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

# ---------------------------------------------------------------- a value that follows the clock

# What a clock to the second does to a template: the same twice in a row at a try's first entry,
# another value at each resume. Made deterministic here: ``entry()`` moves on when the task defers.
_ENTRIES = {"n": 0}
CLOCK_SEED = "{{ entry() }}"


class DefersAnEntry:
    def defer(self, *args: Any, **kwargs: Any) -> Any:
        _ENTRIES["n"] += 1
        return super().defer(*args, **kwargs)  # type: ignore[misc]


class BatchOnTheClock(DefersAnEntry, MagiBatchOperator):
    pass


class LongVideoOnTheClock(DefersAnEntry, MagiLongVideoOperator):
    pass


with DAG(
    "magi_render_batch_on_the_clock",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    user_defined_macros={"entry": lambda: 1000 + _ENTRIES["n"]},
):
    BatchOnTheClock(
        task_id="batch",
        inputs=[{"prompt": f"clock item {i} [[duration: 0.3]]", "seed": CLOCK_SEED} for i in range(3)],
        destination=OUTPUT_DIR,
        filename="render/{run_id}/{index}.mp4",
        max_in_flight=1,
        deferrable=True,
        **FAST,
    )

with DAG(
    "magi_render_long_video_on_the_clock",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    user_defined_macros={"entry": lambda: 1000 + _ENTRIES["n"]},
):
    LongVideoOnTheClock(
        task_id="long_video",
        scenes=[
            {"prompt": "a lighthouse at dusk [[duration: 0.3]]", "seed": CLOCK_SEED},
            {"prompt": "the beam sweeps the sea [[duration: 0.3]]", "seed": CLOCK_SEED},
        ],
        destination=OUTPUT_DIR,
        filename="render/{run_id}/clock-film.mp4",
        deferrable=True,
        **FAST,
    )
