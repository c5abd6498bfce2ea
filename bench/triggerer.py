"""Triggerer scale: N MagiPredictionTriggers in one event loop, as a triggerer runs them.

The local server runs in its own process (its CPU is not counted); predictions take a random
--min-duration..--max-duration seconds. For each N the provider's triggers (one shared pooled
session and poll budget per key) are compared with the naive way (a new HTTP client per poll).
Reported: TCP connections opened, requests per prediction against the ideal (duration / poll
interval), CPU seconds per 1,000 predictions and CPU µs per poll next to the floor's (a bare
asyncio-streams client, bench/poll_cost.py, measured against the same server just before the
row), event-loop lag, and the delay from the moment the server marks a prediction completed to
the trigger's event (p50/p95). The last column checks #15's targets for the provider's rows:
polls per prediction within 10 % of ideal, p95 <= poll interval + 2 s, loop lag max < 250 ms,
TCP connections <= the pool size.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

# One status line per prediction per change would swamp the table (and cost CPU we measure).
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report, start_local_server, table
from poll_cost import floor_client

from airflow_provider_magi.hooks.async_client import MAX_ASYNC_CONNECTIONS
from airflow_provider_magi.triggers.magi import MagiPredictionTrigger

API_KEY = "bench-key"


def submit(base: str, count: int, low: float, high: float) -> dict[str, float]:
    """Create ``count`` predictions; return id -> Unix time the server will call it completed."""
    done_at: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for _ in range(count):
            duration = random.uniform(low, high)
            data = client.post(
                "/api/v3/wavespeed-ai/magi-1-24b", json={"prompt": f"x [[duration: {duration}]]"}
            )
            body = data.json()["data"]
            created = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00")).timestamp()
            done_at[body["id"]] = created + duration
    return done_at


async def lag_monitor(samples: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.1)
        samples.append(loop.time() - before - 0.1)


async def provider_wait(prediction_id: str, poll: float) -> float:
    async for _event in MagiPredictionTrigger(
        prediction_id, poll_interval=poll, max_poll_interval=poll
    ).run():
        return time.time()
    raise AssertionError("trigger ended without an event")


async def naive_wait(base: str, prediction_id: str, poll: float) -> float:
    """What most providers' triggers do: a fresh client (and TCP connection) for every poll."""
    while True:
        try:
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}) as client:
                answer = await client.get(f"{base}/api/v3/predictions/{prediction_id}/result")
            if answer.status_code == 200 and answer.json()["data"]["status"] in ("completed", "failed"):
                return time.time()
        except httpx.HTTPError:
            pass  # as a naive trigger would: try again next interval
        await asyncio.sleep(poll)


def sync_wait(prediction_id: str, poll: float) -> float:
    """A worker slot per prediction: the operator's non-deferrable wait, one thread standing in for
    each worker process (a real slot also holds a whole Python process, ~150 MB RSS here)."""
    from airflow_provider_magi.hooks.magi import MagiHook
    from airflow_provider_magi.waiting import Waiter

    MagiHook().wait_for_prediction(Waiter(prediction_id, poll_interval=poll, max_poll_interval=poll))
    return time.time()


async def run(
    mode: str, base: str, done_at: dict[str, float], poll: float
) -> tuple[list[float], list[float]]:
    if mode == "sync":
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(done_at)) as pool:
            finished = list(pool.map(lambda pid: sync_wait(pid, poll), done_at))
        return [end - done_at[pid] for pid, end in zip(done_at, finished, strict=True)], [0.0]
    stop = asyncio.Event()
    lags: list[float] = []
    monitor = asyncio.create_task(lag_monitor(lags, stop))
    if mode == "provider":
        waits = [provider_wait(pid, poll) for pid in done_at]
    else:
        waits = [naive_wait(base, pid, poll) for pid in done_at]
    finished = await asyncio.gather(*waits)
    stop.set()
    await monitor
    delays = [end - done_at[pid] for pid, end in zip(done_at, finished, strict=True)]
    return delays, lags


def floor_per_poll(base: str, prediction_id: str, polls: int = 3000) -> float:
    """CPU µs per GET of the bare asyncio-streams floor client, against this server, now."""
    path = f"/api/v3/predictions/{prediction_id}/result"
    before = cpu_seconds()
    asyncio.run(floor_client(base, path, polls, 64, key=API_KEY))
    return (cpu_seconds() - before) / polls * 1e6


