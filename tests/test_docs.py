"""The docs say what the code does: each list a user reads is checked against the code it
describes (connection extras, metrics, the lineage facet, the result dict, asset events), and no
doc cites a file the repository does not have."""

from __future__ import annotations

import inspect
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_magi import metrics
from airflow_provider_magi.api import Prediction
from airflow_provider_magi.hooks.settings import KNOWN_EXTRAS
from airflow_provider_magi.operators.download import MagiDownloadOutputsOperator

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "airflow_provider_magi"
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def doc(name: str) -> str:
    return (ROOT / "docs" / name).read_text()


def quoted(text: str) -> set[str]:
    """Every `code span` of a Markdown text."""
    return set(re.findall(r"`([^`\n]+)`", text))


def test_every_connection_extra_is_in_the_connection_page() -> None:
    assert {"min_balance_usd", "daily_budget_usd", "cost_lookup_seconds"} <= KNOWN_EXTRAS
    assert sorted(KNOWN_EXTRAS - quoted(doc("connection.md"))) == []


def metric_names() -> set[str]:
    """Every metric the package sends: literal names, the outcomes of the waits, and cost's pair."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        names |= set(re.findall(r"metrics\.(?:incr|timing|gauge)\(\s*\"([^\"]+)\"", path.read_text()))
    names |= {"predictions.completed", "predictions.failed"}  # waiting.py: f"predictions.{outcome}"
    names |= set(re.findall(r"PREFIX \+ \"([^\"]+)\"", inspect.getsource(metrics)))
    return {metrics.PREFIX + name for name in names}


def test_every_metric_and_tag_is_in_the_observability_page() -> None:
    page = doc("observability.md")
    assert {"magi.polls", "magi.cost_usd", "magi.cost_microusd"} <= metric_names()
    assert sorted(metric_names() - quoted(page)) == []
    assert {"model", "conn_id", "dag_id"} <= quoted(page)  # the tags


def test_the_lineage_facet_fields_are_in_the_observability_page() -> None:
    pytest.importorskip("airflow.providers.openlineage", reason="the [openlineage] extra is not installed")
    import attrs

    from airflow_provider_magi.lineage import MagiPredictionRunFacet

    fields = {field.name for field in attrs.fields(MagiPredictionRunFacet) if not field.name.startswith("_")}
    row = next(line for line in doc("observability.md").splitlines() if "`magi_prediction`" in line)
    assert "cost_usd" in fields
    assert sorted(fields - quoted(row)) == []


def test_the_result_dict_in_the_operators_page_has_every_key() -> None:
    page = doc("operators.md")
    paragraph = page[page.index("Result dict (return value") :].split("\n\n")[0]
    keys = {*Prediction(id="p", model="m", status="completed").to_result(), "inputs", "cost_usd"}
    assert sorted(keys - quoted(paragraph)) == []


def test_the_asset_event_fields_in_the_operators_page_are_the_ones_sent() -> None:
    source = inspect.getsource(MagiDownloadOutputsOperator._emit_asset_events)
    sent = set(re.findall(r"^\s+\"(\w+)\":", source, re.M)) | set(re.findall(r"extra\[\"(\w+)\"\]", source))
    assert "cost_usd" in sent
    page = doc("operators.md")
    sentence = page[page.index("Asset events carry") :].split("\n\n")[0]
    assert sorted(sent - quoted(sentence)) == []


# A code span that names a file or folder of this repository: a relative path with a suffix, or
# one ending in a slash.
_PATH = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+(?:/|\.(?:py|md|txt|json|toml|png|sh|cfg|yml|yaml))")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_file_a_doc_cites_is_in_the_repository(path: Path) -> None:
    cited = {span for span in quoted(path.read_text()) if _PATH.fullmatch(span)}
    missing = sorted(
        span for span in cited if not (ROOT / span).exists() and not (path.parent / span).exists()
    )
    assert missing == []


def test_every_airflow_home_the_readme_makes_in_the_checkout_is_git_ignored() -> None:
    """A user who follows the README must not find its throw-away Airflow home in `git status`."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    readme = (ROOT / "README.md").read_text()
    homes = set(re.findall(r"AIRFLOW_HOME=\"\$PWD/([^\"]+)\"", readme))
    assert ".airflow-offline" in homes
    for home in homes:
        ignored = subprocess.run(
            ["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", f"{home}/airflow.db"]
        )
        assert ignored.returncode == 0, f"{home} is not in .gitignore"


def test_the_readme_says_what_make_test_needs_beyond_python() -> None:
    readme = (ROOT / "README.md").read_text()
    needs = readme[readme.index("`make test` also needs") :].split("\n\n")[1]  # the list after it
    for what in ("PostgreSQL", "Redis", "Chromium from apt", "GB of disk"):
        assert what in needs, what


