"""OpenLineage events and StatsD metrics from real DAG runs, as a platform team would see them.

A child process runs ``dag.test()`` for three DAGs against the local server, with Airflow's own
OpenLineage listener writing events to a file (the provider's ``file`` transport) and Airflow's
own StatsD backend sending to a UDP socket on loopback that this test reads. Nothing here fakes
either side: the events and datagrams are the ones a deployment would ship.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.conftest import DAGS_FOLDER
from tests.helpers import (
    CANARY_KEY,
    StatsdListener,
    connection_json,
    observed_env,
    run_child,
    run_dags_in_child,
)

pytest.importorskip("airflow.providers.openlineage", reason="the [openlineage] extra is not installed")
pytest.importorskip("statsd", reason="statsd (a test dependency) is not installed")

DAGS = ("example_magi_text_to_video", "example_magi_image_to_video", "magi_test_failed")


@pytest.fixture(scope="module")
def observed(dag_bag: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("observed")
    events_file = work / "openlineage.jsonl"
    videos = work / "videos"
    listener = StatsdListener()
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.5) as server:
        env = {
            **observed_env(listener.port, events_file),
            "AIRFLOW_CONN_MAGI_DEFAULT": connection_json(server),
            "MAGI_OUTPUT_DIR": str(videos),
        }
        runs = run_dags_in_child(DAGS_FOLDER, DAGS, env)
        predictions = {p.inputs["prompt"]: p.id for p in server.app.predictions.values()}
        base_url = server.base_url
    lines = listener.stop()
    text = events_file.read_text() if events_file.exists() else ""
    return {
        "states": {dag_id: run["state"] for dag_id, run in runs.items()},
        "events_text": text,
        "events": [json.loads(line) for line in text.splitlines() if line.strip()],
        "statsd": [line for line in lines if ".magi." in line],
        "statsd_all": lines,
        "predictions": predictions,
        "base_url": base_url,
        "videos": videos,
    }


def event(observed: dict[str, Any], job: str, kind: str) -> dict[str, Any]:
    found = [e for e in observed["events"] if e["job"]["name"] == job and e["eventType"] == kind]
    assert found, (
        f"no {kind} event for {job}: {[(e['job']['name'], e['eventType']) for e in observed['events']]}"
    )
    return found[-1]


def datasets(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(item["namespace"], item["name"]) for item in items]


def test_the_dag_runs_end_as_they_should(observed: dict[str, Any]) -> None:
    assert observed["states"] == {
        "example_magi_text_to_video": "success",
        "example_magi_image_to_video": "success",
        "magi_test_failed": "failed",
    }


def test_generate_names_its_prediction_model_prompt_and_first_frame(observed: dict[str, Any]) -> None:
    complete = event(observed, "example_magi_text_to_video.generate", "COMPLETE")
    facets = complete["run"]["facets"]
    prediction = facets["magi_prediction"]
    prediction_id = observed["predictions"][prediction["prompt"]]
    assert facets["externalQuery"]["externalQueryId"] == prediction_id
    assert facets["externalQuery"]["source"] == "wavespeed"
    assert prediction["model"] == "wavespeed-ai/magi-1-24b"
    assert prediction["status"] == "completed"
    assert isinstance(prediction["inference_ms"], int) and prediction["inference_ms"] > 0
    assert complete["inputs"] == []  # text to video: nothing comes in

    image = event(observed, "example_magi_image_to_video.generate", "COMPLETE")
    assert datasets(image["inputs"]) == [("https://example.com", "/first-frame.png")]
    assert image["run"]["facets"]["magi_prediction"]["seed"] == -1


def test_download_reads_the_output_urls_and_writes_the_final_files(observed: dict[str, Any]) -> None:
    complete = event(observed, "example_magi_text_to_video.download", "COMPLETE")
    prediction_id = complete["run"]["facets"]["externalQuery"]["externalQueryId"]
    assert datasets(complete["inputs"]) == [(observed["base_url"], f"/outputs/{prediction_id}/0.mp4")]
    (video,) = [p for p in Path(observed["videos"]).rglob("*.mp4") if "image_to_video" not in str(p)]
    assert datasets(complete["outputs"]) == [("file", str(video).lstrip("/"))]
    assert ".part" not in observed["events_text"]


def test_a_failed_prediction_carries_the_error_and_the_prediction_id(observed: dict[str, Any]) -> None:
    failed = event(observed, "magi_test_failed.generate", "FAIL")
    facets = failed["run"]["facets"]
    assert "GPU out of memory" in facets["errorMessage"]["message"]
    assert facets["externalQuery"]["externalQueryId"] in facets["errorMessage"]["message"]


def test_statsd_counts_submits_polls_outcomes_and_bytes(observed: dict[str, Any]) -> None:
    counters: Counter[str] = Counter()
    timers: Counter[str] = Counter()
    tags: dict[str, set[str]] = {}
    for line in observed["statsd"]:
        tagged_name, _, rest = line.partition(":")
        name, *pairs = tagged_name.split(",")
        tags.setdefault(name, set()).update(pairs)
        value, _, kind = rest.partition("|")
        if kind.startswith("c"):
            counters[name] += int(value)
        elif kind.startswith("ms"):
            timers[name] += 1
    assert counters["airflow.magi.submits"] == 3
    assert counters["airflow.magi.predictions.completed"] == 2
    assert counters["airflow.magi.predictions.failed"] == 1
    assert counters["airflow.magi.polls"] >= 3  # at least one per prediction
    assert counters["airflow.magi.download.bytes"] == 2 * 25630  # two sample videos, whole
    assert timers["airflow.magi.download.time"] == 2
    assert timers["airflow.magi.submit_to_terminal"] == 3
    assert counters["airflow.magi.submits.uncertain"] == 0
    assert tags["airflow.magi.submits"] == {"model=wavespeed-ai/magi-1-24b", "conn_id=magi_default"}
    assert "conn_id=magi_default" in tags["airflow.magi.polls"]
    assert "model=wavespeed-ai/magi-1-24b" in tags["airflow.magi.predictions.completed"]


def test_the_key_is_in_no_event_and_no_metric(observed: dict[str, Any]) -> None:
    assert observed["events"] and observed["statsd_all"]
    assert CANARY_KEY not in observed["events_text"]
    assert not [line for line in observed["statsd_all"] if CANARY_KEY in line]


HOOK_LINEAGE = """
import json, os, fsspec
from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector
from airflow.sdk import ObjectStoragePath
from airflow.sdk.io import attach
from airflow_provider_magi.hooks.magi import MagiHook

