"""Helpers shared by the tests (no side effects: conftest.py owns the environment)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
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
