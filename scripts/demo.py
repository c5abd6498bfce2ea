"""`make demo`: run the text-to-video example DAG end to end and print where the video landed.

Without $WAVESPEED_API_KEY (or a magi_default connection) the DAG talks to the bundled
WaveSpeed-compatible local server; with it, to the real API (and you pay for one generation).
It prints the endpoint and where the key came from before generating, and generates on the real
API only when asked to with --pay (`make demo PAY=1`): a key or connection exported in the shell
for other work must not spend money by surprise.

The terminal gets a few lines and the result; Airflow's own log of the run (dozens of lines of
DAG-bag, scheduling and task-runner records) goes to .airflow-demo/demo.log, which the output names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_magi.testing import LocalWaveSpeedServer

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "example_magi_text_to_video"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--pay", action="store_true", help="generate on the real WaveSpeed API, which bills one video"
    )
    args = parser.parse_args(argv)
    home = ROOT / ".airflow-demo"
    output_dir = ROOT / "demo-output"
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "MAGI_OUTPUT_DIR": str(output_dir),
        }
    )
    home.mkdir(exist_ok=True)
    exported = bool(os.environ.get("AIRFLOW_CONN_MAGI_DEFAULT"))  # by the user, not by this script
    server: LocalWaveSpeedServer | None = None
    if not os.environ.get("WAVESPEED_API_KEY") and not os.environ.get("AIRFLOW_CONN_MAGI_DEFAULT"):
        from airflow_provider_magi.testing import LocalWaveSpeedServer

        server = LocalWaveSpeedServer(completion_seconds=4.0).start()
        os.environ["AIRFLOW_CONN_MAGI_DEFAULT"] = json.dumps(server.connection_uri_json())
        os.environ.setdefault("MAGI_POLL_INTERVAL", "1")

    log_path = home / "demo.log"
    with log_path.open("w") as log:
        return _run(args, server, exported, output_dir, log, log_path)


def _run(
    args: argparse.Namespace,
    server: LocalWaveSpeedServer | None,
    exported: bool,
    output_dir: Path,
    log: IO[str],
    log_path: Path,
) -> int:
    print("Preparing the metadata database (SQLite) ...", flush=True)
    # reserialize registers the example DAGs' assets: Airflow 3.0's dag.test() fails a task whose
    # outlets name an asset no DAG processor has seen ("inactive assets").
    for command in (["db", "migrate"], ["dags", "reserialize"]):
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *command], stdout=log, stderr=subprocess.STDOUT, check=False
        )
        if done.returncode:
            print(f"`airflow {' '.join(command)}` failed; its output is in {log_path}", file=sys.stderr)
            return 1
    with _output_to(log):  # reading the connection may log (the key's source, never the key)
        where, billed = _where_it_generates(exported)
    print(where, flush=True)
    if billed and not args.pay:
        print(NOT_WITHOUT_PAY, file=sys.stderr)
        return 2

    print(f"Running {DAG_ID} with dag.test(); Airflow's log of the run goes to {log_path}", flush=True)
    with _output_to(log):
        try:  # after AIRFLOW_HOME is set; the module moved in Airflow 3.1
            from airflow.dag_processing.dagbag import DagBag
        except ImportError:
            from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

        bag = DagBag(dag_folder=str(ROOT / "example_dags" / f"{DAG_ID}.py"))
        dag_run = None if bag.import_errors else bag.get_dag(DAG_ID).test()
    if server is not None:
        server.stop()
    if dag_run is None:
        print(f"DAG import errors: {bag.import_errors}", file=sys.stderr)
        return 1
    if str(dag_run.state) != "success":
        print(f"DAG run ended {dag_run.state}; Airflow's log of the run: {log_path}", file=sys.stderr)
        return 1
    videos = sorted(output_dir.rglob(f"*{_safe(dag_run.run_id)}*/*.mp4"))
    if not videos:
        print(f"The run succeeded but no video is under {output_dir} (log: {log_path})", file=sys.stderr)
        return 1
    for video in videos:
        print(f"\nVideo written: {video} ({video.stat().st_size} bytes)")
    return 0


@contextlib.contextmanager
def _output_to(log: IO[str]) -> Iterator[None]:
    """Everything written to this process's stdout and stderr (Airflow's loggers, warnings, any
    child process) goes to ``log`` meanwhile: file descriptors 1 and 2 are pointed at it, since
    Airflow's log handlers hold the streams they were configured with."""
    for stream in (sys.stdout, sys.stderr, log):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr, log):
            stream.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


NOT_WITHOUT_PAY = (
    "Nothing was generated or billed. To make this one video on WaveSpeed and pay for it, run "
    "`make demo PAY=1` (or `python scripts/demo.py --pay`); to use the free local server instead, "
    "unset AIRFLOW_CONN_MAGI_DEFAULT and WAVESPEED_API_KEY in this shell."
)


def _where_it_generates(exported: bool) -> tuple[str, bool]:
    """What the hook will actually use (a connection wins over $WAVESPEED_API_KEY), and whether
    that generation is billed."""
    from airflow_provider_magi.compat import AirflowNotFoundException
    from airflow_provider_magi.hooks.magi import API_KEY_ENV, MagiHook

    hook = MagiHook()
    try:
        hook.get_connection(hook.magi_conn_id)
        source = f"connection '{hook.magi_conn_id}'"
        if exported:
            source += " ($AIRFLOW_CONN_MAGI_DEFAULT, exported in this shell)"
        elif os.environ.get("AIRFLOW_CONN_MAGI_DEFAULT"):
            source += ", set by this demo"
    except AirflowNotFoundException:
        source = f"${API_KEY_ENV}"
    where = hook.settings.base_url
    if hook.is_local_server:
        return f"Generating on the local server at {where} (key from {source}; nothing is billed).", False
    return f"This would generate on {where} with the key from {source}: WaveSpeed bills that video.", True


def _safe(run_id: str) -> str:
    from airflow_provider_magi.operators.download import safe_segment

    return safe_segment(run_id)


if __name__ == "__main__":
    sys.exit(main())
