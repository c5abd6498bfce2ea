"""`make demo`: run the text-to-video example DAG end to end and print where the video landed.

Without $WAVESPEED_API_KEY the DAG talks to the bundled WaveSpeed-compatible local server; with
it, to the real API (and you pay for one generation).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "example_magi_text_to_video"


def main() -> int:
    home = ROOT / ".airflow-demo"
    output_dir = ROOT / "demo-output"
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "MAGI_OUTPUT_DIR": str(output_dir),
        }
    )
    home.mkdir(exist_ok=True)
    server = None
    if os.environ.get("WAVESPEED_API_KEY"):
        print("WAVESPEED_API_KEY is set: generating on the real WaveSpeed API (billed).")
    else:
        from airflow_provider_magi.testing import LocalWaveSpeedServer

        server = LocalWaveSpeedServer(completion_seconds=4.0).start()
        os.environ["AIRFLOW_CONN_MAGI_DEFAULT"] = json.dumps(server.connection_uri_json())
        os.environ.setdefault("MAGI_POLL_INTERVAL", "1")
        print(f"No WAVESPEED_API_KEY: using the bundled local server at {server.base_url}")

    print("Preparing the metadata database (SQLite) ...", flush=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)

    try:  # after AIRFLOW_HOME is set; the module moved in Airflow 3.1
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    bag = DagBag(dag_folder=str(ROOT / "example_dags" / f"{DAG_ID}.py"))
    if bag.import_errors:
        print(f"DAG import errors: {bag.import_errors}", file=sys.stderr)
        return 1
    dag_run = bag.get_dag(DAG_ID).test()
    if server is not None:
        server.stop()
    if str(dag_run.state) != "success":
        print(f"DAG run ended {dag_run.state}", file=sys.stderr)
        return 1
    videos = sorted(output_dir.rglob(f"*{_safe(dag_run.run_id)}*/*.mp4"))
    if not videos:
        print(f"The run succeeded but no video is under {output_dir}", file=sys.stderr)
        return 1
    for video in videos:
        print(f"\nVideo written: {video} ({video.stat().st_size} bytes)")
    return 0


def _safe(run_id: str) -> str:
    from airflow_provider_magi.operators.download import safe_segment

    return safe_segment(run_id)


if __name__ == "__main__":
    sys.exit(main())
