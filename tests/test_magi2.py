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


def paid(server: LocalWaveSpeedServer) -> int:
    return sum(server.count(route) for route in PAID_ROUTES) + len(server.app.predictions)


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


def _conf(shape: str, bad: dict[str, Any]) -> dict[str, Any]:
    if shape == "video":
        return {"duration": 4, **bad}
    if shape == "long_video":  # the bad scene is the last: no scene may be paid before it is found
        return {"scenes": [{"prompt": "s1", "duration": 4}, {"prompt": "s2", "duration": 4, **bad}]}
    return {"inputs": [{"prompt": "i0", "duration": 4}, {"prompt": "i1", "duration": 4, **bad}]}


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
    assert paid(books) == 0
