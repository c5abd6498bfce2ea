"""End to end: the demo DAG under ``airflow dags test`` against the local server, with instant
completions, against same-shaped DAGs whose tasks do nothing: the provider's own overhead.

Each ``airflow dags test`` is a fresh process on one migrated SQLite database; runs of the three
DAGs are interleaved and medians reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, report, start_local_server, table

ROOT = Path(__file__).resolve().parents[1]
DEMO = "example_magi_text_to_video"
TWINS = """
from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, task

with DAG(dag_id="bench_empty_twin", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    EmptyOperator(task_id="generate") >> EmptyOperator(task_id="download")


@task
def noop() -> None:
    return None


with DAG(dag_id="bench_python_twin", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    noop.override(task_id="generate")() >> noop.override(task_id="download")()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="magi-bench-e2e-"))
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "example_dags" / f"{DEMO}.py", dags)
    (dags / "bench_twins.py").write_text(TWINS)
    server, base = start_local_server(home / "port", "--completion-seconds", "0")
    try:
        conn = {"conn_type": "magi", "host": base, "password": "local-test-key"}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MAGI_"))}
        env.update({
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW_CONN_MAGI_DEFAULT": json.dumps(conn),
            "MAGI_OUTPUT_DIR": str(home / "videos"),
            "MAGI_POLL_INTERVAL": "0.2",
        })  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True
        )
        subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "reserialize"], env=env, check=True, capture_output=True
        )
        times: dict[str, list[float]] = {DEMO: [], "bench_python_twin": [], "bench_empty_twin": []}
        for _ in range(args.runs):
            for dag_id in times:
                started = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", dag_id], env=env,
                                      capture_output=True, text=True)  # fmt: skip
                elapsed = time.perf_counter() - started
                if done.returncode or "state=failed" in done.stdout + done.stderr:
                    raise RuntimeError(f"{dag_id} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
                times[dag_id].append(elapsed)
        videos = sorted((home / "videos").rglob("*.mp4"))
        assert len(videos) == args.runs, f"expected {args.runs} videos, found {len(videos)}"
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)
    demo = median(times[DEMO])
    rows = [
        [
            dag_id,
            f"{median(values):.2f}",
            f"{min(values):.2f} - {max(values):.2f}",
            f"{demo - median(values):+.2f}",
        ]
        for dag_id, values in times.items()
    ]
    body = table(["DAG (airflow dags test)", "median s", "range s", "demo minus this (s)"], rows)
    notes = (
        f"{args.runs} runs each, interleaved. The demo DAG submits, defers (the trigger runs inside "
        "`dags test`), polls every 0.2 s and downloads a 25 KB MP4 from the local server, whose "
        "predictions complete at once. The twins have the same two tasks: EmptyOperators (which Airflow "
        "marks done without running them) and no-op Python tasks (which run like ours). The last column "
        "is the provider's own overhead per run."
    )
    report("End to end (airflow dags test)", body, notes)


if __name__ == "__main__":
    main()
