"""MAGI-2 (#33) on every operator shape: each input checked against the catalogue before any paid
request, prices known before the first bill, durations and prices in the batch's manifest."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_magi import spend
from airflow_provider_magi.model_inputs import model_inputs, price_of
from airflow_provider_magi.testing import LocalWaveSpeedServer
from tests.helpers import CANARY_KEY, connection_json, run_dag, task_instance

TEXT_TO_VIDEO = "sand-ai/magi-2/text-to-video"
IMAGE_TO_VIDEO = "sand-ai/magi-2/image-to-video"
PAID_ROUTES = ("submit", "upload", "upload_ticket", "upload_put")
FRAME = "https://example.com/first-frame.png"


@pytest.fixture
def books(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalWaveSpeedServer]:
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.3, balance=10.0) as running:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(running))
        yield running


def sent(server: LocalWaveSpeedServer) -> int:
    """Requests that pay or lead to paying (submits, uploads) the server saw."""
    return sum(server.count(route) for route in PAID_ROUTES)


def paid(server: LocalWaveSpeedServer) -> int:
    """Predictions the server made (each is billed)."""
    return len(server.app.predictions)


# ---------------------------------------------------------------- the catalogue's rules


@pytest.mark.parametrize(
    ("model", "given", "field"),
    [
        (TEXT_TO_VIDEO, {"duration": 3}, "duration"),
        (TEXT_TO_VIDEO, {"duration": 31}, "duration"),
        (TEXT_TO_VIDEO, {"duration": "ten"}, "duration"),
        (TEXT_TO_VIDEO, {"duration": True}, "duration"),
        (TEXT_TO_VIDEO, {"duration": 4.5}, "duration"),
        (TEXT_TO_VIDEO, {"aspect_ratio": "2:1"}, "aspect_ratio"),
        (TEXT_TO_VIDEO, {"image": FRAME}, "image"),
        (IMAGE_TO_VIDEO, {"prompt": "a", "image": ""}, "image"),
        (IMAGE_TO_VIDEO, {"last_image": FRAME}, "image"),
        (IMAGE_TO_VIDEO, {"image": FRAME, "last_image": "relative/last.png"}, "last_image"),
        ("wavespeed-ai/magi-1-24b", {"duration": 10}, "duration"),
    ],
)
def test_each_input_is_checked_against_its_model_naming_the_field_and_the_fix(
    model: str, given: dict[str, Any], field: str
) -> None:
    from airflow_provider_magi.exceptions import MagiInputError

    inputs = {"prompt": "a lighthouse", **given}
    with pytest.raises(MagiInputError, match=rf"^Invalid {field}: .*Fix: "):
        model_inputs(model, **inputs)


def test_inputs_that_fit_pass_with_the_text_of_a_whole_number_and_none_left_unsent() -> None:
    body = model_inputs(TEXT_TO_VIDEO, prompt="a", duration="10", aspect_ratio="16:9", seed=None)
    assert body == {"prompt": "a", "duration": 10, "aspect_ratio": "16:9"}
    assert model_inputs(IMAGE_TO_VIDEO, image=FRAME)["image"] == FRAME  # no prompt needed
    assert price_of(TEXT_TO_VIDEO, body) == 0.8
    assert price_of(TEXT_TO_VIDEO, {"prompt": "a"}) == 0.4  # the default 5 s
    assert price_of(IMAGE_TO_VIDEO, {"duration": 30}) == 2.4
    assert price_of("wavespeed-ai/magi-1-24b", {"prompt": "a"}) is None  # learned from billing


def test_an_unknown_model_keeps_the_older_behaviour_and_says_so() -> None:
    said: list[str] = []

    class Log:
        def info(self, message: str, *args: Any) -> None:
            said.append(message % args)

    body = model_inputs("someone/new-model", prompt="a", duration=99, log=Log())
    assert body == {"prompt": "a", "duration": 99}
    assert "not in the provider's catalogue" in said[0]


def test_the_spend_view_counts_each_known_price_in_order() -> None:
    from datetime import date

    facts = spend.SpendFacts(
        conn_id="c",
        model=TEXT_TO_VIDEO,
        day=date(2026, 1, 1),
        price=None,
        budget=1.0,
        prices=(0.32, 0.4, 0.4),
    )
    assert spend.room(facts, 3, whole=False).fits == 2  # 0.72 fits, 1.12 does not
    assert spend.room(facts, 3, whole=True).fits == 0
    assert spend.room(facts, 2, whole=True).fits == 2


# ---------------------------------------------------------------- before any paid request, every shape

BAD = {
    "duration 31": {"duration": 31},
    "duration 3": {"duration": 3},
    "aspect_ratio 2:1": {"aspect_ratio": "2:1"},
    "image on text-to-video": {"image": FRAME},
}


def video(**given: Any) -> dict[str, Any]:
    """Every param of the video DAG: dag.test() keeps an earlier run's conf in the parsed DAG's
    params, so each run names them all."""
    return {
        "model": TEXT_TO_VIDEO,
        "prompt": "a lighthouse at dusk [[duration: 0.3]]",
        "image": "",
        "duration": 4,
        "aspect_ratio": "",
        "last_image": "",
        **given,
    }


def _conf(shape: str, bad: dict[str, Any]) -> dict[str, Any]:
    if shape == "video":
        return video(**bad)
    if shape == "long_video":  # the bad scene is the last: no scene may be paid before it is found
        scenes = [{"prompt": "s1", "duration": 4}, {"prompt": "s2", "duration": 4, **bad}]
        return {"model": TEXT_TO_VIDEO, "scenes": scenes}
    return {
        "model": TEXT_TO_VIDEO,
        "inputs": [{"prompt": "i0", "duration": 4}, {"prompt": "i1", "duration": 4, **bad}],
    }


@pytest.mark.money
@pytest.mark.parametrize("bad", sorted(BAD))
@pytest.mark.parametrize("shape", ["video", "long_video", "batch"])
def test_an_out_of_range_magi2_input_is_refused_before_any_paid_request(
    dag_bag: Any, books: LocalWaveSpeedServer, shape: str, bad: str
) -> None:
    if shape == "long_video" and "image" in bad:
        pytest.skip("a long video's scenes take no image of their own (scene 1's is the operator's)")
    dag_run = run_dag(dag_bag, f"magi2_test_{shape}", **_conf(shape, BAD[bad]))
    assert dag_run.state == "failed"
    assert task_instance(dag_run, shape).try_number == 1
    assert sent(books) == 0 and paid(books) == 0


# ---------------------------------------------------------------- paid, priced per second


def _budget(server: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, usd: float) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server, daily_budget_usd=usd))


@pytest.mark.money
def test_a_10_s_video_reports_cost_usd_0_80(dag_bag: Any, books: LocalWaveSpeedServer) -> None:
    from tests.helpers import xcom

    dag_run = run_dag(dag_bag, "magi2_test_video", **video(duration=10))
    assert dag_run.state == "success"
    assert xcom(dag_run, "video")["cost_usd"] == 0.8
    assert books.count("submit", model=TEXT_TO_VIDEO) == 1


@pytest.mark.money
def test_a_daily_budget_counts_a_4_s_video_as_0_32_before_any_bill_exists(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No MAGI-2 bill exists (so usage stats know no price): $0.35 holds a 4 s video ($0.32),
    not a 5 s one ($0.40). Before: the price was unknown, and either passed."""
    _budget(books, monkeypatch, 0.35)
    refused = run_dag(dag_bag, "magi2_test_video", **video(duration=5))
    assert refused.state == "failed" and sent(books) == 0
    allowed = run_dag(dag_bag, "magi2_test_video", **video(duration=4))
    assert allowed.state == "success" and paid(books) == 1


