"""DAGs for issue 31 items 4 and 5: output paths claimed for every shape, and execution_timeout
with Airflow's meaning (a retried AirflowTaskTimeout, counted from when the try's execute began)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_magi.operators.batch import MagiBatchOperator
from airflow_provider_magi.operators.long_video import MagiLongVideoOperator
from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator

OUTPUT_DIR = os.environ.get("MAGI_TEST_OUTPUT_DIR", "/tmp/magi-test-output")
FAST = {"poll_interval": 0.2, "max_poll_interval": 0.4}
RETRY = {"retries": 1, "retry_delay": timedelta(seconds=0)}


def _dag(dag_id: str, **kwargs: Any) -> DAG:
    return DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, **kwargs)


# ---------------------------------------------------------------- claims

# Three paid videos, one path: refused before the first is paid.
with _dag("magi_claims_batch_one_path"):
    MagiBatchOperator(
        task_id="batch",
        inputs=[f"one path {i} [[duration: 0.2]]" for i in range(3)],
        destination=OUTPUT_DIR,
        filename="{dag_id}/{run_id}/{task_id}.mp4",
        **FAST,
    )

# Two tasks of one run, one folder: the second would overwrite the first's videos and manifest.
with _dag("magi_claims_batch_two_tasks"):
    first = MagiBatchOperator(
        task_id="first",
        inputs=[f"first task {i} [[duration: 0.2]]" for i in range(2)],
        destination=OUTPUT_DIR,
        filename="{dag_id}/{run_id}/{index}.mp4",
        **FAST,
    )
    second = MagiBatchOperator(
        task_id="second",
        inputs=[f"second task {i} [[duration: 0.2]]" for i in range(2)],
        destination=OUTPUT_DIR,
        filename="{dag_id}/{run_id}/{index}.mp4",
        **FAST,
    )
    first >> second

# A {ds} folder: two runs on one day share it.
with _dag("magi_claims_batch_daily"):
    MagiBatchOperator(
        task_id="batch",
        inputs=[f"daily {i} [[duration: 0.2]]" for i in range(2)],
        destination=OUTPUT_DIR,
        filename="{dag_id}/{ds}/{index}.mp4",
        **FAST,
    )

# A long video named by {ds}: two runs on one day share its path.
with _dag("magi_claims_long_video_daily"):
    MagiLongVideoOperator(
        task_id="long_video",
        scenes=[f"daily scene {n} [[duration: 0.2]]" for n in (1, 2)],
        destination=OUTPUT_DIR,
        filename="{dag_id}/{ds}.mp4",
        **FAST,
    )

# ---------------------------------------------------------------- execution_timeout

# Each prediction takes 12 s; each try may take 10 s: try 1 submits both and runs out while they
# run, the retry waits for them (paying nothing again) and delivers.
with _dag("magi_claims_batch_execution_timeout"):
    MagiBatchOperator(
        task_id="batch",
        inputs=[f"slow {i} [[duration: 12]]" for i in range(2)],
        destination=OUTPUT_DIR,
        execution_timeout=timedelta(seconds=10),
        **RETRY,
        **FAST,
    )

# Two scenes of 6 s, 8 s a try: try 1 pays both and runs out waiting for scene 2; a later try
# reuses both (paying nothing again), joins and delivers. Spare retries absorb a loaded machine.
with _dag("magi_claims_long_video_execution_timeout"):
    MagiLongVideoOperator(
        task_id="long_video",
        scenes=[f"slow scene {n} [[duration: 6]]" for n in (1, 2)],
        destination=OUTPUT_DIR,
        execution_timeout=timedelta(seconds=8),
        retries=3,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

A_DAY_AGO = timedelta(days=1)


def _started_long_ago(context: Any) -> None:
    """The task instance's start_date a day back, as a try queued behind a loaded worker sees
    it: the try's execute starts now, and only that counts."""
    from datetime import UTC

    context["ti"].start_date = datetime.now(UTC) - A_DAY_AGO


class BatchStartedLongAgo(MagiBatchOperator):
    def execute(self, context: Any) -> Any:
        _started_long_ago(context)
        return super().execute(context)


class GenerateStartedLongAgo(MagiGenerateVideoOperator):
    def execute(self, context: Any) -> Any:
        _started_long_ago(context)
        return super().execute(context)


class LongVideoStartedLongAgo(MagiLongVideoOperator):
    def execute(self, context: Any) -> Any:
        _started_long_ago(context)
        return super().execute(context)


with _dag("magi_claims_start_date_long_ago"):
    BatchStartedLongAgo(
        task_id="batch",
        inputs=[f"queued {i} [[duration: 0.3]]" for i in range(2)],
        destination=OUTPUT_DIR,
        execution_timeout=timedelta(seconds=120),
        **FAST,
    )
    GenerateStartedLongAgo(
        task_id="generate",
        prompt="queued one [[duration: 0.3]]",
        deferrable=True,
        execution_timeout=timedelta(seconds=120),
        **FAST,
    )
    LongVideoStartedLongAgo(
        task_id="long_video",
        scenes=[f"queued scene {n} [[duration: 0.3]]" for n in (1, 2)],
        destination=OUTPUT_DIR,
        execution_timeout=timedelta(seconds=120),
        **FAST,
    )

# ---------------------------------------------------------------- a batch a data team can trust

with _dag("magi_claims_batch_reasons"):
    MagiBatchOperator(
        task_id="batch",
        inputs=[
            "fine 0 [[duration: 0.2]]",
            "broken 1 [[duration: 0.2]] [[fail: safety filter]]",
            "fine 2 [[duration: 0.2]]",
            "broken 3 [[duration: 0.2]] [[fail: GPU lost]]",
        ],
        destination=OUTPUT_DIR,
        max_in_flight=4,
        fail_on_partial_error=False,
        **FAST,
    )

with _dag("magi_claims_batch_waits_for_a_price"):
    MagiBatchOperator(
        task_id="batch",
        inputs=[f"priced later {i} [[duration: 0.2]]" for i in range(4)],
        destination=OUTPUT_DIR,
        max_in_flight=4,
        **FAST,
    )