attach(protocol="memory", fs=fsspec.filesystem("memory"))
hook = MagiHook()
prediction = hook.create_prediction({"prompt": "x [[duration: 0]]"})
url = hook.get_prediction(prediction.id).outputs[0]
target = ObjectStoragePath(f"memory://lineage-test/{prediction.id}/0.mp4")
hook.download_output(url, target, allow_insecure_loopback=True)
collector = get_hook_lineage_collector()
with open(os.environ["MAGI_TEST_CHILD_RESULT"], "w") as result:
    json.dump({
        "collector": type(collector).__name__,
        "outputs": [info.asset.uri for info in collector.collected_assets.outputs],
        "target": str(target),
    }, result)
"""


def test_the_hook_lineage_collector_sees_the_final_file_never_the_part(
    magi_conn: LocalWaveSpeedServer, tmp_path: Path
) -> None:
    # A child process with OpenLineage configured, so Airflow's collector is the real one.
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(tmp_path / "ol.jsonl"), "append": True}
        ),
    }
    seen = run_child(HOOK_LINEAGE, env=env, timeout=300)
    assert seen["collector"] == "HookLineageCollector"  # not the no-op one: lineage is on
    # The same file; Airflow versions spell memory URIs differently (memory:/x, memory:///x).
    final = seen["target"].split("lineage-test/", 1)[1]
    assert [uri for uri in seen["outputs"] if uri.endswith(f"lineage-test/{final}")], seen["outputs"]
    assert [uri for uri in seen["outputs"] if ".part" in uri] == []


@pytest.mark.parametrize(
    ("url", "namespace", "name"),
    [
        ("https://h/v.mp4", "https://h", "/v.mp4"),
        ("https://h:443/v.mp4", "https://h", "/v.mp4"),
        ("HTTPS://h:443/v.mp4?X-Amz-Signature=s", "https://h", "/v.mp4"),
        ("https://h/out;jsessionid=SECRET/v.mp4;jsessionid=SECRET", "https://h", "/out/v.mp4"),
        ("https://h:8443/v.mp4", "https://h:8443", "/v.mp4"),
        ("http://127.0.0.1:80/v.mp4", "http://127.0.0.1", "/v.mp4"),
    ],
)
def test_one_file_is_one_dataset_however_it_is_linked(url: str, namespace: str, name: str) -> None:
    from airflow_provider_magi.lineage import url_dataset

    dataset = url_dataset(url)
    assert (dataset.namespace, dataset.name) == (namespace, name)
