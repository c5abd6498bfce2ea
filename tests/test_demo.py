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


def test_the_demo_prints_a_few_lines_and_its_result_and_names_the_file_with_airflow_s_log(
    tmp_path: Path,
) -> None:
    """Airflow's own log of a dag.test() run is ~75 lines (whole RuntimeTaskInstance reprs among
    them) before the one line that matters: it goes to a file the output names."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "demo.py", tmp_path / "scripts" / "demo.py")  # its own home
    (tmp_path / "example_dags").symlink_to(ROOT / "example_dags")
    env = {key: value for key, value in os.environ.items() if key != "AIRFLOW_HOME"}
    for key in ("WAVESPEED_API_KEY", "AIRFLOW_CONN_MAGI_DEFAULT"):
        env.pop(key, None)  # the bundled local server: nothing is billed
    done = subprocess.run(
        [sys.executable, str(tmp_path / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) <= 5, done.stdout
    assert lines[-1].startswith(f"Video written: {tmp_path / 'demo-output'}"), lines
    assert "nothing is billed" in done.stdout and "exported in this shell" not in done.stdout
    assert "RuntimeTaskInstance" not in done.stdout + done.stderr
    assert "[info" not in done.stdout + done.stderr  # no Airflow log record reached the terminal
    log = tmp_path / ".airflow-demo" / "demo.log"
    assert f"Airflow's log of the run goes to {log}" in done.stdout
    text = log.read_text()
    assert "Filling up the DagBag" in text  # Airflow's own records are there instead
    assert "Video written" not in text  # and the result is not buried in it