@pytest.mark.money
def test_a_batch_pays_the_items_whose_seconds_fit_and_its_manifest_carries_each_duration_and_price(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import json
    from pathlib import Path

    from tests.helpers import xcom

    _budget(books, monkeypatch, 0.75)  # 4 s + 5 s = $0.72 fit; the 6 s item ($0.48) does not
    inputs = [{"prompt": f"item {k} [[duration: 0.3]]", "duration": 4 + k} for k in range(3)]
    dag_run = run_dag(dag_bag, "magi2_test_batch", model=TEXT_TO_VIDEO, inputs=inputs)
    assert dag_run.state == "failed"  # the budget stopped it (fail_on_partial_error=True)
    assert paid(books) == 2
    path = Path(xcom(dag_run, "batch", key="batch_progress")["manifest_path"])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["duration"], line["price_usd"]) for line in lines] == [(4, 0.32), (5, 0.4), (6, 0.48)]
    assert [line["status"] for line in lines] == ["completed", "completed", "not_submitted"]
    assert [line["cost_usd"] for line in lines[:2]] == [0.32, 0.4]  # billed as priced


@pytest.mark.money
def test_a_long_video_of_three_magi2_scenes_has_one_continuous_sound_track(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    """Scene 1 from text, scenes 2 and 3 by image-to-video from the last frame before them; the
    joined file's sound lasts as long as its video (no gap, nothing doubled) and is never silent
    across a seam."""
    from tests.helpers import xcom

    scenes = [{"prompt": f"scene {k} [[duration: 0.3]]", "duration": 4} for k in (1, 2, 3)]
    dag_run = run_dag(dag_bag, "magi2_test_long_video", model=TEXT_TO_VIDEO, scenes=scenes)
    assert dag_run.state == "success"
    assert books.count("submit", model=TEXT_TO_VIDEO) == 1
    assert books.count("submit", model=IMAGE_TO_VIDEO) == 2
    result = xcom(dag_run, "long_video")
    assert result["cost_usd"] == pytest.approx(0.96)
    samples, rate = _mono_samples(result["path"])
    seconds = len(samples) / rate
    assert abs(seconds - result["duration"]) < 0.05, (seconds, result["duration"])
    window = rate // 50  # 20 ms: a gap at a seam would be a silent window
    end = int((result["duration"] - 0.04) * rate)  # the encoder's last block may fade out
    quiet = [
        start / rate
        for start in range(0, end - window, window)
        if max(abs(v) for v in samples[start : start + window]) < 300  # of 32767
    ]
    assert quiet == [], f"silent at {quiet[:5]} s"


def _mono_samples(path: str) -> tuple[list[int], int]:
    """The file's sound as 16-bit mono samples (PyAV without numpy: through a resampler)."""
    import array

    import av

    with av.open(path) as joined:
        assert joined.streams.audio, "the join dropped the sound"
        rate = joined.streams.audio[0].rate
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        samples: list[int] = []
        for decoded in joined.decode(audio=0):
            for frame in resampler.resample(decoded):
                samples.extend(array.array("h", bytes(frame.planes[0]))[: frame.samples])
        for frame in resampler.resample(None):
            samples.extend(array.array("h", bytes(frame.planes[0]))[: frame.samples])
    return samples, rate
