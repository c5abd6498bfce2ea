"""#27: MagiBatchOperator against the local server: every video paid once, one manifest in order.

Each DAG test counts what the server created (what WaveSpeed bills) and the status reads it saw.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_magi.batch_inputs import check_items, load_items
from airflow_provider_magi.exceptions import MagiInputError
from airflow_provider_magi.manifest import ManifestLine, parse, render, summary
from airflow_provider_magi.testing import LocalWaveSpeedServer
from airflow_provider_magi.testing.faults import Fault
from tests.helpers import CANARY_KEY, DAG_TEST_LOGS_EXCEPTIONS, connection_json, run_dag, task_instance, xcom

pytestmark = pytest.mark.usefixtures("quick_settle")
MAGI = "wavespeed-ai/magi-1-24b"
PRICE = 0.37


@pytest.fixture
def books(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalWaveSpeedServer]:
    """The local server with a price of its own, as ``magi_default``; billing is immediate."""
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.3, prices={MAGI: PRICE}) as running:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(running))
        yield running


def manifest(dag_run: Any) -> list[dict[str, Any]]:
    path = Path(xcom(dag_run, "batch", key="batch_progress")["manifest_path"])
    return [json.loads(line) for line in path.read_text().splitlines()]


def status_reads(server: LocalWaveSpeedServer) -> int:
    return server.count("history") + server.count("result")


def most_unfinished_at_once(server: LocalWaveSpeedServer) -> int:
    """The most predictions the server held unfinished at any submit (its own clock decides)."""
    predictions = list(server.app.predictions.values())
    return max(
        sum(1 for q in predictions if q.started <= p.started < (q.completes_at() or float("inf")))
        for p in predictions
    )


# ---------------------------------------------------------------- inputs, checked before paying


def test_inputs_come_as_a_list_json_text_or_a_json_lines_file(tmp_path: Path) -> None:
    table = tmp_path / "table.jsonl"
    table.write_text('"a fox"\n\n{"prompt": "a kite", "seed": 7}\n')
    assert load_items(["a", {"prompt": "b"}]) == ["a", {"prompt": "b"}]
    assert load_items(' ["a", {"prompt": "b"}]') == ["a", {"prompt": "b"}]
    assert load_items(str(table)) == ["a fox", {"prompt": "a kite", "seed": 7}]
    assert load_items(f"file://{table}") == ["a fox", {"prompt": "a kite", "seed": 7}]
    items = check_items(load_items(table), MAGI)
    assert [item.inputs for item in items] == [{"prompt": "a fox"}, {"prompt": "a kite", "seed": 7}]
    assert items[0].fingerprint != check_items(["a fox"], "wavespeed-ai/other")[0].fingerprint


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (["ok", "ok", {"prompt": "x", "seed": "soon"}], r"inputs\[2\]: Invalid seed"),
        (["ok", {"prompt": "x", "sead": 4}], r"inputs\[1\]: unknown key\(s\) sead.*extra_inputs"),
        (["ok", {"seed": 4}], r"inputs\[1\]: no 'prompt'"),
        (["ok", 7], r"inputs\[1\]: int 7"),
        (["ok", "  "], r"inputs\[1\]: Invalid prompt: is empty"),
        ([], "the batch is empty"),
        ("[not json", "not valid JSON"),
        ("relative/table.jsonl", "neither a JSON list nor an absolute path"),
    ],
)
def test_a_bad_item_is_named_by_its_index_with_the_fix(raw: Any, message: str) -> None:
    with pytest.raises(MagiInputError, match=message):
        check_items(load_items(raw), MAGI)


def test_a_bad_json_lines_row_is_named_by_its_line(tmp_path: Path) -> None:
    table = tmp_path / "table.jsonl"
    table.write_text('"a"\n{"prompt": \n')
    with pytest.raises(MagiInputError, match=r"inputs\[1\] \(line 2 of .*table.jsonl\): is not JSON"):
        check_items(load_items(str(table)), MAGI)


def test_every_bad_json_lines_row_is_named_by_its_line_in_the_file_blank_lines_counted(
    tmp_path: Path,
) -> None:
    table = tmp_path / "table.jsonl"
    rows = [
        '"fine"',  # line 1: inputs[0]
        "",
        '{"prompt": "x", "sead": 1}',  # line 3: inputs[1]
        "   ",
        "",
        '{"prompt": ',  # line 6: inputs[2]
        '"fine \u2028 too"',  # line 7: inputs[3]; a JSON string may hold U+2028: still one line
        '{"seed": 3}',  # line 8: inputs[4]
        '{"prompt": "y", "seed": "soon"}',  # line 9: inputs[5]
    ]
    table.write_bytes("\r\n".join(rows).encode() + b"\r\n")  # Windows line ends count the same
    with pytest.raises(MagiInputError) as raised:
        check_items(load_items(str(table)), MAGI)
    message = str(raised.value)
    assert message.startswith("Invalid inputs: 4 of 6 items are bad, and nothing was sent"), message
    named = [line for line in message.splitlines() if line.startswith("- ")]
    where = f"of {table}"
    assert named == [
        f"- Invalid inputs[1] (line 3 {where}): unknown key(s) sead. Fix: use only prompt, image, seed, "
        "extra_inputs, key, metadata; other model inputs go inside 'extra_inputs'",
        named[1],
        f"- Invalid inputs[4] (line 8 {where}): no 'prompt'. Fix: add the text of the video to make",
        named[3],
    ]
    assert named[1].startswith(f"- Invalid inputs[2] (line 6 {where}): is not JSON (")
    assert named[3].startswith(f"- inputs[5] (line 9 {where}): Invalid seed")
    items = load_items(str(table))
    assert len(items) == 6 and items[3] == "fine \u2028 too"


def test_every_bad_item_is_named_up_to_twenty_then_how_many_more() -> None:
    raw = ["fine"] + [{"prompt": "x", "seed": "soon"}] * 25
    with pytest.raises(MagiInputError) as raised:
        check_items(raw, MAGI)
    message = str(raised.value)
    assert message.startswith("Invalid inputs: 25 of 26 items are bad, and nothing was sent")
    named = [line for line in message.splitlines() if line.startswith("- ")]
    assert [line.split(":")[0] for line in named[:20]] == [f"- inputs[{i}]" for i in range(1, 21)]
    assert named[20:] == ["- and 5 more"]


def test_the_manifest_round_trips_in_input_order() -> None:
    lines = [
        ManifestLine(2, "failed", "p2", None, [], [], "boom"),
        ManifestLine(0, "completed", "p0", 0.3, ["/a"], [9]),
    ]
    text = render(lines)
    assert [json.loads(line)["index"] for line in text.splitlines()] == [0, 2]
    assert parse(text + "{broken\n") == {line.index: line for line in lines}
    assert summary(lines, "m")["cost_usd"] == 0.3


@pytest.mark.money
def test_a_bad_item_fails_the_batch_before_anything_is_paid(
    dag_bag: Any, books: LocalWaveSpeedServer, task_logs: Any
) -> None:
    table = json.dumps(["fine", "fine too", {"prompt": "bad", "seed": 2**40}])
    dag_run = run_dag(dag_bag, "magi_batch_test_table", table=table)
    assert dag_run.state == "failed"
    assert books.count("submit") == 0 and not books.app.predictions
    assert not DAG_TEST_LOGS_EXCEPTIONS or "inputs[2]: Invalid seed" in task_logs()


# ---------------------------------------------------------------- the batch, end to end


@pytest.mark.money
def test_thirty_inputs_ten_in_flight_thirty_paid_files_and_an_ordered_manifest(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_batch_test_thirty")
    assert dag_run.state == "success"
    assert len(books.app.predictions) == 30 and books.count("submit") == 30
    assert most_unfinished_at_once(books) <= 10
    assert status_reads(books) < 2 * 30
    lines = manifest(dag_run)
    assert [line["index"] for line in lines] == list(range(30))
    assert {line["status"] for line in lines} == {"completed"}
    assert {line["prediction_id"] for line in lines} == set(books.app.predictions)
    assert all(line["cost_usd"] == PRICE for line in lines)
    paths = [line["paths"][0] for line in lines]
    assert len(set(paths)) == 30 and all(Path(path).stat().st_size > 0 for path in paths)
    assert paths[7].endswith("/batch/7.mp4")
    result = xcom(dag_run, "batch")
    assert result["succeeded"] == 30 and result["failed"] == 0 and result["not_submitted"] == 0
    assert result["cost_usd"] == pytest.approx(30 * PRICE)
    assert result["manifest_path"].endswith("/batch/manifest.jsonl")
    (extra,) = asset_extras("magi_test_batch_videos", dag_run.run_id)  # one event, the summary
    assert extra["succeeded"] == 30 and extra["cost_usd"] == pytest.approx(30 * PRICE)
    # each input asked for what it said
    prompts = {p.id: p.inputs["prompt"] for p in books.app.predictions.values()}
    assert all(prompts[line["prediction_id"]].startswith(f"video {line['index']} ") for line in lines)


@pytest.mark.money
def test_a_batch_whose_worker_dies_mid_wait_pays_for_nothing_again(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_batch_test_dies_mid_wait")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "batch").try_number == 2
    assert books.count("submit") == 6 and len(books.app.predictions) == 6
    lines = manifest(dag_run)
    assert [line["status"] for line in lines] == ["completed"] * 6
    assert {line["prediction_id"] for line in lines} == set(books.app.predictions)


@pytest.mark.money
def test_a_budget_with_room_for_four_of_ten_pays_for_exactly_four(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, task_logs: Any
) -> None:
    from airflow_provider_magi.hooks.magi import MagiHook
    from tests.helpers import wait_until

    earlier = MagiHook().create_prediction({"prompt": "earlier today [[duration: 0]]"}, MAGI)  # the price
    wait_until(lambda: any(b.prediction_id == earlier.id for b in books.billings), 10)
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books, daily_budget_usd=PRICE * 5))
    dag_run = run_dag(dag_bag, "magi_batch_test_budget")
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "batch").try_number == 1  # a budget refusal is not retried
    assert len(books.app.predictions) == 1 + 4 and books.count("submit") == 1 + 4
    lines = manifest(dag_run)
    assert [line["status"] for line in lines] == ["completed"] * 4 + ["not_submitted"] * 6
    assert all("daily_budget_usd" in line["error"] for line in lines[4:])
    assert all("left room for 4 more" in line["error"] for line in lines[4:])  # said after paying
    if DAG_TEST_LOGS_EXCEPTIONS:
        assert "Not submitted: inputs 4, 5, 6, 7, 8, 9" in task_logs()


@pytest.mark.money
def test_another_task_s_started_unbilled_predictions_count_against_the_batch_s_budget(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two predictions another task started today, not billed yet (they never finish here), are
    spent money: room for 5 after the billed one leaves 2 for the batch, not 4."""
    from airflow_provider_magi.hooks.magi import MagiHook
    from tests.helpers import wait_until

    hook = MagiHook()
    earlier = hook.create_prediction({"prompt": "earlier today [[duration: 0]]"}, MAGI)  # the price
    wait_until(lambda: any(b.prediction_id == earlier.id for b in books.billings), 10)
    for n in range(2):
        hook.create_prediction({"prompt": f"another task {n} [[never]]"}, MAGI)
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books, daily_budget_usd=PRICE * 5))
    dag_run = run_dag(dag_bag, "magi_batch_test_budget")
    assert dag_run.state == "failed"
    assert books.count("submit") == 3 + 2  # the batch paid for 2 of its 10
    lines = manifest(dag_run)
    assert [line["status"] for line in lines] == ["completed"] * 2 + ["not_submitted"] * 8


