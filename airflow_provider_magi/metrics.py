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


def _tags(model: str | None, conn_id: str | None, dag_id: str | None = None) -> dict[str, str]:
    pairs = (("model", model), ("conn_id", conn_id), ("dag_id", dag_id))
    return {key: value for key, value in pairs if value}


def incr(name: str, count: int = 1, *, model: str | None = None, conn_id: str | None = None) -> None:
    """Add ``count`` to counter ``magi.<name>``."""
    _emit("incr", PREFIX + name, count, _tags(model, conn_id))


def timing(name: str, seconds: float, *, model: str | None = None, conn_id: str | None = None) -> None:
    """Record ``seconds`` on timer ``magi.<name>`` (sent in milliseconds)."""
    from datetime import timedelta

    _emit("timing", PREFIX + name, timedelta(seconds=max(0.0, seconds)), _tags(model, conn_id))


def gauge(
    name: str,
    value: float,
    *,
    model: str | None = None,
    conn_id: str | None = None,
    dag_id: str | None = None,
) -> None:
    """Set gauge ``magi.<name>`` to ``value`` (a float: gauges carry fractions on every backend)."""
    _emit("gauge", PREFIX + name, float(value), _tags(model, conn_id, dag_id))


def cost(usd: float, *, model: str | None, conn_id: str | None, dag_id: str | None) -> None:
    """What one prediction cost, as two metrics, since no one StatsD type both carries cents and
    sums on every backend:

    - gauge ``magi.cost_usd``: the price in dollars (``0.45``). Gauges are floats everywhere, but
      a gauge keeps only its last value per flush, so it answers "what did a video cost", not
      "what was spent";
    - counter ``magi.cost_microusd``: the price in millionths of a dollar (``450000``), for
      sums. StatsD counters are integers on several backends (Telegraf truncates ``0.45|c`` to 0,
      Airflow's own ``incr`` takes an int): a whole number of micro-dollars sums exactly, and
      carries WaveSpeed's 3-decimal amounts.
    """
    tags = _tags(model, conn_id, dag_id)
    _emit("gauge", PREFIX + "cost_usd", float(usd), tags)
    _emit("incr", PREFIX + "cost_microusd", round(usd * 1_000_000), tags)


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
