"""Counters and timers through Airflow's own ``Stats``, so StatsD and OpenTelemetry both work as
the deployment configured them (``[metrics]``); nothing to set up here.

Every name starts with ``magi.`` (after Airflow's own prefix, ``airflow.`` by default). Tags name
the model and the connection id; backends without tags (plain StatsD) drop them. A metric never
fails a task: a backend error is logged and forgotten. Nothing secret is ever a tag or a name.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "magi."


def _tags(model: str | None, conn_id: str | None) -> dict[str, str]:
    return {key: value for key, value in (("model", model), ("conn_id", conn_id)) if value}


def incr(name: str, count: int = 1, *, model: str | None = None, conn_id: str | None = None) -> None:
    """Add ``count`` to counter ``magi.<name>``."""
    _emit("incr", PREFIX + name, count, _tags(model, conn_id))


def timing(name: str, seconds: float, *, model: str | None = None, conn_id: str | None = None) -> None:
    """Record ``seconds`` on timer ``magi.<name>`` (sent in milliseconds)."""
    from datetime import timedelta

    _emit("timing", PREFIX + name, timedelta(seconds=max(0.0, seconds)), _tags(model, conn_id))


@cache
def _stats() -> Any:
    """Airflow's Stats, resolved once: the compat shim's lazy lookup cost half of every call on
    the triggerer's poll path."""
    from airflow.providers.common.compat.sdk import Stats

    return Stats


def _emit(kind: str, name: str, value: Any, tags: dict[str, str]) -> None:
    try:
        getattr(_stats(), kind)(name, value, tags=tags)
    except Exception:  # a metrics backend must never fail the task that measures
        log.debug("Could not send metric %s", name, exc_info=True)