def test_the_offline_recipe_says_a_rerun_of_dags_test_pays_again_and_a_clear_does_not() -> None:
    """A new user reran `airflow dags test` for the same date and paid for every video again:
    Airflow deletes the run and makes a new one, which the provider pays for by design."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Run an example DAG yourself, offline") :].split("\n## ")[0]
    recipe_end = section.index("kill %1")
    note = section[recipe_end:]
    assert "airflow dags test" in section[:recipe_end]  # the recipe runs it
    assert "Running `airflow dags test` again pays again." in note
    assert "deletes that run and creates a new one" in note
    assert "clear" in note and "reattaches" in note


# ---------------------------------------------------------------- the messages a user meets


def _as_pattern(span: str) -> re.Pattern[str] | None:
    """A code span of troubleshooting.md as a pattern for the start of a message: `<name>` is any
    text, `...` is any text or none; None for a span with too little literal text to say anything."""
    parts = re.split(r"(<[^<>]+>|\.\.\.)", span)
    literal = "".join(part for i, part in enumerate(parts) if i % 2 == 0)
    if len(literal.strip()) < 25:
        return None
    pattern = "".join(
        re.escape(part) if i % 2 == 0 else (".*?" if part == "..." else ".+?") for i, part in enumerate(parts)
    )
    return re.compile(pattern, re.S)


def _batch_end(
    tmp_path: Path, lines: list[Any], *, carry: dict[str, Any] | None = None, timed_out: bool = False
) -> str:
    """The error a batch ends with, from its manifest lines (no server: the end is pure)."""
    from types import SimpleNamespace

    from airflow_provider_magi.exceptions import MagiError
    from airflow_provider_magi.operators.batch import MagiBatchOperator

    operator = MagiBatchOperator(task_id="batch", inputs=["a"], destination=str(tmp_path))
    operator._lines = {line.index: line for line in lines}
    operator._carry = carry or {}
    operator._manifest_path = tmp_path / "manifest.jsonl"
    for step in ("_write", "_report_progress", "_emit_asset_events"):
        setattr(operator, step, lambda *args, **kwargs: None)
    operator._payer = SimpleNamespace(waiting=lambda waiting: None)  # type: ignore[assignment]
    with pytest.raises(MagiError) as raised:
        operator._finish(timed_out=timed_out)
    return str(raised.value)


def _batch_messages(tmp_path: Path) -> dict[str, str]:
    """What a batch says when it refuses or stops, produced by the code itself."""
    from types import SimpleNamespace

    from airflow_provider_magi.batch_budget import room
    from airflow_provider_magi.batch_inputs import check_items, load_items
    from airflow_provider_magi.exceptions import MagiError
    from airflow_provider_magi.hooks.settings import _extras
    from airflow_provider_magi.manifest import ManifestLine

    model = "wavespeed-ai/magi-1-24b"
    said: dict[str, str] = {}

    def refused(name: str, call: Any) -> None:
        with pytest.raises(MagiError) as raised:
            call()
        said[name] = str(raised.value)

    refused("unknown keys", lambda: check_items(["ok", {"prompt": "x", "sead": 4}], model))
    refused("several bad items", lambda: check_items([{"seed": 1}, {"prompt": "x", "seed": "soon"}], model))
    table = tmp_path / "table.jsonl"
    table.write_text('"ok"\n\n{"prompt": \n')
    refused("a line that is not JSON", lambda: check_items(load_items(str(table)), model))
    refused("a boolean amount", lambda: _extras({"daily_budget_usd": True}, "magi_default"))
    done = ManifestLine(0, "completed", "p0", 0.3, ["/v/0.mp4"], [9])
    said["MagiBatchIncompleteError"] = _batch_end(
        tmp_path, [done, ManifestLine(1, "failed", "p1", None, [], [], "boom"), ManifestLine(2)]
    )
    from tests.helpers import fake_account

    budget_settings = SimpleNamespace(conn_id="magi_default", min_balance_usd=None, daily_budget_usd=1.0)
    budget = fake_account(
        budget_settings,
        get_spend=lambda since, until: 0.3,
        get_unit_price=lambda model: 0.3,
        get_started_since=lambda since, billed_from=None: ([], 0.3),
    )
    stop = room(budget, model, 5, set(), log=None)[1]
    said["the budget stop"] = _batch_end(tmp_path, [done, ManifestLine(1)], carry={"stopped": stop})
    floor = fake_account(
        SimpleNamespace(conn_id="magi_default", min_balance_usd=5.0, daily_budget_usd=None),
        get_balance=lambda: 1.0,
    )
    stop = room(floor, model, 5, set(), log=None)[1]
    said["the floor stop"] = _batch_end(tmp_path, [done, ManifestLine(1)], carry={"stopped": stop})

    def down(*args: Any) -> Any:
        raise MagiError("503 Service Unavailable")

    unreadable = fake_account(budget_settings, get_spend=down)
    refused("an unreadable guard", lambda: room(unreadable, model, 5, set(), log=None))
    said["the timeout"] = _batch_end(tmp_path, [ManifestLine(0, "running", "p0")], timed_out=True)
    from airflow_provider_magi.batch_paths import BatchPaths

    ti = SimpleNamespace(map_index=0, dag_id="d", task_id="batch", run_id="r")

    def mapped() -> Any:
        return BatchPaths.prepare({"ti": ti}, "{run_id}/{index}.mp4", str(tmp_path), 1)  # type: ignore[arg-type]

    refused("a mapped filename", mapped)
    return said


def test_every_message_a_batch_refuses_or_stops_with_is_in_troubleshooting(tmp_path: Path) -> None:
    """Each message as the code words it (not as a test remembers it) must match the start of a
    message in docs/troubleshooting.md, where `<...>` stands for the varying parts: a change of
    wording on either side fails here."""
    patterns = [p for p in map(_as_pattern, quoted(doc("troubleshooting.md"))) if p is not None]
    said = _batch_messages(tmp_path)
    assert len(said) == 10
    missing = {name: message for name, message in said.items() if not any(p.match(message) for p in patterns)}
    assert missing == {}
