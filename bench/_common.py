"""Shared bits of the benchmarks: machine facts, medians, and appending a table to RESULTS.md."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    airflow = subprocess.run(
        [sys.executable, "-c", "import airflow; print(airflow.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, Python {platform.python_version()}, "
        f"Airflow {airflow or '?'}"
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def median_ratio(values: Sequence[float], baselines: Sequence[float]) -> float:
    """The median over rounds of each round's own ``value / baseline``: load that slows one round
    slows both of its figures alike and cancels out, where a ratio of two medians would not."""
    return statistics.median(value / baseline for value, baseline in zip(values, baselines, strict=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def report(title: str, body: str, notes: str = "") -> None:
    """Print the table and append it, dated and with the machine's facts, to RESULTS.md."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"\n## {title} ({stamp})\n\n{machine()}\n\n{body}\n"
    if notes:
        section += f"\n{notes}\n"
    print(section)
    with RESULTS.open("a") as handle:
        handle.write(section)


def start_local_server(port_file: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """The project's local WaveSpeed server in its own process (its CPU is not the bench's);
    returns the process and its base URL once it listens."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_magi.testing",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        if port_file.exists() and port_file.read_text():
            return process, f"http://127.0.0.1:{port_file.read_text()}"
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("local server did not start")


def use_local_connection(base: str, api_key: str) -> None:
    """Point ``magi_default`` at a local server, with a poll budget no bench run reaches."""
    import json

    os.environ["AIRFLOW_CONN_MAGI_DEFAULT"] = json.dumps(
        {"conn_type": "magi", "host": base, "password": api_key, "extra": {"max_polls_per_second": 1000}}
    )
