"""How far tasks and batches checking at the same instant can pass the daily budget (issue #31
item 3; first measured for issue 26 item 8).

Both guards ask one spend view: available = min(balance - floor, budget - billed today) -
reserved, reserved being every started, unbilled prediction on the key. That is exact for checks
one after another; checks at the same instant cannot see each other's submits. This measures it.

Shapes (each "task" is a thread; the local server runs in its own process; predictions take 10
minutes there, so nothing started in a trial is billed during it):
- singles: ``--tasks`` single-video tasks, each doing what a generate task does before it pays:
  the guard (``MagiHook.check_spending`` through ``create_prediction``), then one submit;
- batches: ``--batches`` batches of ``--batch-size`` inputs, each doing what a batch's first wave
  does: the wave guard (``batch_budget.room``: how many of N fit), then that many submits one
  after another (without the batch's ledger writes, which only widen the window);
- mix: ``--tasks`` // 2 singles and ``--batches`` batches together.

Modes:
- together: every task checks at the same instant (a barrier), the worst case;
- pool of 1: one task's check and submits at a time, the others wait their turn (what an Airflow
  pool of 1 slot does for deferrable tasks and batches: the slot is held for the check and the
  submits, then freed by the deferral, not held for the wait). A lock in this process stands in
  for the pool: Airflow's scheduler adds its task start-up between turns, which only widens the
  gaps.

Reported per shape and mode: predictions paid (the budget leaves room for ``--room``), the worst
overrun in prices and USD, the worst paid/room ratio, and the check-plus-submit time (the window
in which another task's check cannot see this one's submits).
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


def trial(base: str, shape: str, mode: str, args: argparse.Namespace) -> tuple[int, list[float]]:
    """One trial from a fresh account: one billed video (the price known), then the shape's tasks."""
    import logging

    from airflow_provider_magi.batch_budget import room
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
    budget = PRICE * (1 + args.room) + PRICE / 2  # the earlier video, room for `room`, not one more
    os.environ["AIRFLOW_CONN_MAGI_DEFAULT"] = json.dumps(
        {"conn_type": "magi", "host": base, "password": API_KEY, "extra": {"daily_budget_usd": budget}}
    )
    singles = {"singles": args.tasks, "batches": 0, "mix": args.tasks // 2}[shape]
    batches = 0 if shape == "singles" else args.batches
    barrier = threading.Barrier(singles + batches)
    pool = threading.Lock()
    windows: list[float] = []
    paid: list[str] = []
    quiet = logging.getLogger("bench.batch")
    quiet.disabled = True

    def single(number: int) -> None:
        hook = MagiHook()
        _ = hook.settings  # the connection read, as a task does before it gets here
        if mode == "together":
            barrier.wait()
        with pool if mode == "pool of 1" else _nothing():
            started = time.perf_counter()
            try:
                prediction = hook.create_prediction({"prompt": f"task {number}"}, MODEL)
            except MagiBudgetError:
                return
            finally:
                windows.append(time.perf_counter() - started)
            paid.append(prediction.id)

    def batch(number: int) -> None:
        hook = MagiHook()
        _ = hook.settings
        if mode == "together":
            barrier.wait()
        with pool if mode == "pool of 1" else _nothing():
            started = time.perf_counter()
            fits, _refusal = room(hook, MODEL, args.batch_size, set(), quiet)
            for item in range(fits):  # the wave guard just ran: each submit skips the per-call one
                prediction = hook.create_prediction(
                    {"prompt": f"batch {number} item {item}"}, MODEL, check_guards=False
                )
                paid.append(prediction.id)
            windows.append(time.perf_counter() - started)

    threads = [threading.Thread(target=single, args=(k,)) for k in range(singles)]
    threads += [threading.Thread(target=batch, args=(k,)) for k in range(batches)]
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
    parser.add_argument("--tasks", type=int, default=20, help="single tasks (the mix takes half)")
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--room", type=int, default=6, help="predictions the budget has room for")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    shapes = {
        "singles": f"{args.tasks} single tasks",
        "batches": f"{args.batches} batches of {args.batch_size}",
        "mix": f"{args.tasks // 2} single tasks + {args.batches} batches of {args.batch_size}",
    }
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
            for shape, label in shapes.items():
                for mode in ("together", "pool of 1"):
                    counts, windows = [], []
                    for _ in range(args.trials):
                        count, spent = trial(base, shape, mode, args)
                        counts.append(count)
                        windows += spent
                    worst = max(counts) - args.room
                    rows.append(
                        (
                            label,
                            mode,
                            args.room,
                            f"{min(counts)} / {statistics.median(counts):g} / {max(counts)}",
                            worst,
                            f"${worst * PRICE:.2f}",
                            f"{max(counts) / args.room:.2f}",
                            f"{statistics.median(windows) * 1000:.0f}",
                        )
                    )
        finally:
            process.kill()
    report(
        "Spend view: tasks and batches checking at the same instant, billing lagging",
        table(
            [
                "shape",
                "mode",
                "room (predictions)",
                "paid min / median / max",
                "worst overrun (prices)",
                "worst overrun (USD)",
                "worst paid / room",
                "check + submits p50 (ms)",
            ],
            rows,
        ),
        f"{args.trials} trials per row, each from a fresh account with one billed video (so the "
        f"price, ${PRICE:.2f}, is known) and a daily budget with room for {args.room} more; "
        "predictions take 10 minutes, so none of the trial's is billed while it runs. together: "
        "every task checks at one instant (a barrier); pool of 1: one task's check and submits "
        "at a time (a lock standing in for an Airflow pool of 1 slot with deferrable tasks).",
    )


if __name__ == "__main__":
    main()
