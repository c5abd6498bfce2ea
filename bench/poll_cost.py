"""CPU per result poll in the client process, for each async HTTP client we could poll with (#15).

Every client GETs the same prediction's result from the local server (in its own process, so
its CPU is not counted), N times with C requests in flight, on one event loop. The figure is the
client process's CPU time per GET; the floor is a bare asyncio-streams HTTP/1.1 keep-alive client
written here and never used by the provider.

The floor, aiohttp alone and the provider are measured in rounds, one after another within each
round, and each ratio is the median over the rounds of that round's own ratio: a machine busy in
one round is busy for all three, so one run on a busy machine says what another says. httpx (20-50
times the floor) is measured once, in the first round.

    python bench/poll_cost.py [--polls 1000] [--rounds 5] [--concurrency 64 1]

A second table prices each layer the provider puts around one poll, in isolation (no I/O): the
retry wrapper (tenacity, as the provider used it, against today's plain loop), the shared poll
budget, metrics, envelope parsing, the deadline, and one log line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import requests
from _common import median, median_ratio, report, start_local_server, table

KEY = "bench-poll-cost-key"
FLOOR = "bare asyncio streams (the floor)"
AIOHTTP = "aiohttp ClientSession, shared"


async def floor_client(base: str, path: str, polls: int, concurrency: int, key: str = KEY) -> None:
    host, port = base.removeprefix("http://").split(":")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        "Accept-Encoding: identity\r\n\r\n"
    ).encode()

    async def worker(count: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
            json.loads(body)
        writer.close()

    await asyncio.gather(*(worker(polls // concurrency) for _ in range(concurrency)))


async def httpx_client(base: str, path: str, polls: int, concurrency: int) -> None:
    import httpx

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                response = await client.get(base + path, headers={"Authorization": f"Bearer {KEY}"})
                response.json()

        await asyncio.gather(*(one() for _ in range(polls)))


async def aiohttp_client(base: str, path: str, polls: int, concurrency: int) -> None:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate, session.get(base + path, headers={"Authorization": f"Bearer {KEY}"}) as response:
                await response.json()

        await asyncio.gather(*(one() for _ in range(polls)))


async def hook_client(base: str, prediction_id: str, polls: int, concurrency: int) -> None:
    from airflow_provider_magi.hooks.magi import MagiHook

    gate = asyncio.Semaphore(concurrency)
    hook = MagiHook()  # as a trigger holds one hook for all its polls

    async def one() -> None:
        async with gate:
            await hook.aget_prediction(prediction_id)

    await asyncio.gather(*(one() for _ in range(polls)))


def cpu_per_call(run: Callable[[], Awaitable[None]], polls: int) -> float:
    """Microseconds of this process's CPU per GET (one warm-up run first)."""

    async def measured() -> float:
        await run()
        started = time.process_time()
        await run()
        return (time.process_time() - started) / polls * 1e6

    return asyncio.run(measured())


