"""N deferred generations in a real ``airflow triggerer`` on the full stack (#15).

PostgreSQL (a fresh database, dropped at the end), CeleryExecutor on Redis, api-server, scheduler,
dag-processor, triggerer and a Celery worker as separate processes (tests/integration/stack.py),
and the local WaveSpeed server. One DAG run maps N deferrable generate tasks; once all N are
deferred the bench measures the triggerer's CPU (its process and children) over a
quiet window, then completes the predictions spread over --spread seconds and measures, per task,
the delay from the server calling its prediction completed to the task's success.

    python bench/full_stack_triggerer.py [--waits 1000] [--poll-interval 10]

``[triggerer] capacity`` is raised as a user would (``AIRFLOW__TRIGGERER__CAPACITY``), and the
connection's ``max_polls_per_second`` covers N / poll interval with room to spare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _common import report, table  # noqa: E402

from tests.integration.stack import AirflowStack  # noqa: E402

KEY = "bench-full-stack-key"
DAG_ID = "magi_bench_fanout"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of a live process and all its descendants (from /proc)."""
    parents: dict[int, int] = {}
    used: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields after the name: state, ppid, ...; utime and stime are the 12th and 13th.
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = int(fields[11]) + int(fields[12])

    def in_tree(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parents.get(pid, 0)
        return False

    return sum(ticks for pid, ticks in used.items() if in_tree(pid)) / CLOCK_TICKS


def task_instances(stack: AirflowStack, run_id: str, **params: str) -> list[dict[str, Any]]:
    """Every mapped task instance of the run (the REST API pages them by 100)."""
    found: list[dict[str, Any]] = []
    while True:
        page = stack.rest(
            "GET",
            f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances",
            params={"limit": 100, "offset": len(found), **params},
        )
        found += page["task_instances"]
        if not page["task_instances"] or len(found) >= page["total_entries"]:
            return found


def states(stack: AirflowStack, run_id: str) -> Counter[str]:
    return Counter(str(ti["state"]) for ti in task_instances(stack, run_id))


def finished(stack: AirflowStack, run_id: str) -> dict[int, tuple[float, float]]:
    """map_index -> (the trigger's event recorded, the task succeeded), as Unix times."""
    return {
        int(ti["map_index"]): (
            # Set when the triggerer submits the event and the task goes back to scheduled.
            datetime.fromisoformat(ti["scheduled_when"]).timestamp(),
            datetime.fromisoformat(ti["end_date"]).timestamp(),
        )
        for ti in task_instances(stack, run_id, state="success")
    }


def submitted_ids(stack: AirflowStack) -> list[str]:
    """Every prediction the server accepted, in the order they were submitted."""
    return [
        r["prediction_id"] for r in stack.server_requests() if r["route"] == "submit" and r["status"] == 200
    ]


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--waits", type=int, default=1000)
    parser.add_argument("--poll-interval", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=60.0, help="seconds of steady waiting measured")
    parser.add_argument("--spread", type=float, default=60.0, help="completions spread over this")
    parser.add_argument("--workers", type=int, default=16, help="Celery worker concurrency")
    args = parser.parse_args()
    capacity = max(1000, int(args.waits * 1.2))
    budget = 1.5 * args.waits / args.poll_interval
    stack = AirflowStack(
        [ROOT / "bench" / "dags" / "magi_bench_fanout.py"],
        api_key=KEY,
        worker_concurrency=args.workers,
        extra_env={
            "MAGI_BENCH_WAITS": str(args.waits),
            "MAGI_BENCH_POLL_INTERVAL": str(args.poll_interval),
            "AIRFLOW__TRIGGERER__CAPACITY": str(capacity),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(args.waits),
            "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(1024, args.waits)),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        },
    )
    started = time.monotonic()
    try:
        stack.start()
        stack.rest(
            "POST",
            "/connections",
            json={
                "connection_id": "magi_default", "conn_type": "magi", "host": stack.wavespeed,
                "password": KEY, "extra": f'{{"max_polls_per_second": {budget}}}',
            },
        )  # fmt: skip
        run_id = stack.trigger(DAG_ID)
        deferring = time.monotonic()
        stack.wait_until(
            lambda: states(stack, run_id).get("deferred", 0) >= args.waits,
            timeout=3 * 3600,
            what=f"{args.waits} deferred tasks",
            interval=10,
        )
        deferred_after = time.monotonic() - deferring
        triggerer = stack.processes["triggerer"].pid
        time.sleep(args.poll_interval)  # let the last triggers settle into their rhythm
        polls_before = sum(1 for r in stack.server_requests() if r["route"] == "result")
        cpu_before, window_start = tree_cpu_seconds(triggerer), time.monotonic()
        time.sleep(args.window)
        cpu = tree_cpu_seconds(triggerer) - cpu_before
        window = time.monotonic() - window_start
        polls = sum(1 for r in stack.server_requests() if r["route"] == "result") - polls_before
        completed_at: dict[str, float] = {}
        ids = submitted_ids(stack)
        for prediction_id in ids:
            time.sleep(args.spread / max(1, len(ids)))
            requests.post(f"{stack.wavespeed}/_testing/complete", params={"id": prediction_id}, timeout=30)
            completed_at[prediction_id] = time.time()
        stack.wait_until(
            lambda: states(stack, run_id).get("success", 0) >= args.waits,
            timeout=3 * 3600,
            what="every task to succeed",
            interval=10,
        )
        done = finished(stack, run_id)
        to_event, to_success = [], []
        for index, (event, ended) in done.items():
            prediction_id = stack.xcom(DAG_ID, run_id, "generate", map_index=index)["prediction_id"]
            to_event.append(event - completed_at[prediction_id])
            to_success.append(ended - completed_at[prediction_id])
    finally:
        stack.stop()
    per_poll_us = cpu / max(1, polls) * 1e6
    ideal = args.waits * window / args.poll_interval
    rows = [
        [
            args.waits,
            capacity,
            f"{budget:.0f}",
            f"{deferred_after:.0f}",
            f"{cpu / window:.3f}",
            f"{polls} ({polls / ideal:.0%} of ideal)",
            f"{per_poll_us:,.0f}",
            f"{pct(to_event, 50):.1f} / {pct(to_event, 95):.1f} / {max(to_event):.1f}",
            f"{pct(to_success, 50):.1f} / {pct(to_success, 95):.1f} / {max(to_success):.1f}",
        ]
    ]
    report(
        "Full stack: N deferred generations in one airflow triggerer",
        table(
            [
                "deferred tasks",
                "[triggerer] capacity",
                "max_polls_per_second",
                "s to defer all",
                "triggerer CPU (cores) while waiting",
                f"polls in {window:.0f} s",
                "triggerer CPU µs per poll",
                "completion to event recorded p50 / p95 / max (s)",
                "completion to task success p50 / p95 / max (s)",
            ],
            rows,
        ),
        f"PostgreSQL, CeleryExecutor on Redis ({args.workers} worker slots), one triggerer; polls every "
        f"{args.poll_interval:.0f} s; completions spread over {args.spread:.0f} s. Triggerer CPU is the "
        "triggerer process and its children (supervisor and trigger runner), including Airflow's own "
        "heartbeats and trigger bookkeeping. Event recorded: the triggerer saw the prediction "
        "completed and put the task back to scheduled (the triggerer's part); success: the "
        "scheduler queued it and a worker ran execute_complete. "
        "Whole run: "
        f"{time.monotonic() - started:.0f} s.",
    )


if __name__ == "__main__":
    main()
