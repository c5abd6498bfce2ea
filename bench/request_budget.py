"""Request budget under a rate limit: many triggers on one key against a server that answers 429
above N requests a second.

Modes: the provider with its budget far above the limit (the first 429 must teach every trigger
the real limit), the provider configured just under the limit, and the naive way (a new client
per poll, each trigger on its own). Reported: polls sent, 429s (all, and after the first 2 s),
the busiest second's requests, and the delay from completion to event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


async def wait_all(mode: str, base: str, done_at: dict[str, float], poll: float) -> list[float]:
    if mode == "naive":
        waits = [naive_wait(base, pid, poll) for pid in done_at]
    else:
        waits = [provider_wait(pid, poll) for pid in done_at]
    finished = await asyncio.gather(*waits)
    return [end - done_at[pid] for pid, end in zip(done_at, finished, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--triggers", type=int, default=300)
    parser.add_argument("--limit", type=int, default=50, help="requests per second the server allows")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--min-duration", type=float, default=15.0)
    parser.add_argument("--max-duration", type=float, default=25.0)
    args = parser.parse_args()
    modes = [
        ("provider, budget 1000/s (above the limit)", 1000.0),
        (f"provider, budget {0.9 * args.limit:.0f}/s (under the limit)", 0.9 * args.limit),
        ("naive (client per poll)", 0.0),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        server, base = start_local_server(port_file, "--api-key", API_KEY)
        try:
            for label, budget in modes:
                conn = {"conn_type": "magi", "host": base, "password": API_KEY,
                        "extra": {"max_polls_per_second": budget or 1000.0, "max_retries": 50}}  # fmt: skip
                os.environ["AIRFLOW_CONN_MAGI_DEFAULT"] = json.dumps(conn)
                httpx.post(f"{base}/_testing/reset", timeout=30)
                done_at = submit(base, args.triggers, args.min_duration, args.max_duration)
                fault = {"route": "result", "kind": "rate_limit", "limit": args.limit, "window": 1.0}
                httpx.put(f"{base}/_testing/faults", json=[fault], timeout=30).raise_for_status()
                started = time.time()
                mode = "naive" if budget == 0.0 else "provider"
                delays = asyncio.run(wait_all(mode, base, done_at, args.poll_interval))
                seen = [
                    r
                    for r in httpx.get(f"{base}/_testing/requests", timeout=60).json()
                    if r["route"] == "result"
                ]
                refused = [r for r in seen if r["status"] == 429]
                late = [r for r in refused if r["at"] - started > 2.0]
                busiest = max(Counter(int(r["at"]) for r in seen).values())
                accepted = max(Counter(int(r["at"]) for r in seen if r["status"] != 429).values())
                rows.append([label, len(seen), len(refused), len(late), f"{busiest} / {accepted}",
                             f"{pct(delays, 50):.2f} / {pct(delays, 95):.2f}"])  # fmt: skip
                print(rows[-1], flush=True)
        finally:
            server.terminate()
            server.wait(timeout=10)
    headers = ["mode", "polls sent", "429s", "429s after the first 2 s",
               "busiest second: sent / accepted", "completion to event p50 / p95 (s)"]  # fmt: skip
    notes = (
        f"{args.triggers} triggers on one key, polling every {args.poll_interval:.0f} s (a demand of "
        f"{args.triggers / args.poll_interval:.0f} polls/s) against a server allowing {args.limit} a second "
        f"(sliding window, 429 with Retry-After); predictions take {args.min_duration:.0f}-"
        f"{args.max_duration:.0f} s. Target: combined polling under the limit, 429s near zero after "
        "the first."
    )
    report("Request budget under a rate limit", table(headers, rows), notes)


if __name__ == "__main__":
    main()
