"""Request budget under a rate limit: many triggers on one key against a server that answers 429
above N requests a second.

Modes: the provider with its budget far above the limit (the first 429 must teach every trigger
the real limit), the provider configured just under the limit, the same two split across two
triggerer processes (Airflow's HA setup: each process holds its own budget, nothing is shared),
and the naive way (a new client per poll, each trigger on its own). Reported: polls sent, 429s
(all, and after the first 2 s), the busiest second's requests, and the delay from completion to
event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

# Each 429 retried is logged at warning level; the table counts them instead.
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "ERROR"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report, start_local_server, table
from triggerer import API_KEY, naive_wait, pct, provider_wait, submit


def triggerer_process(base: str, done_at: dict[str, float], poll: float) -> list[float]:
    """One triggerer's share of the waits, in a process of its own (run by multiprocessing)."""
    return asyncio.run(wait_all("provider", base, done_at, poll))


def split_across_processes(
    base: str, done_at: dict[str, float], poll: float, processes: int
) -> list[list[float]]:
    """Each process's completion-to-event delays."""
    ids = list(done_at)
    shares = [{pid: done_at[pid] for pid in ids[i::processes]} for i in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.starmap(triggerer_process, [(base, share, poll) for share in shares])
    return results


async def wait_all(mode: str, base: str, done_at: dict[str, float], poll: float) -> list[float]:
    if mode == "naive":
        waits = [naive_wait(base, pid, poll) for pid in done_at]
    else:
        waits = [provider_wait(pid, poll) for pid in done_at]
    finished = await asyncio.gather(*waits)
    return [end - done_at[pid] for pid, end in zip(done_at, finished, strict=True)]


def measure(
    base: str, budget: float, processes: int, args: argparse.Namespace, low: float, high: float
) -> list[str]:
    """One mode: submit, rate-limit the result route, wait them all, count what the server saw."""
    conn = {"conn_type": "magi", "host": base, "password": API_KEY,
            "extra": {"max_polls_per_second": budget or 1000.0, "max_retries": 50}}  # fmt: skip
    os.environ["AIRFLOW_CONN_MAGI_DEFAULT"] = json.dumps(conn)
    httpx.post(f"{base}/_testing/reset", timeout=30)
    done_at = submit(base, args.triggers, low, high)
    fault = {"route": "result", "kind": "rate_limit", "limit": args.limit, "window": 1.0}
    httpx.put(f"{base}/_testing/faults", json=[fault], timeout=30).raise_for_status()
    started = time.time()
    if processes > 1:
        per_process = split_across_processes(base, done_at, args.poll_interval, processes)
        delays = [delay for share in per_process for delay in share]
    else:
        mode = "naive" if budget == 0.0 else "provider"
        delays = asyncio.run(wait_all(mode, base, done_at, args.poll_interval))
        per_process = [delays]
    seen = [r for r in httpx.get(f"{base}/_testing/requests", timeout=60).json() if r["route"] == "result"]
    refused = [r for r in seen if r["status"] == 429]
    first_poll = min(r["at"] for r in seen)  # triggerer processes take a moment to start
    late = [r for r in refused if r["at"] - first_poll > 2.0]
    busiest = max(Counter(int(r["at"]) for r in seen).values())
    per_second = Counter(int(r["at"]) for r in seen if r["status"] != 429)
    # While every trigger still waits (before the first prediction can finish), demand exceeds
    # the limit: the accepted rate then shows how much of the limit the budgets use.
    saturated = [n for second, n in per_second.items() if first_poll + 2 <= second < started + low - 1]
    return [
        str(len(seen)),
        str(len(refused)),
        str(len(late)),
        str(len({int(r["at"]) for r in late})),
        f"{busiest} / {max(per_second.values())}",
        f"{statistics.median(saturated):.0f}" if saturated else "-",
        f"{pct(delays, 50):.2f} / {pct(delays, 95):.2f}",
        " / ".join(f"{pct(share, 50):.1f}" for share in per_process),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--triggers", type=int, default=300)
    parser.add_argument("--limit", type=int, default=50, help="requests per second the server allows")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--min-duration", type=float, default=15.0)
    parser.add_argument("--max-duration", type=float, default=25.0)
    parser.add_argument(
        "--ha-minutes", type=float, default=2.0, help="how long the two-triggerer runs wait (0: skip)"
    )
    args = parser.parse_args()
    under = 0.9 * args.limit
    short = [  # label, budget per triggerer, triggerer processes
        ("provider, budget 1000/s (above the limit)", 1000.0, 1),
        (f"provider, budget {under:.0f}/s (under the limit)", under, 1),
        ("provider, 2 triggerers, budget 1000/s each", 1000.0, 2),
        (f"provider, 2 triggerers, budget {under:.0f}/s each", under, 2),
        ("naive (client per poll)", 0.0, 1),
    ]
    long = [
        (f"provider, 1 triggerer, budget {under:.0f}/s", under, 1),
        (f"provider, 2 triggerers, budget {under:.0f}/s each", under, 2),
        (f"provider, 2 triggerers, budget {under / 2:.1f}/s each (limit split by hand)", under / 2, 2),
        ("provider, 2 triggerers, budget 1000/s each", 1000.0, 2),
    ]
    headers = [
        "mode", "polls sent", "429s", "429s after the first 2 s of polling",
        "seconds with a 429 after that", "busiest second: sent / accepted",
        "accepted per second while all wait (median)", "completion to event p50 / p95 (s)",
        "p50 by triggerer (s)",
    ]  # fmt: skip
    short_rows, long_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        server, base = start_local_server(port_file, "--api-key", API_KEY)
        try:
            for label, budget, processes in short:
                short_rows.append(
                    [label, *measure(base, budget, processes, args, args.min_duration, args.max_duration)]
                )
                print(short_rows[-1], flush=True)
            minutes = args.ha_minutes * 60
            for label, budget, processes in long if args.ha_minutes else []:
                long_rows.append([label, *measure(base, budget, processes, args, minutes, minutes * 1.1)])
                print(long_rows[-1], flush=True)
        finally:
            server.terminate()
            server.wait(timeout=10)
    demand = f"{args.triggers / args.poll_interval:.0f} polls/s"
    notes = (
        f"{args.triggers} triggers on one key, polling every {args.poll_interval:.0f} s (a demand of "
        f"{demand}) against a server allowing {args.limit} a second "
        f"(sliding window, 429 with Retry-After); predictions take {args.min_duration:.0f}-"
        f"{args.max_duration:.0f} s. Target: combined polling under the limit, 429s near zero after "
        "the first."
    )
    report("Request budget under a rate limit", table(headers, short_rows), notes)
    if long_rows:
        report(
            "Two triggerers on one key under a rate limit (Airflow HA)",
            table(headers, long_rows),
            f"As above, but predictions take {args.ha_minutes:.0f}-{args.ha_minutes * 1.1:.1f} min, so the "
            "budgets' recovery (10% a minute without a 429) has time to probe past the limit. Each "
            "triggerer process holds its own budget; nothing is shared between them.",
        )


if __name__ == "__main__":
    main()
