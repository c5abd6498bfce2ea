"""Test set-up: a private AIRFLOW_HOME on SQLite, and the local WaveSpeed server over loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Airflow reads its configuration at import time: point it at a throw-away home first. Its DAG
# folder holds only DAG files (dag.test() parses the whole folder): the examples and tests/dags.
ROOT = Path(__file__).resolve().parent.parent
_HOME = Path(tempfile.mkdtemp(prefix="magi-airflow-home-"))
DAGS_FOLDER = _HOME / "dags"
DAGS_FOLDER.mkdir()
for _dag_file in [*(ROOT / "example_dags").glob("*.py"), *(ROOT / "tests" / "dags").glob("*.py")]:
    shutil.copy(_dag_file, DAGS_FOLDER / _dag_file.name)
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "MAGI_TEST_OUTPUT_DIR": str(_HOME / "videos"),
        "MAGI_OUTPUT_DIR": str(_HOME / "videos"),
        "MAGI_POLL_INTERVAL": "0.1",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME}/airflow.db",
    }
)
# Connections and Variables are encrypted, as in every deployment: Airflow 3.0 and 3.1 break on
# some cryptography releases only when a Fernet key is set (tests/test_environment.py).
if not os.environ.get("AIRFLOW__CORE__FERNET_KEY"):
    from cryptography.fernet import Fernet

    os.environ["AIRFLOW__CORE__FERNET_KEY"] = Fernet.generate_key().decode()
os.environ.pop("WAVESPEED_API_KEY", None)
os.environ.pop("AIRFLOW_CONN_MAGI_DEFAULT", None)

from airflow_provider_magi.testing import LocalWaveSpeedServer  # noqa: E402
from tests.helpers import CANARY_KEY, connection_json  # noqa: E402


@pytest.fixture(autouse=True)
def no_dns_beyond_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The output-URL check resolves host names; here it may resolve only local ones, so no test
    sends a DNS query to this machine's (non-loopback) resolver."""
    import socket

    from airflow_provider_magi import output_urls

    def local_only(host: str, *args: Any, **kwargs: Any) -> Any:
        local = host in ("localhost", socket.gethostname()) or host.replace(".", "").isdigit()
        assert local, f"a test resolved {host!r}: that would query a resolver off this machine"
        return socket.getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(output_urls, "resolve", local_only)


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


def one_execution_api_per_process() -> None:
    """dag.test() runs each task try against an in-process Execution API app. Airflow 3.3 builds
    that app once per process (``in_process_api_server`` is ``functools.lru_cache(maxsize=1)``);
    3.0 to 3.2 build a new one for every try, each with its own event-loop thread that is never
    stopped: measured on 3.1, rebuilding the versioned routes alone was a quarter of a DAG test's
    CPU, and the money tests on 3.1 cost twice the CPU of the same tests on 3.3. Cache it as 3.3
    does, so the older minors test the provider, not that rebuild."""
    import functools

    from airflow.sdk.execution_time import supervisor

    if not hasattr(supervisor.in_process_api_server, "cache_info"):  # 3.3 caches it already
        supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)


@pytest.fixture
def quick_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """A submit intent without an id is left 30 s to land before WaveSpeed's history is asked
    (one constant for every shape, in the paying core): 0.3 s for the modules that use this."""
    from airflow_provider_magi.paying import item

    monkeypatch.setattr(item, "INTENT_SETTLE_SECONDS", 0.3)


@pytest.fixture(scope="session")
def dag_bag() -> Any:
    """The test DAG folder, parsed, on a migrated SQLite metadata database (for ``dag.test()``)."""
    for command in (["db", "migrate"], ["dags", "reserialize"]):  # reserialize registers the assets
        subprocess.run(
            [sys.executable, "-m", "airflow", *command], check=True, capture_output=True, env=os.environ
        )
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    one_execution_api_per_process()
    bag = DagBag(str(DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture
def task_logs(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Any:
    """Everything logged so far: Airflow's task logs go to stdout/stderr, others to logging."""
    seen: list[str] = []
    started = time.time()

    def read() -> str:
        out, err = capfd.readouterr()
        seen.extend([out, err])
        # Some Airflow versions write dag.test() task logs to files under $AIRFLOW_HOME/logs.
        files = [
            path.read_text(errors="replace")
            for path in (_HOME / "logs").rglob("*.log")
            if path.stat().st_mtime >= started
        ]
        return "".join(seen) + caplog.text + "".join(files)

    return read


def pytest_report_header() -> str:
    from airflow import __version__

    return f"apache-airflow {__version__}"
