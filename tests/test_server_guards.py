"""Issue 26 item 13: the local server answers an upload over its cap with 413 (not a dropped
connection), refuses faults and balances that make no sense, and keeps its control plane for the
key's holder when bound beyond loopback."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
import requests

from airflow_provider_magi.testing import Fault, LocalWaveSpeedServer, http
from airflow_provider_magi.testing.__main__ import main
from tests.helpers import CANARY_KEY


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> int:
    """The request body cap lowered to 1 MiB, so an over-cap upload is cheap to send."""
    monkeypatch.setattr(http, "MAX_REQUEST_BODY", 2**20)
    return 2**20


def test_an_upload_over_the_cap_is_answered_413(server: LocalWaveSpeedServer, small_cap: int) -> None:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    ticket = requests.post(
        f"{server.base_url}/api/v3/media/uploads",
        json={"filename": "clip.mp4", "size": 2 * small_cap, "content_type": "video/mp4"},
        headers=headers,
        timeout=10,
    ).json()["data"]["upload"]
    answer = requests.put(ticket["url"], data=b"\0" * (2 * small_cap), headers=ticket["headers"], timeout=30)
    assert answer.status_code == 413  # the old server dropped the connection
    assert answer.json()["code"] == 413 and "too large" in answer.json()["message"]
    files = {"file": ("big.png", b"\x89PNG" + b"\0" * (2 * small_cap), "image/png")}
    legacy = requests.post(
        f"{server.base_url}/api/v3/media/upload/binary", files=files, headers=headers, timeout=30
    )
    assert legacy.status_code == 413
    assert requests.get(f"{server.base_url}/api/v3/balance", headers=headers, timeout=10).ok  # still serving


@pytest.mark.parametrize(
    "fault",
    [
        {"route": "submit", "kind": "status", "times": -1},
        {"route": "submit", "kind": "status", "probability": 1.5},
        {"route": "submit", "kind": "status", "probability": -0.1},
        {"route": "submit", "kind": "slow", "delay": float("nan")},
    ],
    ids=["times<0", "probability>1", "probability<0", "delay-nan"],
)
def test_faults_that_make_no_sense_are_refused(server: LocalWaveSpeedServer, fault: dict) -> None:
    with pytest.raises(ValueError, match=r"times|probability|delay"):
        Fault.from_dict(dict(fault))
    body = json.dumps(fault)  # NaN is written as NaN, as a hand-written fault file might
    answer = requests.put(f"{server.base_url}/_testing/faults", data=body, timeout=10)
    assert answer.status_code == 400  # the old server took them (times=-1: forever)
    assert requests.get(f"{server.base_url}/_testing/faults", timeout=10).json() == []


@pytest.mark.parametrize("amount", ["nan", "inf", "-inf"])
def test_a_non_finite_balance_is_refused(server: LocalWaveSpeedServer, amount: str) -> None:
    answer = requests.post(f"{server.base_url}/_testing/balance", params={"usd": amount}, timeout=10)
    assert answer.status_code == 400 and "finite" in answer.json()["error"]
    assert math.isfinite(server.balance)
    with pytest.raises(ValueError, match="finite"):
        LocalWaveSpeedServer(balance=float(amount))
    with pytest.raises(SystemExit):
        main([f"--balance={amount}"])


@pytest.fixture
def wildcard() -> Iterator[LocalWaveSpeedServer]:
    with LocalWaveSpeedServer(api_key=CANARY_KEY, host="0.0.0.0") as running:
        yield running


def test_off_loopback_the_control_plane_needs_the_key(
    wildcard: LocalWaveSpeedServer, server: LocalWaveSpeedServer
) -> None:
    url = f"{wildcard.base_url}/_testing/faults"
    assert requests.get(url, timeout=10).status_code == 401  # the old server: anyone on the network
    assert requests.post(f"{wildcard.base_url}/_testing/reset", timeout=10).status_code == 401
    keyed = requests.get(url, headers={"Authorization": f"Bearer {CANARY_KEY}"}, timeout=10)
    assert keyed.status_code == 200 and keyed.json() == []
    assert requests.get(f"{server.base_url}/_testing/faults", timeout=10).status_code == 200  # loopback: open
