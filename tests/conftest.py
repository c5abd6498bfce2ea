"""Test set-up: a private AIRFLOW_HOME on SQLite, and the local WaveSpeed server over loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Airflow reads its configuration at import time: point it at a throw-away home first.
_HOME = Path(tempfile.mkdtemp(prefix="magi-airflow-home-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).resolve().parent.parent / "example_dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME}/airflow.db",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    }
)
os.environ.pop("WAVESPEED_API_KEY", None)
os.environ.pop("AIRFLOW_CONN_MAGI_DEFAULT", None)

from airflow_provider_magi.testing import LocalWaveSpeedServer  # noqa: E402

CANARY_KEY = "canary-key-7f3a9c1e5b"


@pytest.fixture
def server() -> Iterator[LocalWaveSpeedServer]:
    """A fresh local server whose predictions complete after 0.5 s, keyed with the canary."""
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.5) as running:
        yield running


@pytest.fixture
def magi_conn(server: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch) -> LocalWaveSpeedServer:
    """``magi_default`` points at the local server, with fast retries."""
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server))
    return server


def connection_json(server: LocalWaveSpeedServer, **extra: object) -> str:
    conn = server.connection_uri_json()
    conn["extra"] = {"max_retries": 3, "max_retry_wait": 0.2, "read_timeout": 5, **extra}
    return json.dumps(conn)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database, for tests that run DAGs with ``dag.test()``."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ
    )
    return _HOME
