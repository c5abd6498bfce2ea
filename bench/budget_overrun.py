"""How far N tasks starting together can pass the daily budget (issue 26 item 8).

Each "task" is a thread that does what a generate task does before it pays: the connection's
guards (the day's billed spend, the model's price, today's started-but-unbilled predictions),
then one submit, through ``MagiHook.create_prediction``. The local server runs in its own process;
predictions take 10 minutes there, so nothing started in a trial is billed during it: the budget
holds only by counting what is started and not billed.

Modes:
- together: all N check at the same instant (a barrier), the worst case;
- dispatched: one task starts every ``--gap`` seconds (a scheduler handing out slots);
- pool of 1: the check and submit of one task at a time (what an Airflow pool of 1 slot does for
  deferrable tasks: the slot is held for the check and the submit only, not the wait).

Reported per mode: predictions paid (the budget leaves room for ``--room``), the overrun in
prices, and the check-plus-submit time (the window in which another task's check cannot see
this one's submit).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "ERROR"
sys.path.insert(0, str(Path(__file__).resolve().parent))
import requests
from _common import report, start_local_server, table

API_KEY = "local-test-key"
MODEL = "wavespeed-ai/magi-1-24b"
PRICE = 0.35


def trial(base: str, mode: str, tasks: int, room: int, gap: float) -> tuple[int, list[float]]:
    """One trial from a fresh account: one billed video (the price known), then ``tasks`` tasks."""
    from airflow_provider_magi.exceptions import MagiBudgetError
    from airflow_provider_magi.hooks.magi import MagiHook

    requests.post(f"{base}/_testing/reset", timeout=10).raise_for_status()
    os.environ["AIRFLOW_CONN_MAGI_DEFAULT"] = json.dumps(
        {"conn_type": "magi", "host": base, "password": API_KEY}
    )
    first = MagiHook().create_prediction({"prompt": "earlier today [[duration: 0]]"}, MODEL)
    while not any(
        item["prediction"]["uuid"] == first.id
        for item in requests.get(f"{base}/_testing/account", timeout=10).json()["billings"]
    ):
        time.sleep(0.05)
    budget = PRICE * (1 + room) + PRICE / 2  # the earlier video, room for `room`, not one more
    os.environ["AIRFLOW_CONN_MAGI_DEFAULT"] = json.dumps(
        {"conn_type": "magi", "host": base, "password": API_KEY, "extra": {"daily_budget_usd": budget}}
    )
    barrier = threading.Barrier(tasks)
    pool = threading.Lock()
    windows: list[float] = []
    paid: list[str] = []

    def task(number: int) -> None:
        hook = MagiHook()
        _ = hook.settings  # the connection read, as a task does before it gets here
        if mode == "together":
            barrier.wait()
        elif mode == "dispatched":
            time.sleep(number * gap)
        with pool if mode == "pool of 1" else _nothing():
            started = time.perf_counter()
            try:
                prediction = hook.create_prediction({"prompt": f"task {number}"}, MODEL)
            except MagiBudgetError:
                return
            finally:
                windows.append(time.perf_counter() - started)
            paid.append(prediction.id)

    threads = [threading.Thread(target=task, args=(k,)) for k in range(tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(paid), windows


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--room", type=int, default=2)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between dispatched tasks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        process, base = start_local_server(
            Path(scratch) / "port",
            "--completion-seconds",
            "600",
            "--price",
            f"{MODEL}={PRICE}",
            "--balance",
            "1000",
        )
        try:
            rows = []
            for mode in ("together", "dispatched", "pool of 1"):
                counts, windows = [], []
                for _ in range(args.trials):
                    count, spent = trial(base, mode, args.tasks, args.room, args.gap)
                    counts.append(count)
                    windows += spent
                rows.append(
                    (
                        mode,
                        args.tasks,
                        args.room,
                        f"{min(counts)} / {statistics.median(counts):g} / {max(counts)}",
                        max(counts) - args.room,
                        f"{statistics.median(windows) * 1000:.0f}",
                    )
                )
        finally:
            process.kill()
    report(
        "Daily budget: N tasks starting together, billing lagging",
        table(
            [
                "mode",
                "tasks",
                "room (predictions)",
                "paid min / median / max",
                "worst overrun (prices)",
                "check + submit p50 (ms)",
            ],
            rows,
        ),
        f"{args.trials} trials per mode, each from a fresh account with one billed video (so the "
        "price is known); predictions take 10 minutes, so none of the trial's is billed while it "
        f"runs. dispatched: one task every {args.gap:g} s. A task's check cannot see another's "
        "submit made less than one check-plus-submit before it: that is the overrun's bound.",
    )


if __name__ == "__main__":
    main()
