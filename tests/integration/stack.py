"""A real Airflow deployment for the integration tests, as separate processes on loopback.

PostgreSQL (a fresh database, dropped at the end) is the metadata database, Redis the Celery
broker; api-server, scheduler, dag-processor, triggerer and a Celery worker each run as their own
process group, as in production, next to the project's local WaveSpeed server.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
REDIS_URL = "redis://127.0.0.1:6379"


# MAGI-1, and a variant of it that one scenario uses alone: its retry reads WaveSpeed's history,
# where no other scenario's predictions may stand beside its own.
SERVED_MODELS = ("wavespeed-ai/magi-1-24b", "wavespeed-ai/magi-1-24b/ledger-scenario")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_services() -> None:
    """Skip (fail under CI, where a skip would hide the stage) when PostgreSQL or Redis is not
    answering: a real deployment needs both, and a missing one is not a failure of the code."""
    import pytest

    wanted = {
        f"PostgreSQL on {PG['host']}:{PG['port']}": (str(PG["host"]), int(str(PG["port"]))),
        "Redis on 127.0.0.1:6379": ("127.0.0.1", 6379),
    }
    missing = []
    for name, address in wanted.items():
        try:
            socket.create_connection(address, timeout=2).close()
        except OSError:
            missing.append(name)
    if missing:
        message = f"the full-stack tests need {' and '.join(missing)} (PostgreSQL with trust auth)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _psql(sql: str, database: str = "postgres") -> None:
    import psycopg2

    conn = psycopg2.connect(dbname=database, **PG)  # type: ignore[arg-type]
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


class AirflowStack:
    """Starts everything in ``start()``; ``stop()`` kills every process it started and drops the DB."""

    COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", "worker")

    def __init__(
        self,
        dag_files: Iterable[Path],
        *,
        api_key: str,
        worker_concurrency: int = 8,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="magi-it-home-"))
        self.dags = self.home / "dags"
        self.dags.mkdir()
        for path in dag_files:
            shutil.copy(path, self.dags / path.name)
        self.output_dir = self.home / "videos"
        self.database = f"magi_it_{uuid.uuid4().hex[:12]}"
        self.redis_db = 1 + int(uuid.uuid4().int % 15)
        self.api_port = free_port()
        self.server_port = free_port()
        self.api_key = api_key
        self.worker_concurrency = worker_concurrency
        self.extra_env = dict(extra_env or {})
        self.jwt_secret = secrets.token_hex(16)  # one for every component, or tokens do not verify
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.server: subprocess.Popen[bytes] | None = None
        self._log_files: list[Any] = []

    # ------------------------------------------------------------ environment

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def wavespeed(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def env(self) -> dict[str, str]:
        sql = f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{self.database}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MAGI_"))}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api}/execution/",
                "AIRFLOW__CORE__FERNET_KEY": "",
                "AIRFLOW__CORE__PARALLELISM": "64",
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "64",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql,
                "AIRFLOW__CELERY__BROKER_URL": f"{REDIS_URL}/{self.redis_db}",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{self.database}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "15",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "MAGI_OUTPUT_DIR": str(self.output_dir),
                "MAGI_POLL_INTERVAL": "1",
            }
        )
        env.update(self.extra_env)
        return env

    # ------------------------------------------------------------ lifecycle

    def start(self) -> AirflowStack:
        _psql(f'CREATE DATABASE "{self.database}"')
        self._flush_redis()
        self._run("db", "migrate")
        self.start_server()
        for component in self.COMPONENTS:
            self.start_component(component)
        self.wait_until(self._api_ready, timeout=120, what="the api-server to answer")
        return self

    def stop(self) -> None:
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM)
        if self.server is not None:
            _kill_group(self.server, signal.SIGTERM)
        for handle in self._log_files:
            handle.close()
        try:
            _psql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            self._flush_redis()

    def start_server(self, faults: list[dict[str, Any]] | None = None) -> None:
        command = [
            sys.executable, "-m", "airflow_provider_magi.testing",
            "--port", str(self.server_port), "--api-key", self.api_key,
            "--completion-seconds", "3", "--faults", json.dumps(faults or []),
            "--models", ",".join(SERVED_MODELS),
        ]  # fmt: skip
        self.server = self._spawn("wavespeed", command)
        self.wait_until(lambda: _answers(f"{self.wavespeed}/_testing/faults"), 30, "the local server")

    def start_component(self, component: str) -> None:
        if component == "worker":
            command = ["celery", "worker", "--concurrency", str(self.worker_concurrency)]
        else:
            command = [component]
        self.processes[component] = self._spawn(component, [sys.executable, "-m", "airflow", *command])

    def kill(self, component: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(component)
        _kill_group(process, sig)

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        handle = (self.home / f"{name}.out").open("ab")
        self._log_files.append(handle)
        return subprocess.Popen(
            command,
            env=self.env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.home,
        )

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env(),
            capture_output=True,
            timeout=300,
            text=True,
        )
        if done.returncode:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )

    def _flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(f"{REDIS_URL}/{self.redis_db}").flushdb()

    def _api_ready(self) -> bool:
        return _answers(f"{self.api}/api/v2/version")

    # ------------------------------------------------------------ REST API

    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(method, f"{self.api}/api/v2{path}", timeout=30, **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def add_connection(self, conn_id: str, password: str, host: str | None = None) -> None:
        self.rest(
            "POST",
            "/connections",
            json={
                "connection_id": conn_id,
                "conn_type": "magi",
                "host": host or self.wavespeed,
                "password": password,
            },
        )

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        self.wait_until(
            lambda: _answers(f"{self.api}/api/v2/dags/{dag_id}"), timeout, f"DAG {dag_id} to be parsed"
        )

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        self.wait_for_dag(dag_id)
        run = self.rest("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.rest("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        final: list[str] = []

        def finished() -> bool:
            state = self.run_state(dag_id, run_id)
            if state in ("success", "failed"):
                final.append(state)
                return True
            return False

        self.wait_until(finished, timeout, f"{dag_id} run {run_id} to finish")
        return final[0]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answer = self.rest("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        return list(answer["task_instances"])

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        answer = self.rest(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"map_index": map_index, "deserialize": True, "stringify": False},
        )
        return answer["value"]

    def server_requests(self) -> list[dict[str, Any]]:
        return list(requests.get(f"{self.wavespeed}/_testing/requests", timeout=30).json())

    def set_faults(self, faults: list[dict[str, Any]]) -> None:
        requests.put(f"{self.wavespeed}/_testing/faults", json=faults, timeout=30).raise_for_status()

    def log_text(self) -> str:
        """Every log file the deployment wrote: task logs and each component's output."""
        return "\n".join(
            p.read_text(errors="replace") for p in self.home.rglob("*") if p.suffix in (".log", ".out")
        )

    @staticmethod
    def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 1.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (requests.RequestException, AssertionError):
                pass
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
