"""How many times a batch task resumes after a deferral: 1,000 inputs at max_in_flight=50 (#31).

A resume costs a worker slot and, on Airflow 3.3.2 with LocalExecutor, meets a race that can fail
the task ("executor reported ... success, but the task instance's state attribute is queued";
apache/airflow#66374). This bench drives the batch's own loop shape against the local server (in
its own process): submit a wave into the free slots, defer to a real ``MagiBatchTrigger``, count
its event as one resume, and repeat until every input ended. Two rules, in the same run, against
the same server and the same random durations:

- ``before``: the rule until 2026-12 (resume once a quarter of max_in_flight ended, or once the
  first that ended waited a poll interval);
- ``after``: the product's rule now (``operators.batch.resume_after``: a wave's worth of free slots,
  or all of them once nothing is left to submit).

Reported: resumes, and the batch's wall time (slots left idle while a wave fills cost
throughput). Durations are scaled down (seconds, not minutes): resumes depend on the ratio of
duration to poll interval, which is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report, start_local_server, table, use_local_connection

API_KEY = "bench-key"
MODEL = "wavespeed-ai/magi-1-24b"


def before_rule(running: int, pending: int, max_in_flight: int) -> tuple[int, float | None]:
    return max(1, min(running, math.ceil(max_in_flight * 0.25))), POLL


def after_rule(running: int, pending: int, max_in_flight: int) -> tuple[int, float | None]:
    from airflow_provider_magi.operators.batch import resume_after

    return resume_after(running, pending, max_in_flight), None


POLL = 1.0


async def run_batch(
    client: httpx.Client, durations: list[float], max_in_flight: int, rule: str
) -> dict[str, float]:
    from airflow_provider_magi.triggers.batch import MagiBatchTrigger

    decide = before_rule if rule == "before" else after_rule
    pending = list(range(len(durations)))
    running: set[str] = set()
    resumes = 0
    since = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    started = time.time()
    while pending or running:
        while pending and len(running) < max_in_flight:  # the wave: every free slot
            index = pending.pop(0)
            body = client.post(
                f"/api/v3/{MODEL}", json={"prompt": f"item {index} [[duration: {durations[index]:.2f}]]"}
            ).json()["data"]
            running.add(body["id"])
        after, latency = decide(len(running), len(pending), max_in_flight)
        trigger = MagiBatchTrigger(
            prediction_ids=sorted(running),
            model=MODEL,
            created_after=since,
            resume_after=after,
            resume_latency=latency,
            poll_interval=POLL,
            max_poll_interval=POLL,
            pause=POLL,
        )
        async for event in trigger.run():
            resumes += 1
            running -= {result["prediction_id"] for result in event.payload["ended"]}
    return {"resumes": resumes, "wall": time.time() - started}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--max-in-flight", type=int, default=50)
    parser.add_argument("--min-duration", type=float, default=4.0, help="seconds (poll interval 1 s)")
    parser.add_argument("--max-duration", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    durations = [rng.uniform(args.min_duration, args.max_duration) for _ in range(args.count)]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        server, base = start_local_server(Path(folder) / "port", "--api-key", API_KEY, "--balance", "100000")
        try:
            use_local_connection(base, API_KEY)
            headers = {"Authorization": f"Bearer {API_KEY}"}
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                results = {
                    rule: asyncio.run(run_batch(client, durations, args.max_in_flight, rule))
                    for rule in ("before", "after")
                }
        finally:
            server.terminate()
            server.wait(timeout=10)
    for rule, r in results.items():
        rows.append(
            [
                rule,
                args.count,
                args.max_in_flight,
                r["resumes"],
                f"{r['wall']:.0f}",
            ]
        )
    b, a = results["before"], results["after"]
    report(
        f"Batch resumes (bench/batch_resumes.py, {args.count} inputs, max_in_flight {args.max_in_flight}, "
        f"{args.min_duration:g}-{args.max_duration:g} s each, poll {POLL:g} s)",
        table(["Rule", "Inputs", "max_in_flight", "Resumes", "Wall s"], rows),
        f"after / before: resumes {a['resumes'] / b['resumes']:.2f}x, wall time {a['wall'] / b['wall']:.2f}x "
        "(same run, same server, same durations).",
    )


if __name__ == "__main__":
    main()