class GCPauses:
    """The longest pause of CPython's cyclic garbage collector while in use (it stops the loop)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._started)

    def __enter__(self) -> GCPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument(
        "--naive-sizes", default="1000", help="naive opens a connection per poll: keep it small"
    )
    parser.add_argument("--sync-sizes", default="200", help="one thread per waiting prediction")
    parser.add_argument("--poll-interval", type=float, default=10.0)
    parser.add_argument("--min-duration", type=float, default=60.0)
    parser.add_argument("--max-duration", type=float, default=90.0)
    parser.add_argument(
        "--polls-per-second", type=float, default=1000.0, help="the shared budget for the run"
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        server, base = start_local_server(port_file, "--api-key", API_KEY)
        conn = {"conn_type": "magi", "host": base, "password": API_KEY,
                "extra": {"max_polls_per_second": args.polls_per_second}}  # fmt: skip
        os.environ["AIRFLOW_CONN_MAGI_DEFAULT"] = json.dumps(conn)
        try:
            plans = [("provider", int(n)) for n in args.sizes.split(",")]
            plans += [("naive", int(n)) for n in args.naive_sizes.split(",") if n]
            plans += [("sync", int(n)) for n in args.sync_sizes.split(",") if n]
            for mode, size in plans:
                httpx.post(f"{base}/_testing/reset", timeout=30)
                floor = floor_per_poll(base, next(iter(submit(base, 1, 3600, 3600))))
                httpx.post(f"{base}/_testing/reset", timeout=30)
                done_at = submit(base, size, args.min_duration, args.max_duration)
                cpu_before = cpu_seconds()
                with GCPauses() as pauses:
                    delays, lags = asyncio.run(run(mode, base, done_at, args.poll_interval))
                cpu = cpu_seconds() - cpu_before
                seen = httpx.get(f"{base}/_testing/requests", timeout=60).json()
                polls = [r for r in seen if r["route"] == "result"]
                # One poll at the start, then one per interval until done.
                ideal = 1 + (args.min_duration + args.max_duration) / 2 / args.poll_interval
                per_prediction = len(polls) / size
                connections = len({r["client"] for r in polls})
                p95 = pct(delays, 95)
                lag_max = max(lags)
                targets = {
                    "polls": abs(per_prediction - ideal) <= 0.1 * ideal,
                    "p95": p95 <= args.poll_interval + 2,
                    "lag": lag_max < 0.25,
                    "conns": connections <= MAX_ASYNC_CONNECTIONS,
                }
                missed = [name for name, met in targets.items() if not met]
                rows.append(
                    [
                        mode,
                        size,
                        connections,
                        f"{per_prediction:.1f} (ideal ~{ideal:.1f})",
                        f"{cpu / size * 1000:.1f}",
                        f"{cpu / max(1, len(polls)) * 1e6:,.0f} / {floor:,.0f}",
                        "-" if mode == "sync" else f"{pct(lags, 50) * 1000:.1f} / {lag_max * 1000:.0f}",
                        f"{pauses.longest * 1000:.0f}",
                        size if mode == "sync" else 0,
                        f"{pct(delays, 50):.2f} / {p95:.2f}",
                        ("all met" if not missed else "missed: " + ", ".join(missed))
                        if mode == "provider"
                        else "-",
                    ]
                )
                print(rows[-1], flush=True)
        finally:
            server.terminate()
            server.wait(timeout=10)
    notes = (
        f"Predictions take {args.min_duration:.0f}-{args.max_duration:.0f} s (uniform); poll interval "
        f"{args.poll_interval:.0f} s; shared budget {args.polls_per_second:.0f} polls/s. The local server "
        "runs in its own process. sync = the operator's worker wait (deferrable=False), one thread per "
        "prediction standing in for a worker slot each: it holds N slots for the whole duration; "
        "deferred triggers hold none."
    )
    headers = [
        "mode", "predictions", "TCP connections", "polls per prediction", "CPU s per 1,000",
        "CPU µs per poll / floor's", "loop lag p50 / max (ms)", "longest GC pause (ms)", "worker slots held",
        "completion to event p50 / p95 (s)", "#15 targets",
    ]  # fmt: skip
    report("Triggerer scale", table(headers, rows), notes)


if __name__ == "__main__":
    main()
