"""The test harness's own rules: what a machine without PostgreSQL or Redis sees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.hostile import free_port
from tests.integration import stack


def test_the_full_stack_skips_with_its_reason_without_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(stack.PG, "port", free_port())  # nothing listens there
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"need PostgreSQL on 127\.0\.0\.1:\d+"):
        stack.require_services()
    monkeypatch.setenv("CI", "true")  # under CI a skip would hide the stage: it fails instead
    with pytest.raises(pytest.fail.Exception, match="need PostgreSQL"):
        stack.require_services()


def test_no_test_asserts_an_upper_bound_on_wall_clock_time() -> None:
    """A bound on seconds passes on a quiet machine and fails on a busy one: prove a deadline by
    what was (not) sent or by the message only the deadline produces, never by how long it took."""
    duration = r"(time\.(time|monotonic|perf_counter)\(\) - \w+|\belapsed\b|\btook\b)"
    upper_bound = re.compile(rf"assert .*{duration}\s*<=?\s*[\d.]+")
    root = Path(__file__).resolve().parent
    offenders = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in root.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if upper_bound.search(line)
    ]
    assert offenders == []
