"""Issue 26 item 11: one check before any paid call, refusing when in doubt.

Each case as a new user met it: a paid scene 1 before an empty scene 2 was found, mistyped guard
extras that left the guards off (and a Test button saying "Connection OK"), a hook call that paid
whatever the guards said, and a destination whose filesystem was missing found after paying.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from airflow_provider_magi.exceptions import MagiBudgetError, MagiError, MagiInputError
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.hooks.settings import guard_typos
from airflow_provider_magi.operators.download import destination_path
from airflow_provider_magi.operators.long_video import MagiLongVideoOperator
from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.helpers import CANARY_KEY, connection_json, run_dag, task_instance

MAGI = "wavespeed-ai/magi-1-24b"
PAID_ROUTES = ("submit", "upload", "upload_ticket", "upload_put")


@pytest.fixture
def books() -> Iterator[LocalWaveSpeedServer]:
    with LocalWaveSpeedServer(
        api_key=CANARY_KEY, completion_seconds=0.2, prices={MAGI: 0.5}, balance=10.0
    ) as running:
        yield running


def use(server: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, **extra: object) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server, **extra))


def paid(server: LocalWaveSpeedServer) -> int:
    return sum(server.count(route) for route in PAID_ROUTES) + len(server.app.predictions)


# ---------------------------------------------------------------- every scene before scene 1


@pytest.mark.money
def test_an_empty_scene_2_fails_the_long_video_before_scene_1_is_paid(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(books, monkeypatch)
    dag_run = run_dag(dag_bag, "magi_r2_long_video_empty_scene")
    assert dag_run.state == "failed"
    assert paid(books) == 0  # the old code paid for scene 1 first


def test_the_refusal_names_the_scene(tmp_path: Path) -> None:
    operator = MagiLongVideoOperator(task_id="t", scenes=["a boat", ""], destination=str(tmp_path))
    with pytest.raises(MagiInputError, match=r"^Scene 2 of 2: Invalid prompt: is empty .*Fix:"):
        operator.execute({})  # type: ignore[arg-type]  # refused before the context is read


# ---------------------------------------------------------------- mistyped guards


@pytest.mark.money
@pytest.mark.parametrize(
    "typo", ["min_balance", "daily_budget", "Daily_Budget_USD", "extra__magi__min_balance"]
)
def test_a_mistyped_guard_extra_refuses_instead_of_paying_unguarded(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, typo: str
) -> None:
    use(books, monkeypatch, **{typo: 1000})
    with pytest.raises(MagiError, match=rf"extra '{typo}' is not one this provider reads.*spending guard"):
        MagiHook().settings
    dag_run = run_dag(dag_bag, "magi_test_cost_sync")
    assert dag_run.state == "failed"
    assert paid(books) == 0  # the old code warned, and paid for a video with the guard off
    ok, message = MagiHook().test_connection()
    assert not ok and f"extra '{typo}'" in message and "Connection OK" not in message


def test_only_guard_look_alikes_are_errors() -> None:
    assert guard_typos({"max_retry": 3, "min_balance_usd": 1, "daily_budget_usd": 2}, "c") == []
    (error,) = guard_typos({"budget": 5}, "c")
    assert "'daily_budget_usd'" in error and CANARY_KEY not in error


def test_the_test_button_reports_unknown_extras_and_a_balance_under_the_floor(
    books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(books, monkeypatch, max_retry=3)
    ok, message = MagiHook().test_connection()
    assert not ok
    assert "balance $10.00" in message and "extra 'max_retry'" in message and "'max_retries'" in message
    use(books, monkeypatch, min_balance_usd=20)
    ok, message = MagiHook().test_connection()
    assert not ok and "below the connection's min_balance_usd of $20.00" in message
    use(books, monkeypatch, min_balance_usd=10)  # at the floor: fine
    assert MagiHook().test_connection() == (
        True,
        f"Connection OK, balance $10.00: WaveSpeed at {books.base_url} accepted the API key.",
    )
    assert paid(books) == 0


# ---------------------------------------------------------------- the hook is guarded too


@pytest.mark.money
def test_the_hook_s_create_prediction_holds_the_connection_s_guards(
    books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(books, monkeypatch, min_balance_usd=20)
    with pytest.raises(MagiBudgetError, match=r"below the connection's min_balance_usd of \$20\.00"):
        MagiHook().create_prediction({"prompt": "a guarded hook call [[duration: 0]]"})
    assert paid(books) == 0  # the old hook paid whatever the guards said
    use(books, monkeypatch, daily_budget_usd=0.25)
    spent = MagiHook().create_prediction({"prompt": "first use [[duration: 0]]"}, check_guards=False)
    assert books.count("balance") + books.count("usage") == 1  # only the first refusal read
    assert len(books.app.predictions) == 1 and spent.id in books.app.predictions
    # Billed now (0.50 spent): the next one's guard refuses by the spend alone.
    assert [b.prediction_id for b in books.billings] == [spent.id]
    with pytest.raises(MagiBudgetError, match="daily_budget_usd"):
        MagiHook().create_prediction({"prompt": "over budget [[duration: 0]]"})
    assert len(books.app.predictions) == 1


# ---------------------------------------------------------------- the destination's filesystem


def _s3_missing() -> bool:
    try:
        fsspec.get_filesystem_class("s3")
    except (ImportError, ValueError):
        return True
    return False


@pytest.mark.skipif(not _s3_missing(), reason="s3fs is installed here")
def test_a_missing_filesystem_is_named_with_the_provider_s_install_hint() -> None:
    from airflow.sdk import ObjectStoragePath

    for destination in ("s3://magi-test-bucket/videos", ObjectStoragePath("s3://magi-test-bucket/videos")):
        with pytest.raises(MagiInputError, match=r"pip install 'apache-airflow-providers-amazon\[s3fs\]'"):
            destination_path(destination)


@pytest.mark.money
@pytest.mark.skipif(not _s3_missing(), reason="s3fs is installed here")
def test_a_long_video_to_a_rendered_s3_destination_without_s3fs_pays_nothing(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(books, monkeypatch)
    dag_run = run_dag(dag_bag, "magi_r2_long_video_s3")
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "long_video").try_number == 1
    assert paid(books) == 0  # the old code paid for both scenes, then failed writing the video
