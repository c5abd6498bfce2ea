"""Each prediction's price sent to the cost metrics once, by whichever task first sees it billed.

The spend-per-DAG query (``magi.cost_microusd`` summed by ``dag_id``) is only as true as each
price being counted exactly once. Several tasks can see one prediction's price: the generate
task, a retry or clear of it that reattaches to the completed prediction, the sensor that waited
for it, the download task after it (which counts a price billed only after the generating task
ended). So the first of them to read a billed price marks it as counted, and the others do not
send it again. The mark is one Airflow Variable per prediction, ``magi_cost.<prediction id>``
(any task can read it, on every Airflow 3, whichever task wrote it), holding the price and who
counted it; ``python -m airflow_provider_magi.ledger_prune`` deletes marks older than 8 days.

A store that cannot be read or written does not lose a dollar: the price is sent, with a
warning that it may be counted again.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from airflow_provider_magi import metrics

VARIABLE_PREFIX = "magi_cost."
MARK_VERSION = 1


def mark_key(prediction_id: str) -> str:
    """The Variable that says ``prediction_id``'s price was counted (ids are at most 128 chars)."""
    return VARIABLE_PREFIX + prediction_id


def counted_cost(prediction_id: str, log: Any) -> float | None:
    """The price an earlier task counted for ``prediction_id``, or None (not counted, or unknown)."""
    from airflow.sdk import Variable

    try:
        raw = Variable.get(mark_key(prediction_id), default=None)
    except Exception as error:  # a missing mark only means "look it up": never fail on it
        log.warning("Prediction %s: could not read whether its cost was counted: %s", prediction_id, error)
        return None
    try:
        cost = json.loads(raw)["cost_usd"] if isinstance(raw, str) else None
    except (ValueError, KeyError, TypeError):
        return None
    return float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None


def count_once(
    prediction_id: str,
    cost: float,
    *,
    model: str | None,
    conn_id: str | None,
    dag_id: str | None,
    by: str,
    log: Any,
) -> bool:
    """Send ``cost`` to the cost metrics unless a task already counted this prediction; True
    when it was sent now. ``by`` names the task, for whoever reads the mark."""
    from airflow.sdk import Variable

    key = mark_key(prediction_id)
    try:
        if Variable.get(key, default=None) is not None:
            log.info("Prediction %s: its cost was already counted; not sent again.", prediction_id)
            return False
        mark = {
            "v": MARK_VERSION,
            "prediction_id": prediction_id,
            "cost_usd": cost,
            "counted_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "by": by,
        }
        Variable.set(
            key, json.dumps(mark), description=f"airflow-provider-magi: cost of {prediction_id} counted"
        )
    except Exception as error:
        log.warning(
            "Prediction %s: could not mark its cost as counted (%s); sent all the same, so a later "
            "task may count it again.",
            prediction_id,
            error,
        )
    metrics.cost(cost, model=model, conn_id=conn_id, dag_id=dag_id)
    return True
