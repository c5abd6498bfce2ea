"""Admin → Connections, as a data engineer meets the provider first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.stack import AirflowStack
from tests.ui.conftest import CANARY, record_api_answers

pytestmark = pytest.mark.integration

WRONG_KEY = "wrong-key-typed-in-the-browser"


def open_add_form(page: Any) -> Any:
    """Open Add Connection and pick our type the way a user does: type, then choose."""
    from playwright.sync_api import expect

    page.goto("/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").fill("MAGI")
    option = page.get_by_role("option", name="WaveSpeed MAGI-1")
    expect(option).to_be_visible()
    option.click()
    return dialog


def test_form_shows_our_fields_and_hides_the_rest(page: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    dialog = open_add_form(page)
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    for label in (
        "Read timeout (s)",
        "Retries for transient errors",
        "Polls per second per triggerer",
        "Minimum balance to submit (USD",
        "Daily budget per UTC day (USD",
    ):
        expect(dialog.get_by_text(label, exact=False)).to_be_visible()
    dialog.get_by_role("button", name="Standard Fields", exact=True).click()
    key = dialog.get_by_label("API key")
    expect(key).to_have_attribute("type", "password")
    expect(key).to_have_attribute("placeholder", "WaveSpeed API key (WAVESPEED_API_KEY)")
    expect(dialog.get_by_label("Base URL")).to_have_attribute(
        "placeholder", "https://api.wavespeed.ai (leave empty for the real API)"
    )
    for unused in ("login", "schema", "port"):
        expect(dialog.locator(f"input[name={unused}]")).to_have_count(0)
    dialog.get_by_label("Connection ID").fill("magi_default")
    dialog.screenshot(path=screenshots / "connection-form.png")


def save_connection(page: Any, conn_id: str, base_url: str, key: str) -> None:
    from playwright.sync_api import expect

    dialog = open_add_form(page)
    dialog.get_by_label("Connection ID").fill(conn_id)
    dialog.get_by_label("Base URL").fill(base_url)
    dialog.get_by_label("API key").fill(key)
    dialog.get_by_role("button", name="Save").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(row(page, conn_id)).to_be_visible()


def work_around_port_zero_if_needed(page: Any, stack: AirflowStack, conn_id: str) -> bool:
    """Airflow 3.3.2's Test button sends ``port: 0`` for a connection without a port, and its API
    then refuses to reuse the stored key (apache/airflow#73298, fixed upstream). Ask the API the
    way the button does; only if it still refuses, drop that ``port: 0`` from the button's request,
    which is what the upstream fix does on the server. Returns whether the shim was needed."""
    import requests

    probe = requests.post(
        f"{stack.api}/api/v2/connections/test",
        json={
            "connection_id": conn_id,
            "conn_type": "magi",
            "host": stack.wavespeed,
            "password": "***",
            "port": 0,
        },
        timeout=30,
    )
    if not (probe.status_code == 400 and "differs from the stored connection" in probe.text):
        return False

    def drop_port_zero(route: Any, request: Any) -> None:
        body = json.loads(request.post_data or "{}")
        if body.get("port") == 0:
            del body["port"]
        route.continue_(post_data=json.dumps(body))

    page.route("**/api/v2/connections/test", drop_port_zero)
    return True


def test_saved_connection_tests_green_and_a_wrong_key_red(page: Any, ui_stack: AirflowStack) -> None:
    from playwright.sync_api import expect

    submits_before = sum(r["route"] == "submit" for r in ui_stack.server_requests())
    seen = record_api_answers(page)
    save_connection(page, "magi_ui", ui_stack.wavespeed, CANARY)
    save_connection(page, "magi_ui_wrong_key", ui_stack.wavespeed, WRONG_KEY)
    work_around_port_zero_if_needed(page, ui_stack, "magi_ui")

    row(page, "magi_ui_wrong_key").get_by_role("button", name="Test Connection").click()
    failure = page.get_by_text(
        f"WaveSpeed at {ui_stack.wavespeed} refused the API key: 401 Unauthorized: invalid or missing "
        "API key. Fix: check the API key."
    )
    expect(failure.first).to_be_visible()
    expect(page.get_by_text("Test Connection Failed").first).to_be_visible()

    row(page, "magi_ui").get_by_role("button", name="Test Connection").click()
    expect(page.get_by_text("Test Connection Successful").first).to_be_visible()
    balance = requests.get(f"{ui_stack.wavespeed}/_testing/account", timeout=30).json()["balance"]
    shown = f"Connection OK, balance ${balance:,.2f}: WaveSpeed at {ui_stack.wavespeed} accepted the API key."
    expect(page.get_by_text(shown).first).to_be_visible()

    # The wrong key, then the right one, read the (free) balance; nothing billed, nothing probed.
    tested = [r["status"] for r in ui_stack.server_requests() if r["route"] == "balance"]
    assert tested[-2:] == [401, 200]
    assert not [r for r in ui_stack.server_requests() if r["prediction_id"] == "airflow-connection-test"]
    assert sum(r["route"] == "submit" for r in ui_stack.server_requests()) == submits_before
    assert CANARY not in page.content()
    assert seen and not any(CANARY in body for body in seen)


def row(page: Any, conn_id: str) -> Any:
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name=conn_id, exact=True))