@pytest.mark.money
def test_predictions_billed_before_the_usage_stats_show_them_count_against_the_batch(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Usage stats lag billing: two videos billed a moment ago, not in the stats yet, are spent
    money. Room for 5 leaves 2 for the batch (it read 4), and the rest end not_submitted."""
    import time

    from airflow_provider_magi.hooks.magi import MagiHook
    from tests.helpers import wait_until

    hook = MagiHook()
    earlier = hook.create_prediction({"prompt": "earlier today [[duration: 0]]"}, MAGI)  # the price
    wait_until(lambda: any(b.prediction_id == earlier.id for b in books.billings), 10)
    books.app.account.usage_until = time.time()  # billed from now on, not in the usage stats
    for n in range(2):
        done = hook.create_prediction({"prompt": f"another task {n} [[duration: 0]]"}, MAGI)
        wait_until(lambda p=done.id: any(b.prediction_id == p for b in books.billings), 10)
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books, daily_budget_usd=PRICE * 5))
    dag_run = run_dag(dag_bag, "magi_batch_test_budget")
    assert dag_run.state == "failed"
    assert books.count("submit") == 3 + 2
    lines = manifest(dag_run)
    assert [line["status"] for line in lines] == ["completed"] * 2 + ["not_submitted"] * 8
    assert all("daily_budget_usd" in line["error"] for line in lines[2:])


@pytest.mark.money
def test_two_failing_of_six_are_the_only_ones_submitted_again_on_the_retry(
    dag_bag: Any, books: LocalWaveSpeedServer, task_logs: Any
) -> None:
    dag_run = run_dag(dag_bag, "magi_batch_test_partial")
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "batch").try_number == 2
    prompts = [p.inputs["prompt"] for p in books.app.predictions.values()]
    assert len(prompts) == 8 and books.count("submit") == 8
    assert sorted(prompts[6:]) == sorted(p for p in prompts[:6] if "[[fail" in p)
    lines = manifest(dag_run)
    assert [line["status"] for line in lines] == [
        "completed",
        "failed",
        "completed",
        "completed",
        "failed",
        "completed",
    ]
    assert lines[1]["error"] == "safety filter"
    assert books.count("output") == 4  # the retry kept the four whole files: none downloaded again
    assert not DAG_TEST_LOGS_EXCEPTIONS or "failed: inputs 1, 4" in task_logs()


@pytest.mark.money
def test_partial_errors_tolerated_succeed_and_the_summary_tells(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_batch_test_tolerant")
    assert dag_run.state == "success"
    result = xcom(dag_run, "batch")
    assert (result["succeeded"], result["failed"], result["not_submitted"]) == (1, 1, 0)
    assert result["cost_usd"] == pytest.approx(PRICE)


@pytest.mark.money
def test_a_lost_answer_is_never_paid_twice(dag_bag: Any, books: LocalWaveSpeedServer) -> None:
    books.set_faults([Fault(route="submit", kind="drop_after_accept", times=1)])
    dag_run = run_dag(dag_bag, "magi_batch_test_lost_answer")
    assert dag_run.state == "failed"
    assert len(books.app.predictions) == 3 and books.count("submit") == 3
    lines = manifest(dag_run)
    assert [line["status"] for line in lines] == ["uncertain", "completed", "completed"]
    (lost,) = set(books.app.predictions) - {line["prediction_id"] for line in lines}
    assert lost in lines[0]["error"]  # named, so a person can claim it


@pytest.mark.money
def test_a_json_lines_table_waits_in_the_worker_and_writes_where_asked(
    dag_bag: Any, books: LocalWaveSpeedServer, tmp_path: Path
) -> None:
    table = tmp_path / "table.jsonl"
    table.write_text("\n".join(json.dumps({"prompt": f"row {i} [[duration: 0.2]]"}) for i in range(3)) + "\n")
    dag_run = run_dag(
        dag_bag, "magi_batch_test_table", table=f"file://{table}", destination=str(tmp_path / "out")
    )
    assert dag_run.state == "success"
    assert books.count("submit") == 3
    written = sorted((tmp_path / "out" / "table").rglob("*.mp4"))
    assert len(written) == 3 and written[0].name.startswith("0_")
    assert len((written[0].parent / "manifest.jsonl").read_text().splitlines()) == 3


def test_a_dag_file_importing_the_batch_operator_loads_no_money_or_http_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from airflow.sdk import BaseOperator, DAG\n"
        "baseline = set(sys.modules)\n"
        "import airflow_provider_magi.operators.batch\n"
        "added = set(sys.modules) - baseline\n"
        "heavy = {'requests', 'httpx', 'aiohttp', 'tenacity', 'difflib'}\n"
        "ours = {'ledger', 'ledger_stores', 'costs', 'validation', 'batch_inputs', 'batch_ledger',"
        " 'manifest'}\n"
        "ours_hooks = {m for m in added if m.startswith('airflow_provider_magi.hooks')}\n"
        "bad = {m for m in added if m in heavy or m.split('.')[-1] in ours} | ours_hooks\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.money
def test_the_table_example_runs_end_to_end(dag_bag: Any, magi_conn: LocalWaveSpeedServer) -> None:
    dag_run = run_dag(dag_bag, "example_magi_batch_table")
    assert dag_run.state == "success"
    assert magi_conn.count("submit") == 4
    published = xcom(dag_run, "publish")
    assert len(published) == 4 and all(Path(path).stat().st_size > 0 for path in published)
    seeds = sorted(p.inputs["seed"] for p in magi_conn.app.predictions.values())
    assert seeds == [11, 12, 13, 14]


@pytest.mark.money
def test_a_429_on_a_submit_paces_the_batch_and_loses_no_item(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    # 1 + max_retries (3) answers of 429 exhaust the hook's own retries: the batch waits for the
    # next wave; the two 429s after that the hook's retries absorb.
    books.set_faults([Fault(route="submit", kind="status", status=429, retry_after=0.05, times=6)])
    dag_run = run_dag(dag_bag, "magi_batch_test_paced")
    assert dag_run.state == "success"
    assert len(books.app.predictions) == 4
    assert books.count("submit", status=429) == 6
    assert [line["status"] for line in manifest(dag_run)] == ["completed"] * 4


def asset_extras(asset: str, run_id: str) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == asset, AssetEvent.source_run_id == run_id)
        ).all()
        return [dict(event.extra) for event in events]


# ---------------------------------------------------------------- status in pages of the history


def test_status_is_read_a_hundred_per_call_and_the_trigger_row_holds_no_key(
    magi_conn: LocalWaveSpeedServer,
) -> None:
    import asyncio
    import math
    import time
    from datetime import UTC, datetime, timedelta

    from airflow_provider_magi.api import parse_timestamp
    from airflow_provider_magi.hooks.magi import MagiHook
    from airflow_provider_magi.triggers.batch import MagiBatchTrigger, aread_statuses, window

    hook = MagiHook()
    since = datetime.now(UTC) - timedelta(seconds=60)
    ours = [hook.create_prediction({"prompt": f"ours {i} [[duration: 30]]"}).id for i in range(250)]
    before = magi_conn.count("history")
    found, _ = asyncio.run(aread_statuses(hook, ours, MAGI, since))
    assert set(found) == set(ours)
    assert magi_conn.count("history") - before == math.ceil(250 / 100)
    assert magi_conn.count("result") == 0
    # Someone else's predictions after ours: a window cut at our newest leaves them out (they come
    # more than the window's one-second pad later: not a race, a gap in creation times).
    time.sleep(1.2)
    for i in range(200):
        hook.create_prediction({"prompt": f"theirs {i} [[duration: 30]]"})
    before = magi_conn.count("history")
    after, newest = window(ours, {p.id: parse_timestamp(p.created_at) for p in found.values()}, since)
    found, _ = asyncio.run(aread_statuses(hook, ours, MAGI, after, newest))
    assert set(found) == set(ours) and magi_conn.count("history") - before == math.ceil(250 / 100)
    before = magi_conn.count("history")
    asyncio.run(aread_statuses(hook, ours, MAGI, since))  # the open window: every page it holds
    assert magi_conn.count("history") - before == math.ceil(450 / 100)
    assert magi_conn.count("result") == 0
    trigger = MagiBatchTrigger(prediction_ids=ours, model=MAGI, created_after=since.isoformat())
    assert CANARY_KEY not in json.dumps(trigger.serialize())


@pytest.mark.money
def test_an_input_wavespeed_refuses_fails_alone_and_is_not_sent_again_in_the_same_try(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    books.set_faults([Fault(route="submit", kind="status", status=400, times=1)])
    dag_run = run_dag(dag_bag, "magi_batch_test_tolerant")
    assert dag_run.state == "success"
    assert books.count("submit") == 2 and len(books.app.predictions) == 1
    lines = manifest(dag_run)
    assert [line["status"] for line in lines] == ["failed", "failed"]
    assert "refused by WaveSpeed, not paid" in lines[0]["error"] and lines[1]["error"] == "GPU lost"


def test_the_local_server_pages_a_thousand_predictions_by_the_documented_filters(
    magi_conn: LocalWaveSpeedServer,
) -> None:
    """What the batch's status reads rest on: 1,000+ predictions, 100 per page, newest first, the
    filters as the docs describe them."""
    import time
    from datetime import timedelta

    from airflow_provider_magi.api import parse_timestamp
    from airflow_provider_magi.hooks.magi import MagiHook

    hook = MagiHook()
    made = [hook.create_prediction({"prompt": f"n{i} [[duration: 600]]"}) for i in range(1000)]
    ids = [p.id for p in made]
    middle = parse_timestamp(made[-1].created_at) + timedelta(milliseconds=1)  # the server's clock
    time.sleep(0.01)  # the next creation time is a later millisecond (a gap, not a race)
    later = [hook.create_prediction({"prompt": f"late{i} [[duration: 0]]"}).id for i in range(50)]
    listed = hook.list_predictions(model=MAGI, page_size=100, max_pages=11)
    assert [p.id for p in listed] == (ids + later)[::-1]  # every page, newest first
    pages = {r.json["page"] for r in magi_conn.requests if r.route == "history"}
    assert pages == set(range(1, 12))  # (a page retried under load is asked for again)
    assert [p.id for p in hook.list_predictions(created_after=middle)] == later[::-1]
    running = hook.list_predictions(status="processing", max_pages=11)
    assert {p.id for p in running} == set(ids)  # not yet started ("created") included
    assert hook.list_predictions(model="wavespeed-ai/other-model") == []


def test_lineage_names_the_output_folder(tmp_path: Path) -> None:
    pytest.importorskip("airflow.providers.openlineage")
    from airflow_provider_magi.operators.batch import MagiBatchOperator

    operator = MagiBatchOperator(task_id="batch", inputs=["a"], destination=str(tmp_path))
    assert operator.get_openlineage_facets_on_complete(None).outputs == []  # nothing known yet
    operator._lineage_folder = tmp_path / "d" / "r" / "batch"
    (dataset,) = operator.get_openlineage_facets_on_complete(None).outputs
    assert dataset.namespace.startswith("file") and dataset.name.endswith("d/r/batch")


@pytest.mark.money
def test_a_flagged_output_fails_its_item_under_nsfw_policy_fail_and_nothing_is_written(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_batch_test_nsfw")
    assert dag_run.state == "success"  # fail_on_partial_error=False
    lines = manifest(dag_run)
    assert [line["status"] for line in lines] == ["completed", "failed"]
    assert "nsfw_policy='fail'" in lines[1]["error"] and lines[1]["paths"] == []
    assert books.count("output") == 1


@pytest.mark.money
def test_the_timeout_fails_without_retry_naming_what_still_runs(
    dag_bag: Any, books: LocalWaveSpeedServer, task_logs: Any
) -> None:
    dag_run = run_dag(dag_bag, "magi_batch_test_timeout")
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "batch").try_number == 1  # a timeout is not retried
    assert books.count("submit") == 2
    lines = manifest(dag_run)
    assert [line["status"] for line in lines] == ["completed", "running"]
    assert "may still be billed" in lines[1]["error"]
    assert not DAG_TEST_LOGS_EXCEPTIONS or "running: inputs 1" in task_logs()


@pytest.mark.money
def test_mapped_batches_keep_their_files_and_manifests_apart(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_batch_test_mapped")
    assert dag_run.state == "success"
    assert books.count("submit") == 4
    results = [xcom(dag_run, "batch", map_index=i) for i in range(2)]
    assert [r["manifest_path"].rsplit("/", 3)[-3:] for r in results] == [
        ["batch", "0", "manifest.jsonl"],
        ["batch", "1", "manifest.jsonl"],
    ]
    for shelf, result in enumerate(results):
        lines = [json.loads(line) for line in Path(result["manifest_path"]).read_text().splitlines()]
        assert [line["paths"][0].rsplit("/", 2)[-2:] for line in lines] == [
            [str(shelf), "0.mp4"],
            [str(shelf), "1.mp4"],
        ]


@pytest.mark.money
def test_a_worker_killed_mid_wave_keeps_the_ids_it_got_and_pays_each_input_once(
    dag_bag: Any, books: LocalWaveSpeedServer, task_logs: Any
) -> None:
    dag_run = run_dag(dag_bag, "magi_batch_test_dies_mid_wave")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "batch").try_number == 2
    assert len(books.app.predictions) == 5 and books.count("submit") == 5
    assert books.count("history") >= 1  # the input being sent was looked up before paying for it
    lines = manifest(dag_run)
    assert [line["status"] for line in lines] == ["completed"] * 5
    assert {line["prediction_id"] for line in lines} == set(books.app.predictions)
    assert "they never started and are submitted again" in task_logs()


@pytest.mark.money
def test_an_unknown_price_sends_one_first_and_the_rest_once_its_price_is_billed(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books, daily_budget_usd=100))
    dag_run = run_dag(dag_bag, "magi_batch_test_budget")
    assert dag_run.state == "success"
    assert len(books.app.predictions) == 10
    from airflow_provider_magi.api import parse_timestamp

    first = min(books.app.predictions.values(), key=lambda p: p.started)
    billed = next(b for b in books.billings if b.prediction_id == first.id)
    later = [p for p in books.app.predictions.values() if p.id != first.id]
    # the other nine were submitted only after the first one's price was billed (ms precision)
    assert all(parse_timestamp(p.created_at).timestamp() >= billed.at - 0.001 for p in later)


@pytest.mark.money
def test_an_input_list_that_shifts_between_tries_pays_no_input_twice(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    """A re-rendered list with an item inserted first: the two paid in try 1 are found by their
    inputs, not by their old places, and only the new one is paid for."""
    dag_run = run_dag(dag_bag, "magi_batch_test_inputs_change")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "batch").try_number == 2
    prompts = sorted(p.inputs["prompt"] for p in books.app.predictions.values())
    assert books.count("submit") == 3 and len(prompts) == 3
    assert prompts == sorted(
        ["inserted [[duration: 0.3]]", "kept a [[duration: 0.3]]", "kept b [[duration: 0.3]]"]
    )
    lines = manifest(dag_run)
    assert [line["status"] for line in lines] == ["completed"] * 3
    by_id = {p.id: p.inputs["prompt"] for p in books.app.predictions.values()}
    assert [by_id[line["prediction_id"]] for line in lines] == [
        "inserted [[duration: 0.3]]",
        "kept a [[duration: 0.3]]",
        "kept b [[duration: 0.3]]",
    ]


@pytest.mark.money
def test_a_prediction_that_completed_without_outputs_is_not_paid_for_again_on_the_retry(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    """WaveSpeed billed it (it completed): the item fails, named, and the retry does not buy it again."""
    dag_run = run_dag(dag_bag, "magi_batch_test_no_outputs")
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "batch").try_number == 2
    assert books.count("submit") == 2 and len(books.app.predictions) == 2
    lines = manifest(dag_run)
    assert [line["status"] for line in lines] == ["completed", "failed"]
    assert "without any outputs" in lines[1]["error"]
    assert lines[1]["prediction_id"] in books.app.predictions


@pytest.mark.money
def test_a_billed_item_whose_price_was_not_read_is_not_reserved_twice_by_the_budget(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the price lookup off (cost_lookup_seconds=0), a completed item's cost stays unknown:
    it is in the billed spend, and must not be reserved again as unbilled in the next waves."""
    from airflow_provider_magi.hooks.magi import MagiHook
    from tests.helpers import wait_until

    earlier = MagiHook().create_prediction({"prompt": "earlier today [[duration: 0]]"}, MAGI)  # the price
    wait_until(lambda: any(b.prediction_id == earlier.id for b in books.billings), 10)
    monkeypatch.setenv(
        "AIRFLOW_CONN_MAGI_DEFAULT",
        connection_json(books, daily_budget_usd=PRICE * 5, cost_lookup_seconds=0),
    )
    dag_run = run_dag(dag_bag, "magi_batch_test_budget_two_at_a_time")
    assert dag_run.state == "failed"
    assert len(books.app.predictions) == 1 + 4 and books.count("submit") == 1 + 4
    lines = manifest(dag_run)
    assert [line["status"] for line in lines] == ["completed"] * 4 + ["not_submitted"] * 6


@pytest.mark.money
def test_the_guards_are_read_once_per_wave_not_once_per_submit(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch asks how many fit before each wave; the single-video guard on every submit
    would read the balance, the usage stats and today's history again for each of 1,000."""
    from airflow_provider_magi.hooks.magi import MagiHook
    from tests.helpers import wait_until

    earlier = MagiHook().create_prediction({"prompt": "earlier today [[duration: 0]]"}, MAGI)  # the price
    wait_until(lambda: any(b.prediction_id == earlier.id for b in books.billings), 10)
    monkeypatch.setenv(
        "AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books, daily_budget_usd=100, min_balance_usd=1)
    )
    balance, usage = books.count("balance"), books.count("usage")
    dag_run = run_dag(dag_bag, "magi_batch_test_budget")  # one wave of 10
    assert dag_run.state == "success"
    assert books.count("submit") == 1 + 10
    assert books.count("balance") - balance == 1
    assert books.count("usage") - usage <= 2


def test_a_manifest_line_edited_to_sizes_that_are_not_whole_numbers_is_not_trusted() -> None:
    """A damaged line reads as unknown (the item is asked about again), never as a line whose
    paths and sizes no longer pair up (the retry's whole-file check then crashed every try)."""
    text = json.dumps(
        {"index": 0, "prediction_id": "p", "status": "completed", "paths": ["/a"], "sizes": ["9"]}
    )
    assert parse(text + "\n") == {}


@pytest.mark.money
def test_a_prediction_wavespeed_no_longer_knows_is_named_not_paid_for_again(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    """A 404 for an id the ledger holds does not prove it failed (it may have completed and been
    billed): the retry names it and does not buy it again."""
    dag_run = run_dag(dag_bag, "magi_batch_test_forgotten")
    assert task_instance(dag_run, "batch").try_number == 2
    assert books.count("submit") == 2
    lines = manifest(dag_run)
    forgotten = [line for line in lines if line["status"] == "failed"]
    assert forgotten and all("404" in line["error"] for line in forgotten)


@pytest.mark.money
def test_mapped_batches_whose_filename_shares_one_folder_are_refused_before_paying(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    """Without {map_index} in the folder, every mapped batch wrote the same manifest.jsonl (and,
    without {prediction_id}, the same files): each overwrote the others' record of what was paid."""
    dag_run = run_dag(dag_bag, "magi_batch_test_mapped_shared_folder")
    assert dag_run.state == "failed"
    assert books.count("submit") == 0


# ---------------------------------------------------------------- what the batch says


def test_the_budget_stop_speaks_of_the_room_in_the_past_once_those_inputs_were_paid() -> None:
    """The refusal ends the task's error after the inputs it made room for were submitted: it
    must not ask to "leave room for 2 more" that were already paid."""
    from types import SimpleNamespace

    from airflow_provider_magi.batch_budget import room
    from tests.helpers import fake_account

    hook = fake_account(
        SimpleNamespace(conn_id="c", min_balance_usd=None, daily_budget_usd=PRICE * 3),
        get_spend=lambda since, until: PRICE,
        get_unit_price=lambda model: PRICE,
        get_started_since=lambda since, billed_from=None: ([], PRICE),
    )
    fits, refusal = room(hook, MAGI, 5, set(), log=None)
    assert fits == 2 and refusal is not None
    assert "left room for 2 more at $0.37 within daily_budget_usd $1.11" in refusal
    assert "so the batch stopped submitting after those" in refusal
    assert "leave room" not in refusal
    hook.get_spend = lambda since, until: PRICE * 3  # the budget is used up: no room at all
    fits, refusal = room(hook, MAGI, 5, set(), log=None)
    assert fits == 0 and refusal is not None
    assert "left no room for one more" in refusal and "stopped submitting there" in refusal
    # The floor: the batch's own words (the single video's "Nothing was uploaded or submitted"
    # is not true of a batch whose earlier waves were paid).
    floor = fake_account(
        SimpleNamespace(conn_id="c", min_balance_usd=5.0, daily_budget_usd=None), get_balance=lambda: 1.0
    )
    fits, refusal = room(floor, MAGI, 5, set(), log=None)
    assert fits == 0 and refusal == (
        "Connection 'c': when the balance was checked, it was $1.00, below the connection's "
        "min_balance_usd of $5.00, so the batch stopped submitting there"
    )


def test_the_progress_line_counts_every_status_uncertain_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from airflow_provider_magi.operators.batch import MagiBatchOperator

    class Log:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def info(self, message: str, *args: Any) -> None:
            self.lines.append(message % args)

    pushed: dict[str, Any] = {}
    operator = MagiBatchOperator(task_id="batch", inputs=["a"], destination=str(tmp_path))
    operator._lines = {
        0: ManifestLine(0, "completed", "p0", 0.3, ["/a"], [9]),
        1: ManifestLine(1, "failed", "p1", None, [], [], "boom"),
        2: ManifestLine(2, "running", "p2"),
        3: ManifestLine(3, "uncertain", None, None, [], [], "the submit's answer was lost"),
        4: ManifestLine(4, "uncertain", None, None, [], [], "the submit's answer was lost"),
        5: ManifestLine(5),
    }
    operator._manifest_path = tmp_path / "manifest.jsonl"
    operator._carry = {}
    operator._context = {"ti": SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value}))}
    log = Log()
    monkeypatch.setattr(MagiBatchOperator, "log", property(lambda _: log))
    operator._report_progress()
    assert log.lines == [
        "Batch: 1/6 completed, 1 failed, 1 running, 1 not submitted, 2 uncertain, $0.30 so far."
    ]
    assert pushed["batch_progress"]["uncertain"] == 2
