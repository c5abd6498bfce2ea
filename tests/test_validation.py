"""Input rules: each error names the field, the value and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_magi.compat import AirflowFailException
from airflow_provider_magi.exceptions import MagiInputError
from airflow_provider_magi.validation import check_prediction_id, magi_inputs


def test_valid_inputs_build_the_request_body() -> None:
    assert magi_inputs(
        prompt="fox", image=" https://x.example/f.png ", seed="42", extra_inputs={"r": "720p"}
    ) == {
        "prompt": "fox",
        "image": "https://x.example/f.png",
        "seed": 42,
        "r": "720p",
    }
    assert magi_inputs(prompt="fox", image="", seed="") == {"prompt": "fox"}
    assert magi_inputs(prompt="fox", seed=-1)["seed"] == -1
    assert magi_inputs(prompt="fox", seed=2147483647)["seed"] == 2147483647


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"prompt": ""}, "Invalid prompt: is empty (got ''). Fix: describe the video"),
        ({"prompt": " \n "}, "Invalid prompt: is empty"),
        ({"prompt": 42}, "Invalid prompt: must be a string, not int"),
        ({"prompt": None}, "Invalid prompt: must be a string, not NoneType"),
        ({"prompt": "x", "seed": True}, "Invalid seed: must be an integer, not a boolean"),
        ({"prompt": "x", "seed": 1.5}, "Invalid seed: must be an integer, not float"),
        ({"prompt": "x", "seed": "4x"}, "Invalid seed: is not an integer (got '4x')"),
        (
            {"prompt": "x", "seed": -2},
            "Invalid seed: is out of range (got -2). Fix: use a whole number from -1 to",
        ),
        ({"prompt": "x", "seed": 2**31}, "Invalid seed: is out of range"),
        ({"prompt": "x", "image": "ftp://x/y.png"}, "Invalid image: is not an http(s) URL"),
        ({"prompt": "x", "image": "http:/frame.png"}, "Invalid image: is not an http(s) URL"),
        ({"prompt": "x", "image": ["https://x"]}, "Invalid image: must be a URL or a path, not list"),
        ({"prompt": "x", "extra_inputs": "720p"}, "Invalid extra_inputs: must be a dict, not str"),
        ({"prompt": "x", "extra_inputs": {"prompt": "y"}}, "repeats the named parameter(s) prompt"),
        ({"prompt": "x", "extra_inputs": {"when": object()}}, "is not strict JSON"),
    ],
)
def test_each_error_names_field_value_and_fix(kwargs: dict, expected: str) -> None:
    with pytest.raises(MagiInputError) as caught:
        magi_inputs(**kwargs)
    assert expected in str(caught.value)
    assert "Fix:" in str(caught.value)
    assert isinstance(caught.value, AirflowFailException)  # Airflow does not retry it


def test_long_values_are_shortened() -> None:
    with pytest.raises(MagiInputError) as caught:
        magi_inputs(prompt="x", seed="9" * 500)
    assert len(str(caught.value)) < 300


def test_prediction_id_from_id_or_result_dict() -> None:
    assert check_prediction_id(" abc ") == "abc"
    assert check_prediction_id({"prediction_id": "abc", "status": "completed"}) == "abc"
    for bad in ("", "None", None, 3, {"status": "x"}):
        with pytest.raises(MagiInputError, match="prediction_id"):
            check_prediction_id(bad)


@pytest.mark.parametrize("image", ["frames/first.png", Path("first.png")])
def test_a_relative_first_frame_is_refused_naming_the_working_directory(image: object) -> None:
    with pytest.raises(MagiInputError, match=r"relative path.*working directory.*Fix: pass an absolute path"):
        magi_inputs(prompt="fox", image=image)
