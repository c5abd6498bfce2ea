"""DAGs for the full-stack scenarios: each isolates one fault the deployment must survive."""

from __future__ import annotations

import os
import signal
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from airflow_provider_magi.operators.batch import MagiBatchOperator
from airflow_provider_magi.operators.download import MagiDownloadOutputsOperator
from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator

OUTPUT_DIR = os.environ.get("MAGI_OUTPUT_DIR", "/tmp/magi-it-videos")
# 60 mapped tasks: enough for the 3-a-second submit limit to bite many times and for 5xx polls
# to land on most of them; MAGI_IT_BATCH=200 (or more) for a soak.
BATCH = int(os.environ.get("MAGI_IT_BATCH", "60"))
FAST = {"poll_interval": 1.0, "max_poll_interval": 2.0}
START = datetime(2026, 1, 1)


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, catchup=False, max_active_tasks=256)


with _dag("magi_it_wait_many"):
    MagiGenerateVideoOperator.partial(task_id="generate", deferrable=True, **FAST).expand(
        prompt=[f"clip {i} [[duration: 30]]" for i in range(20)]
    )

with _dag("magi_it_worker_crash"):
    MagiGenerateVideoOperator(
        task_id="generate",
        prompt="a long take [[duration: 20]]",
        deferrable=False,
        retries=1,
        retry_delay=timedelta(seconds=1),
        **FAST,
    )

with _dag("magi_it_batch"):
    generate = MagiGenerateVideoOperator.partial(
        task_id="generate", deferrable=True, retries=2, retry_delay=timedelta(seconds=1), **FAST
    ).expand(prompt=[f"batch clip {i} [[duration: 5]]" for i in range(BATCH)])
    MagiDownloadOutputsOperator.partial(
        task_id="download",
        destination=OUTPUT_DIR,
        filename="batch/{map_index}_{prediction_id}.mp4",
        retries=2,
    ).expand(prediction=generate.output)

for name, prompt, conn_id, timeout in (
    ("failed", "x [[duration: 1]] [[fail: GPU out of memory]]", "magi_default", 600),
    ("bad_key", "x", "magi_bad_key", 600),
    ("timeout", "x [[never]]", "magi_default", 8),
):
    with _dag(f"magi_it_{name}"):
        MagiGenerateVideoOperator(
            task_id="generate",
            prompt=prompt,
            magi_conn_id=conn_id,
            timeout=timeout,
            deferrable=True,
            retries=2,
            retry_delay=timedelta(seconds=1),
            **FAST,
        )


class KilledBeforeTheLedgerWrite(MagiGenerateVideoOperator):
    """Try 1's process is SIGKILLed after WaveSpeed answered the POST, before the id is recorded:
    the one instant no client can close (the API has no idempotency key)."""

    def submit_job(self, context, ledger):  # type: ignore[no-untyped-def]
        if context["ti"].try_number == 1:

            def killed(*args, **kwargs):  # type: ignore[no-untyped-def]
                os.kill(os.getpid(), signal.SIGKILL)

            ledger.write_paid = killed
        return super().submit_job(context, ledger)


with _dag("magi_it_killed_before_ledger_write"):
    KilledBeforeTheLedgerWrite(
        task_id="generate",
        prompt="a paid take [[duration: 2]]",
        model="wavespeed-ai/magi-1-24b/ledger-scenario",  # alone in the history (see stack.py)
        deferrable=True,
        attach_to_single_candidate=True,
        retries=2,
        retry_delay=timedelta(seconds=1),
        **FAST,
    )

with _dag("magi_it_cleared"):
    MagiGenerateVideoOperator(
        task_id="generate", prompt="a cleared take [[duration: 1]]", deferrable=True, **FAST
    )

# A mapped list that a clear brings back in another order, map indexes running in parallel on
# the Celery workers: single videos and one-item batches, each mapped over [X, Y], then [Y, X].
REORDERED_X, REORDERED_Y = "reordered X [[duration: 2]]", "reordered Y [[duration: 2]]"

with _dag("magi_it_mapped_reordered"):

    @task
    def make_prompts() -> list[str]:
        from airflow.sdk import get_current_context

        first = get_current_context()["ti"].try_number == 1
        return [REORDERED_X, REORDERED_Y] if first else [REORDERED_Y, REORDERED_X]

    @task
    def make_inputs(prompts: list[str]) -> list[list[dict[str, str]]]:
        return [[{"prompt": f"batch {prompt}"}] for prompt in prompts]

    prompts = make_prompts()
    MagiGenerateVideoOperator.partial(task_id="videos", deferrable=True, **FAST).expand(prompt=prompts)
    MagiBatchOperator.partial(task_id="batches", deferrable=True, destination=OUTPUT_DIR, **FAST).expand(
        inputs=make_inputs(prompts)
    )
