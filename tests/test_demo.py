"""`make demo` spends real money only when asked to: an exported connection or key that points at
WaveSpeed is named before anything runs, and nothing is generated without --pay (PAY=1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

# Not WaveSpeed, and nothing leaves this machine: https on loopback is "not the local server" to
# the hook (that is plain http on loopback), so the demo treats it as a billed API, while a
# demo that went ahead anyway would only meet a refused connection here.
BILLED_LOOKALIKE = json.dumps(
    {"conn_type": "magi", "host": "https://127.0.0.1:9", "password": "sk-demo-test"}
)


def test_an_exported_connection_to_a_billed_api_is_named_and_nothing_runs_without_pay(
    tmp_path: Path,
) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "demo.py", tmp_path / "scripts" / "demo.py")  # its own home
    env = {key: value for key, value in os.environ.items() if key != "AIRFLOW_HOME"}
    env.pop("WAVESPEED_API_KEY", None)
    env["AIRFLOW_CONN_MAGI_DEFAULT"] = BILLED_LOOKALIKE
    done = subprocess.run(
        [sys.executable, str(tmp_path / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "This would generate on https://127.0.0.1:9" in done.stdout
    assert "$AIRFLOW_CONN_MAGI_DEFAULT, exported in this shell" in done.stdout
    assert "make demo PAY=1" in done.stderr
    assert not (tmp_path / "demo-output").exists()  # no DAG ran
