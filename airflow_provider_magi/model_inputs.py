"""A prediction's request body, checked against its model's entry in the catalogue (``models``)
after templating and before anything is paid: each named input's kind, range or choices, the
required ones, and those that need another beside them; every error names the field, the model's
rule and the fix.

A model the catalogue does not know keeps the older behaviour: the prompt, first frame and seed
are checked as MAGI-1's, every other input passes through as given, and its price is learned
from billing (the log says so once per task).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from airflow_provider_magi.exceptions import MagiInputError
from airflow_provider_magi.models import (
    CHOICE,
    IMAGE,
    INTEGER,
    MAGI_1_24B,
    NAMED_INPUTS,
    TEXT,
    InputRule,
    ModelSpec,
    near_miss,
    spec_of,
)
from airflow_provider_magi.validation import (
    check_extra_inputs,
    check_image,
    check_prompt,
    check_seed,
    magi_inputs,
    shorten,
)

_INTEGER_TEXT = re.compile(r"^[+-]?\d+$")


def model_inputs(
    model: str,
    *,
    prompt: Any = None,
    image: Any = None,
    seed: Any = None,
    extra_inputs: Any = None,
    duration: Any = None,
    aspect_ratio: Any = None,
    last_image: Any = None,
    log: Any = None,
) -> dict[str, Any]:
    """The body for ``model``: named inputs that are None (or "") are not sent (the model's
    default applies); ``extra_inputs`` pass through untouched for fields the docs add."""
    given = {
        "prompt": prompt,
        "image": image,
        "seed": seed,
        "duration": duration,
        "aspect_ratio": aspect_ratio,
        "last_image": last_image,
    }
    spec = spec_of(model)
    if (known := near_miss(model)) is not None:
        raise MagiInputError(
            f"Invalid model: {model!r} is {known!r} in another case, which WaveSpeed's paths do not "
            f"accept. Fix: model={known!r}"
        )
    if spec is None:
        if log is not None:
            log.info(
                "Model %s is not in the provider's catalogue: its inputs pass through unchecked beyond "
                "the prompt, first frame and seed, and its price is learned from billing.",
                model,
            )
        newer = {name: value for name, value in given.items() if name not in ("prompt", "image", "seed")}
        passed = magi_inputs(prompt=prompt, image=image, seed=seed, extra_inputs=extra_inputs)
        passed.update({name: value for name, value in newer.items() if value not in (None, "")})
        return passed
    if spec.id == MAGI_1_24B.id:  # its rules as they always were, and no MAGI-2 inputs
        for name in ("duration", "aspect_ratio", "last_image"):
            if given[name] not in (None, ""):
                raise _not_an_input(spec, name, given[name])
        return magi_inputs(prompt=prompt, image=image, seed=seed, extra_inputs=extra_inputs)
    body: dict[str, Any] = {}
    for name, value in given.items():
        rule = spec.rule(name)
        if value is None or value == "":
            if rule is not None and rule.required:
                raise _missing(spec, rule)
            continue
        if rule is None:
            raise _not_an_input(spec, name, value)
        body[name] = _checked(spec, rule, value)
    for rule in spec.inputs:
        if rule.needs and rule.name in body and rule.needs not in body:
            raise MagiInputError(
                f"Invalid {rule.name}: {spec.title} takes {rule.name} only with {rule.needs} (got "
                f"{rule.name} without {rule.needs}). Fix: pass {rule.needs} too, or leave {rule.name} out"
            )
    body.update(check_extra_inputs(extra_inputs, named=NAMED_INPUTS))
    return body


def _checked(spec: ModelSpec, rule: InputRule, value: Any) -> Any:
    if rule.kind == TEXT:
        return check_prompt(value) if rule.name == "prompt" else _text(spec, rule, value)
    if rule.kind == IMAGE:
        return check_image(value, rule.name)
    if rule.name == "seed":
        return check_seed(value)
    if rule.kind == INTEGER:
        return _integer(spec, rule, value)
    if rule.kind == CHOICE:
        if not isinstance(value, str) or value.strip() not in rule.choices:
            raise _invalid(spec, rule, "is not one of the model's choices", value)
        return value.strip()
    raise AssertionError(f"unknown input kind {rule.kind!r}")  # a catalogue entry's mistake


def _integer(spec: ModelSpec, rule: InputRule, value: Any) -> int:
    """An int, or the text of one (Jinja renders templates to strings); never a bool or a float."""
    if isinstance(value, bool):
        raise _invalid(spec, rule, "must be a whole number, not a boolean", value)
    if isinstance(value, str) and _INTEGER_TEXT.match(value.strip()):
        value = int(value.strip())
    if not isinstance(value, int):
        raise _invalid(spec, rule, "is not a whole number", value)
    if (rule.minimum is not None and value < rule.minimum) or (
        rule.maximum is not None and value > rule.maximum
    ):
        raise _invalid(spec, rule, "is out of range", value)
    return value


def _text(spec: ModelSpec, rule: InputRule, value: Any) -> str:
    if not isinstance(value, str):
        raise _invalid(spec, rule, f"must be text, not {type(value).__name__}", value)
    return value


def _invalid(spec: ModelSpec, rule: InputRule, problem: str, value: Any) -> MagiInputError:
    return MagiInputError(
        f"Invalid {rule.name}: {problem} (got {shorten(value)}). Fix: {spec.title} takes {rule.describe()}"
    )


def _missing(spec: ModelSpec, rule: InputRule) -> MagiInputError:
    other = ""
    if rule.name == "image" and spec.id.endswith("image-to-video"):  # the text-to-video sibling
        other = f", or use {spec.id.replace('image-to-video', 'text-to-video')} to start from text alone"
    return MagiInputError(
        f"Invalid {rule.name}: {spec.title} ({spec.id}) needs it, and none was given. Fix: pass "
        f"{rule.name} ({rule.describe()}){other}"
    )


def _not_an_input(spec: ModelSpec, name: str, value: Any) -> MagiInputError:
    hint = ""
    if name in ("image", "last_image") and spec.id.endswith("text-to-video"):
        hint = f", or use {spec.id.replace('text-to-video', 'image-to-video')} to start from an image"
    return MagiInputError(
        f"Invalid {name}: {spec.title} ({spec.id}) has no {name} input (got {shorten(value)}). Fix: "
        f"leave it out (it takes {', '.join(spec.names)}; pass another field through extra_inputs){hint}"
    )


def price_of(model: str, inputs: Mapping[str, Any]) -> float | None:
    """The catalogue's price of one prediction with these inputs (None: learned from billing)."""
    spec = spec_of(model)
    return spec.price_of(inputs) if spec is not None else None