def layer_costs(iterations: int = 20000) -> list[list[str]]:
    """CPU µs per call of each layer around a poll, measured alone on one event loop."""
    import logging

    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

    from airflow_provider_magi.api import HTTPAnswer, parse_prediction, raise_for_answer
    from airflow_provider_magi.hooks.async_client import count_poll
    from airflow_provider_magi.pacing import PollBudget
    from airflow_provider_magi.retries import RetryPolicy

    body = json.dumps(
        {"code": 200, "message": "success", "data": {"id": "p" * 32, "model": "wavespeed-ai/magi-1-24b",
         "status": "processing", "outputs": [], "has_nsfw_contents": [], "error": "",
         "created_at": "2026-11-29T10:00:00.000Z", "timings": {"inference": 0},
         "urls": {"get": "https://api.wavespeed.ai/api/v3/predictions/p/result"}}}
    ).encode()  # fmt: skip
    answer = HTTPAnswer(200, "application/json", body)
    log = logging.getLogger("bench.poll_cost")
    log.propagate = False
    log.addHandler(logging.StreamHandler(open(os.devnull, "w")))  # noqa: SIM115 - lives as long as the run
    log.setLevel(logging.INFO)

    async def nothing() -> int:
        return 1

    async def measure() -> list[list[str]]:
        budget = PollBudget(1e9)
        policy = RetryPolicy("GET", max_retries=5, max_wait=60.0, log=log, deadline=time.time() + 3600)

        async def tenacity_call() -> None:  # the policy the provider built per poll until now
            retrying = AsyncRetrying(
                stop=stop_after_attempt(6), retry=retry_if_exception(lambda _: False), reraise=True
            )
            await retrying(nothing)

        async def plain_call() -> None:
            await policy.acall(nothing)

        async def budget_call() -> None:
            await budget.acquire()
            budget.accepted()

        async def deadline_timeout() -> None:
            async with asyncio.timeout(120):
                await nothing()

        async def deadline_wait_for() -> None:
            await asyncio.wait_for(nothing(), 120)

        async def parse() -> None:
            parse_prediction(raise_for_answer(answer, what="Reading", conn_id="magi_default"))

        async def metric() -> None:
            count_poll(answer, "magi_default")

        async def log_line() -> None:
            log.info("Prediction %s is %s after %.0fs", "p" * 32, "processing", 12.0)

        layers = [
            ("retry wrapper: tenacity AsyncRetrying (before)", tenacity_call),
            ("retry wrapper: RetryPolicy.acall (now)", plain_call),
            ("poll budget: acquire + accepted", budget_call),
            ("deadline: asyncio.wait_for (before)", deadline_wait_for),
            ("deadline: asyncio.timeout (now)", deadline_timeout),
            ("envelope: raise_for_answer + parse_prediction", parse),
            ("metrics: count_poll (Stats)", metric),
            ("logging: one INFO line (only on a status change)", log_line),
        ]
        rows = []
        for name, call in layers:
            for _ in range(iterations // 10):  # warm-up
                await call()
            started = time.process_time()
            for _ in range(iterations):
                await call()
            rows.append([name, f"{(time.process_time() - started) / iterations * 1e6:.1f}"])
        return rows

    return asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--polls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; ratios are their medians")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 1])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="magi-bench-poll-"))
    process, base = start_local_server(work / "port", "--api-key", KEY)
    try:
        submitted = requests.post(
            f"{base}/api/v3/wavespeed-ai/magi-1-24b",
            json={"prompt": "a poll target [[never]]"},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=10,
        ).json()["data"]["id"]
        path = f"/api/v3/predictions/{submitted}/result"
        os.environ["AIRFLOW_HOME"] = str(work)
        os.environ["AIRFLOW_CONN_MAGI_DEFAULT"] = json.dumps(
            {"conn_type": "magi", "host": base, "password": KEY, "extra": {"max_polls_per_second": 1e6}}
        )
        clients: dict[str, Callable[[int], Callable[[], Awaitable[None]]]] = {
            FLOOR: lambda c: lambda: floor_client(base, path, args.polls, c),
            AIOHTTP: lambda c: lambda: aiohttp_client(base, path, args.polls, c),
            "MagiHook.aget_prediction": lambda c: lambda: hook_client(base, submitted, args.polls, c),
            "httpx AsyncClient, shared": lambda c: lambda: httpx_client(base, path, args.polls, c),
        }
        rows = []
        for concurrency in args.concurrency:
            runs: dict[str, list[float]] = {name: [] for name in clients}
            for round_number in range(args.rounds):  # interleaved: each round's load falls on all
                for name, make in clients.items():
                    if name.startswith("httpx") and round_number:
                        continue
                    runs[name].append(cpu_per_call(make(concurrency), args.polls))
            floor, aiohttp_alone = runs[FLOOR], runs[AIOHTTP]
            for name, costs in runs.items():
                vs_floor, vs_aiohttp = median_ratio(costs, floor), median_ratio(costs, aiohttp_alone)
                rows.append(
                    [name, concurrency, f"{median(costs):,.0f}", f"{vs_floor:.2f}x", f"{vs_aiohttp:.2f}x"]
                )
    finally:
        process.terminate()
    report(
        "What each layer around one poll costs (no I/O)",
        table(["layer", "CPU µs per call"], layer_costs()),
        "Measured alone on one event loop; compare with the floor's µs per GET above. The trigger "
        "logs only when a prediction's status changes (2-3 lines per prediction), not per poll.",
    )
    report(
        f"CPU per result poll ({args.polls} GETs per client, {args.rounds} interleaved rounds)",
        table(
            [
                "client",
                "in flight",
                "CPU µs per GET (median)",
                "vs floor (median of rounds)",
                "vs aiohttp alone (median of rounds)",
            ],
            rows,
        ),
        "Client process CPU only (the local server runs in its own process). Each ratio is the "
        "median over the rounds of the ratio within a round (httpx: the first round only). #15 "
        "asks for the provider's async poll path at most 2.5x the floor; #28 for its share over "
        "aiohttp alone toward 1.1x.",
    )


if __name__ == "__main__":
    main()
