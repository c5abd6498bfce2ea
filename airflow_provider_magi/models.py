"""The model catalogue: per model, its endpoint, input schema, price rule and what its outputs
carry. Validation, the spend view, the connection test, the docs' model table and the local
server all read it, so a model's facts live in one place.

A model the catalogue does not know keeps the provider's older behaviour: its inputs pass
through (the prompt, first frame and seed checked as MAGI-1's), and its price is learned from
WaveSpeed's billing, with a log line saying so.

No imports beyond the standard library: DAG files import this module when they are parsed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TEXT = "text"
IMAGE = "image"  # an http(s) URL, or a local path / object-storage URL uploaded first
INTEGER = "integer"
CHOICE = "choice"


@dataclass(frozen=True)
class InputRule:
    """One named input of a model: its kind, whether it is required, its range or choices, its
    default (what the model does when it is not sent) and the input it needs beside it."""

    name: str
    kind: str
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    default: Any = None
    needs: str | None = None
    unit: str = ""

    def describe(self) -> str:
        """The rule in words, for errors and the docs' table."""
        if self.kind == INTEGER and self.minimum is not None and self.maximum is not None:
            unit = f" {self.unit}" if self.unit else ""
            said = f"a whole number from {self.minimum} to {self.maximum}{unit}"
        elif self.kind == CHOICE:
            said = "one of " + ", ".join(repr(choice) for choice in self.choices)
        elif self.kind == IMAGE:
            said = "an http(s) URL, or a local path or object-storage URL (uploaded first)"
        else:
            said = "text"
        if self.default is not None:
            said += f" (default {self.default!r})"
        return said


@dataclass(frozen=True)
class ModelSpec:
    """What the provider knows of one model."""

    id: str
    title: str
    inputs: tuple[InputRule, ...]
    # USD per second of video; None: a flat price per prediction that only billing tells.
    usd_per_second: float | None = None
    sound: bool = False
    fps: int | None = None
    # The model a long video's later scenes use: they start from the previous scene's last frame.
    continues_with: str | None = None

    @property
    def path(self) -> str:
        return f"/api/v3/{self.id}"

    def rule(self, name: str) -> InputRule | None:
        return next((rule for rule in self.inputs if rule.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(rule.name for rule in self.inputs)

    def seconds_of(self, inputs: Mapping[str, Any]) -> int | None:
        """The video length the inputs ask for (its default when not sent); None: not an input."""
        rule = self.rule("duration")
        if rule is None:
            return None
        value = inputs.get("duration", rule.default)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())  # a rendered template, or a direct hook call's inputs
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            # Unreadable here (the model refuses it): priced at the longest, never the shortest.
            return rule.maximum if rule.maximum is not None else rule.default
        return value

    def price_of(self, inputs: Mapping[str, Any]) -> float | None:
        """The price of one prediction with these inputs, known before any bill; None: learned
        from billing (a flat price WaveSpeed states nowhere else)."""
        seconds = self.seconds_of(inputs)
        if self.usd_per_second is None or seconds is None:
            return None
        return round(self.usd_per_second * seconds, 6)

    @property
    def highest_price(self) -> float | None:
        """The most one prediction can cost (the longest video): what a started prediction of
        this model counts for in the spend view when its own length is not known."""
        rule = self.rule("duration")
        if self.usd_per_second is None or rule is None or rule.maximum is None:
            return None
        return round(self.usd_per_second * rule.maximum, 6)


_SEED = InputRule("seed", INTEGER, minimum=-1, maximum=2147483647)
_MAGI_2_DURATION = InputRule("duration", INTEGER, minimum=4, maximum=30, default=5, unit="seconds")
_MAGI_2_ASPECT = InputRule("aspect_ratio", CHOICE, choices=("16:9", "9:16", "1:1", "4:3", "3:4", "21:9"))

MAGI_1_24B = ModelSpec(
    "wavespeed-ai/magi-1-24b",
    "MAGI-1 24B",
    (InputRule("prompt", TEXT, required=True), InputRule("image", IMAGE), _SEED),
    continues_with="wavespeed-ai/magi-1-24b",
)
MAGI_2_TEXT_TO_VIDEO = ModelSpec(
    "sand-ai/magi-2/text-to-video",
    "MAGI-2 text-to-video",
    (InputRule("prompt", TEXT, required=True), _MAGI_2_DURATION, _MAGI_2_ASPECT, _SEED),
    usd_per_second=0.08,
    sound=True,
    fps=25,
    continues_with="sand-ai/magi-2/image-to-video",
)
MAGI_2_IMAGE_TO_VIDEO = ModelSpec(
    "sand-ai/magi-2/image-to-video",
    "MAGI-2 image-to-video",
    (
        InputRule("image", IMAGE, required=True),
        InputRule("prompt", TEXT),
        InputRule("last_image", IMAGE, needs="image"),
        _MAGI_2_DURATION,
        _MAGI_2_ASPECT,
    ),
    usd_per_second=0.08,
    sound=True,
    fps=25,
    continues_with="sand-ai/magi-2/image-to-video",
)
CATALOGUE: dict[str, ModelSpec] = {
    spec.id: spec for spec in (MAGI_1_24B, MAGI_2_TEXT_TO_VIDEO, MAGI_2_IMAGE_TO_VIDEO)
}
# Inputs the operators take by name, for any model that has them (the rest pass in extra_inputs).
NAMED_INPUTS = ("prompt", "image", "seed", "duration", "aspect_ratio", "last_image")


def spec_of(model: Any) -> ModelSpec | None:
    """The catalogue's entry for a model id (``owner/name`` or ``owner/name/variant``), or None."""
    return CATALOGUE.get(model.strip().strip("/")) if isinstance(model, str) else None


def near_miss(model: Any) -> str | None:
    """The catalogue id ``model`` spells in another case (its rules would otherwise be skipped)."""
    if not isinstance(model, str) or spec_of(model) is not None:
        return None
    wanted = model.strip().strip("/").lower()
    return next((known for known in CATALOGUE if known.lower() == wanted), None)
