"""One DAG run of N deferrable generations, for bench/full_stack_triggerer.py.

The predictions never finish on their own (duration far beyond the run): the bench completes
them when every task is deferred, so it knows each completion's time to the millisecond.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator

WAITS = int(os.environ.get("MAGI_BENCH_WAITS", "1000"))
POLL = float(os.environ.get("MAGI_BENCH_POLL_INTERVAL", "10"))

with DAG(
    "magi_bench_fanout",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_tasks=WAITS,
):
    MagiGenerateVideoOperator.partial(
        task_id="generate", deferrable=True, poll_interval=POLL, max_poll_interval=POLL
    ).expand(prompt=[f"bench clip {i} [[duration: 86400]]" for i in range(WAITS)])
