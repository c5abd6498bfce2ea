"""The test harness's own rules: what a machine without PostgreSQL or Redis sees."""

from __future__ import annotations

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
