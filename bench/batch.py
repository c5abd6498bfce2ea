"""One batch against N mapped tasks: the wait in the triggerer, same machine, same run (#27).

For each shape, in a fresh child process against a fresh local server in its own process (its
CPU is not counted), N predictions are submitted (each takes a random --min-duration ..
--max-duration seconds) and then waited for the way a triggerer would:

- ``mapped``: N ``MagiPredictionTrigger`` in one event loop (what N mapped generate tasks defer to);
- ``batch``: one ``MagiBatchTrigger`` over all of them; each time it fires (a quarter of
  --max-in-flight ended) it is started again over the ids still running, as the batch task does
  after a resume.

Reported: the waiting process's CPU (seconds, and cores over the wait), status calls in all and
per poll cycle (history pages for the batch, result GETs for the mapped shape), the time from the
server marking a prediction completed to the wait noticing it (p50/p95), and peak RSS. What this
does not measure: Airflow's own per-trigger and per-task bookkeeping (trigger rows, resumes,
worker slots), which the mapped shape pays N times and the batch once per resume;
bench/full_stack_triggerer.py measures that part for the mapped shape.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import resource
import statistics
import subprocess
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


def submit(base: str, count: int, low: float, high: float) -> dict[str, float]:
    """Create ``count`` predictions; id -> the Unix time the server calls it completed."""
    done_at: dict[str, float] = {}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as client:
        for _ in range(count):
            duration = random.uniform(low, high)
            body = client.post(f"/api/v3/{MODEL}", json={"prompt": f"x [[duration: {duration}]]"}).json()[
                "data"
            ]
            created = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00")).timestamp()
            done_at[body["id"]] = created + duration
    return done_at


async def wait_mapped(ids: list[str], poll: float) -> dict[str, float]:
    from airflow_provider_magi.triggers.magi import MagiPredictionTrigger

    async def one(prediction_id: str) -> float:
        async for _event in MagiPredictionTrigger(
            prediction_id, poll_interval=poll, max_poll_interval=poll
        ).run():
            return time.time()
        raise AssertionError("no event")

    ends = await asyncio.gather(*(one(i) for i in ids))
    return dict(zip(ids, ends, strict=True))


async def wait_batch(ids: list[str], poll: float, max_in_flight: int) -> tuple[dict[str, float], int, int]:
    from airflow_provider_magi.triggers.batch import MagiBatchTrigger

    noticed: dict[str, float] = {}
    since = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    running_span: list[str] | None = None
    fires = cycles = 0
    while len(noticed) < len(ids):
        running = [i for i in ids if i not in noticed]
        trigger = MagiBatchTrigger(  # as the task defers again after a resume
            prediction_ids=running,
            model=MODEL,
            created_after=running_span[0] if running_span else since,
            created_before=running_span[1] if running_span else None,
            pause=poll,  # what was just submitted or read needs no second look at once
            resume_after=max(1, min(len(running), math.ceil(max_in_flight * 0.25))),
            poll_interval=poll,
            max_poll_interval=poll,
        )
        async for event in trigger.run():
            fires += 1
            cycles += event.payload["cycles"]
            now = time.time()
            for result in event.payload["ended"]:
                noticed.setdefault(result["prediction_id"], now)
            running_span = event.payload["running_span"]
    return noticed, fires, cycles


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def child(shape: str, args: argparse.Namespace, out: Path) -> None:
    """One shape, measured in this (child) process."""
    # Airflow and the provider load before the clock starts: an import is not a wait's cost.
    import airflow_provider_magi.hooks.magi
    import airflow_provider_magi.triggers.batch
    import airflow_provider_magi.triggers.magi  # noqa: F401

    with tempfile.TemporaryDirectory() as folder:
        server, base = start_local_server(Path(folder) / "port", "--api-key", API_KEY)
        try:
            use_local_connection(base, API_KEY)
            done_at = submit(base, args.count, args.min_duration, args.max_duration)
            ids = list(done_at)
            started, cpu = time.time(), cpu_seconds()
            if shape == "mapped":
                noticed, fires = asyncio.run(wait_mapped(ids, args.poll_interval)), len(ids)
                cycles = 0
            else:
                noticed, fires, cycles = asyncio.run(wait_batch(ids, args.poll_interval, args.max_in_flight))
            wall, cpu = time.time() - started, cpu_seconds() - cpu
            seen = httpx.get(f"{base}/_testing/requests", timeout=60).json()
        finally:
            server.terminate()
            server.wait(timeout=10)
    calls = sum(1 for r in seen if r["route"] in ("history", "result"))
    # Mapped: one cycle polls every waiting prediction once; batch: the trigger counts its cycles.
    cycles = cycles or wall / args.poll_interval
    delays = [noticed[i] - done_at[i] for i in ids]
    out.write_text(
        json.dumps(
            {
                "shape": shape,
                "wall": wall,
                "cpu": cpu,
                "calls": calls,
                "calls_per_cycle": calls / cycles,
                "fires": fires,
                "p50": pct(delays, 50),
                "p95": pct(delays, 95),
                "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000, help="predictions per shape")
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--min-duration", type=float, default=20.0)
    parser.add_argument("--max-duration", type=float, default=30.0)
    parser.add_argument("--max-in-flight", type=int, default=1000, help="the batch's; sets when it fires")
    parser.add_argument("--shape", choices=["mapped", "batch"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shape:
        child(args.shape, args, Path(args.out))
        return
    rows = []
    for shape in ("mapped", "batch"):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run(
                [sys.executable, __file__, "--shape", shape, "--out", out.name, *sys.argv[1:]], check=True
            )
            r = json.loads(Path(out.name).read_text())
        ideal = math.ceil(args.count / 100) + 1 if shape == "batch" else args.count
        rows.append(
            [
                shape,
                args.count,
                f"{r['wall']:.1f}",
                f"{r['cpu']:.2f}",
                f"{r['cpu'] / r['wall']:.4f}",
                r["calls"],
                f"{r['calls_per_cycle']:.1f} (bound {ideal})",
                r["fires"],
                f"{r['p50']:.1f} / {r['p95']:.1f}",
                f"{r['rss_mib']:.0f}",
            ]
        )
    report(
        f"Batch wait against mapped waits (bench/batch.py, {args.count} predictions, "
        f"{args.min_duration:g}-{args.max_duration:g} s each, poll {args.poll_interval:g} s)",
        table(
            [
                "Shape",
                "Predictions",
                "Wait s",
                "CPU s",
                "Cores while waiting",
                "Status calls",
                "Calls per poll cycle",
                "Events (task resumes)",
                "Completion to noticed p50 / p95 s",
                "Peak RSS MiB",
            ],
            rows,
        ),
        "The waiting process only (one event loop, as in a triggerer); the local server ran in its "
        "own process. Airflow's per-trigger bookkeeping is not in these figures (see the module's "
        "docstring).",
    )


if __name__ == "__main__":
    main()
