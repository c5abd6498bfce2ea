"""Helpers shared by the tests (no side effects: conftest.py owns the environment)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_provider_magi.testing import LocalWaveSpeedServer

CANARY_KEY = "canary-key-7f3a9c1e5b"


def _airflow_logs_task_exceptions_in_dag_test() -> bool:
    from airflow import __version__
    from packaging.version import Version

    return Version(Version(__version__).base_version) >= Version("3.1.0")


# Airflow 3.0's dag.test() does not log a failed task's exception anywhere a test can read it;
# checks of an exception's text in the logs apply from 3.1 on (our own log lines always apply).
DAG_TEST_LOGS_EXCEPTIONS = _airflow_logs_task_exceptions_in_dag_test()


def wait_until(check: Callable[[], bool], timeout: float) -> None:
    """Poll ``check`` until it holds; fail if it does not within ``timeout`` (a guard, not a
    measurement: what it waits for normally takes a fraction of that)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def run_triggers(triggers: Sequence[Any], timeout: float = 30) -> list[list[dict[str, Any]]]:
    """Run triggers in one event loop, as a triggerer does; each one's event payloads."""

    async def one(trigger: Any) -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    async def gather() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(one(trigger) for trigger in triggers))

    return asyncio.run(asyncio.wait_for(gather(), timeout=timeout))


def connection_json(server: LocalWaveSpeedServer, **extra: object) -> str:
    """``magi`` connection JSON for the local server, with fast retries for tests."""
    conn: dict[str, Any] = server.connection_uri_json()
    conn["extra"] = {
        "max_retries": 3,
        "max_retry_wait": 0.2,
        "read_timeout": 5,
        "max_polls_per_second": 1000,  # tests poll every 0.1 s; test_trigger checks the budget itself
        **extra,
    }
    return json.dumps(conn)


def run_dag(dag_bag: Any, dag_id: str, logical_date: Any = None, **conf: Any) -> Any:
    """Run one DAG to its end in this process; return the DagRun."""
    dag = dag_bag.get_dag(dag_id)
    if logical_date is None:  # Airflow's default: a run dated now (None would mean no date at all)
        return dag.test(run_conf=conf or None)
    return dag.test(logical_date=logical_date, run_conf=conf or None)


def task_instance(dag_run: Any, task_id: str, map_index: int = -1) -> Any:
    return dag_run.get_task_instance(task_id, map_index=map_index)


def xcom(dag_run: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
                XComModel.map_index == map_index,
            )
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


# A child process hands its result back through this file, never through stdout: Airflow and its
# providers log to stdout too (OpenLineage's client once wrote its "will use file transport" line
# on the same line as a printed result), so stdout is for people, not for a test to parse.
CHILD_RESULT_ENV = "MAGI_TEST_CHILD_RESULT"

RUN_DAGS_IN_CHILD = """
import functools, json, os, sys
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow < 3.1
    from airflow.models.dagbag import DagBag
from airflow.sdk.execution_time import supervisor
if not hasattr(supervisor.in_process_api_server, "cache_info"):  # as conftest.py's dag_bag does
    supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)
bag = DagBag(sys.argv[1])
runs = {}
for dag_id in sys.argv[2:]:
    run = bag.get_dag(dag_id).test()
    runs[dag_id] = {"state": str(run.state), "run_id": run.run_id}
with open(os.environ["MAGI_TEST_CHILD_RESULT"], "w") as result:
    json.dump(runs, result)
"""


def run_child(code: str, *args: str, env: Mapping[str, str], timeout: float = 600) -> Any:
    """Run ``code`` in a fresh Python (its own Airflow configuration from ``env``) and return what
    it wrote as JSON to the file named by ``$MAGI_TEST_CHILD_RESULT``."""
    with tempfile.TemporaryDirectory(prefix="magi-child-") as folder:
        result = Path(folder) / "result.json"
        child = subprocess.run(
            [sys.executable, "-c", code, *args],
            env={**env, CHILD_RESULT_ENV: str(result)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.exists(), (
            f"the child wrote no result (exit {child.returncode}):\n"
            + child.stdout[-2000:]
            + child.stderr[-4000:]
        )
        return json.loads(result.read_text())


def run_dags_in_child(dags_folder: Path, dag_ids: Sequence[str], env: Mapping[str, str]) -> Any:
    """``dag.test()`` each DAG in a child process; ``{dag_id: {"state", "run_id"}}``."""
    return run_child(RUN_DAGS_IN_CHILD, str(dags_folder), *dag_ids, env=env)


class StatsdListener:
    """Every datagram that arrives on a loopback UDP port, until stopped."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.lines.extend(data.decode(errors="replace").splitlines())

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        return self.lines


def observed_env(statsd_port: int, events_file: Path) -> dict[str, str]:
    """This process's environment plus Airflow's StatsD backend aimed at ``statsd_port`` (tags in
    the InfluxDB form, name,tag=value:..., so a test can read them) and OpenLineage events
    appended to ``events_file``."""
    return {
        **os.environ,
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd_port),
        "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "magi-tests",
    }


def fake_account(settings: Any, **reads: Any) -> Any:
    """The hook's own spend view (``MagiAccountMixin.spend_room``) over made-up account reads:
    ``get_balance``, ``get_spend``, ``get_unit_price``, ``get_started_since`` (no HTTP)."""
    from airflow_provider_magi.hooks.account import MagiAccountMixin

    class Account(MagiAccountMixin):
        def __init__(self) -> None:
            self.__dict__.update(reads, settings=settings)

    return Account()


STAMPED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+")


def lines_with(logs: str, text: str) -> list[str]:
    """The task log lines holding ``text``, each once: only lines with their time stamp (a
    version that also hands the records to pytest's capture, unstamped, or writes them to a file
    too, would count each twice), in the order they were logged."""
    found = {line for line in logs.splitlines() if text in line and STAMPED.search(line)}
    return sorted(found, key=lambda line: STAMPED.findall(line)[0])
