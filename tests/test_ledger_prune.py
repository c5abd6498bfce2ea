"""Issue 26 item 13: ``ledger_prune`` deletes only what the provider wrote, refuses nan/inf
clearly, and prunes a ``ledger_path`` store and the cost marks too."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_magi.ledger import LedgerRecord
from airflow_provider_magi.ledger_prune import _days, main, prune, prune_path
from airflow_provider_magi.paying.rendering import RenderingRecord

FINGERPRINT = "f" * 64
NOW = datetime.now(UTC)


def record(days_ago: float) -> str:
    return LedgerRecord(FINGERPRINT, "m", NOW - timedelta(days=days_ago)).paid("p1").to_json()


def mark(days_ago: float) -> str:
    counted = (NOW - timedelta(days=days_ago)).isoformat(timespec="seconds")
    return json.dumps({"v": 1, "prediction_id": "p", "cost_usd": 0.3, "counted_at": counted, "by": "d.t"})


@pytest.fixture
def variables(dag_bag: Any) -> Iterator[dict[str, str]]:
    """Variables written for one test, and removed after it (whatever prune left)."""
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    rows: dict[str, str] = {}
    yield rows
    with create_session() as session:
        session.execute(delete(Variable).where(Variable.key.in_(list(rows))))


def stored(rows: dict[str, str]) -> set[str]:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return set(session.scalars(select(Variable.key).where(Variable.key.in_(list(rows)))))


def test_only_the_provider_s_own_keys_are_deleted(variables: dict[str, str]) -> None:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    ours_old, ours_new = "magi_ledger." + "1" * 40, "magi_ledger." + "2" * 40
    variables.update(
        {
            ours_old: record(10),
            ours_new: record(1),
            "MAGI_LEDGER." + "3" * 40: record(10),  # a user's key: another case
            "magi_ledger.notes": record(10),  # a user's key: not a digest
            "magi_cost.abc123": mark(10),
            "magi_cost.def456": mark(1),
            "Magi_Cost.abc123": mark(10),
        }
    )
    with create_session() as session:
        for key, value in variables.items():
            session.add(Variable(key=key, val=value))
    deleted, _ = prune(timedelta(days=8))
    assert {ours_old, "magi_cost.abc123"} <= set(deleted)
    assert stored(variables) == set(variables) - {ours_old, "magi_cost.abc123"}  # the old code: 4 gone


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_nan_and_infinity_are_refused_with_a_clear_message(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="must be a finite number of days"):
        _days(value)
    with pytest.raises(SystemExit) as exit_:  # the old code: a ValueError/OverflowError traceback
        main(["--older-than-days", value])
    assert exit_.value.code == 2


def test_a_ledger_path_store_is_pruned_too(tmp_path: Path, dag_bag: Any) -> None:
    base = tmp_path / "magi-ledger"

    def put(relative: str, text: str) -> Path:
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    old = put("dag/run/task/-1/prediction.json", record(10))
    new = put("dag/run/task/-1/scene-1.json", record(1))
    garbage = put("dag/run2/task/-1/prediction.json", "{not a record")
    elsewhere = put("notes/keep.json", record(10))  # not at the ledger's depth: not ours
    rendering = RenderingRecord(1, at=(NOW - timedelta(days=10)).isoformat(timespec="seconds"))
    old_rendering = put("dag/run/task/-1/rendering.json", rendering.to_json())
    new_rendering = put("dag/run3/task/-1/rendering.json", RenderingRecord(1).to_json())
    deleted, unreadable = prune_path(f"file://{base}", timedelta(days=8))
    assert sorted(deleted) == sorted([f"file://{old}", f"file://{old_rendering}"])
    assert unreadable == [f"file://{garbage}"]
    assert not old.exists() and new.exists() and garbage.exists() and elsewhere.exists()
    assert not old_rendering.exists() and new_rendering.exists()
    assert main(["--ledger-path", f"file://{base}", "--dry-run"]) == 0
