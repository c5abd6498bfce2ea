"""A long video's ``scenes`` as the DAG author writes them: prompts, or dicts with ``prompt`` and
optional ``seed`` and ``extra_inputs``, read and refused (naming the scene) before any is paid."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_magi.exceptions import MagiInputError
from airflow_provider_magi.models import NAMED_INPUTS

_SCENE_KEYS = ("prompt", "seed", "extra_inputs", "duration", "aspect_ratio", "last_image")


@dataclass(frozen=True)
class Scene:
    prompt: Any
    seed: Any = None
    extra_inputs: Any = None
    duration: Any = None  # MAGI-2: seconds, priced per second
    aspect_ratio: Any = None
    last_image: Any = None

    def named_inputs(self) -> dict[str, Any]:
        """The scene's own inputs (its first frame comes from the chain)."""
        return {name: getattr(self, name) for name in NAMED_INPUTS if name != "image"}


def parse_scenes(scenes: Any) -> list[Scene]:
    """The rendered ``scenes``: a non-empty list of prompts, or of dicts with ``prompt`` and
    optional ``seed``, ``extra_inputs``, ``duration``, ``aspect_ratio`` and ``last_image`` (a JSON
    text of that list is accepted, for templates rendered as text)."""
    from airflow_provider_magi.validation import shorten

    given = scenes  # the error names what was passed, not what a failed JSON read left
    if isinstance(scenes, str):
        try:
            scenes = json.loads(scenes)
        except ValueError:
            scenes = None
    if not isinstance(scenes, Sequence) or isinstance(scenes, str) or not scenes:
        one_prompt = isinstance(given, str) and scenes is None
        raise MagiInputError(
            f"Invalid scenes: {shorten(given)}"
            + (" (one text that is not a JSON list)" if one_prompt else "")
            + ". Fix: pass a non-empty list of prompts, or of dicts with 'prompt' and optional "
            + "'seed', 'extra_inputs' (and for MAGI-2 'duration', 'aspect_ratio', 'last_image')"
            + (f", e.g. scenes=[{given!r}]" if one_prompt else "")
        )
    parsed = []
    for number, scene in enumerate(scenes, 1):
        if isinstance(scene, str):
            parsed.append(Scene(prompt=scene))
        elif isinstance(scene, Mapping) and "prompt" in scene and set(scene) <= set(_SCENE_KEYS):
            parsed.append(Scene(**{key: scene.get(key) for key in _SCENE_KEYS}))
        else:
            raise MagiInputError(
                f"Invalid scene {number}: {shorten(scene)}{_unknown_keys(scene)}. Fix: a prompt, or a "
                "dict with 'prompt' and optional 'seed' and 'extra_inputs'"
            )
    return parsed


def _unknown_keys(scene: Any) -> str:
    """Name a scene dict's keys that are not scene keys, each with its close match (a typo such
    as 'promt' is then found at a glance)."""
    if not isinstance(scene, Mapping):
        return ""
    import difflib  # only to word this error

    notes = []
    for key in (k for k in scene if k not in _SCENE_KEYS):
        close = difflib.get_close_matches(str(key), _SCENE_KEYS, n=1)
        notes.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    missing = "" if "prompt" in scene or notes else ": no 'prompt'"
    return f": unknown key{'s' if len(notes) > 1 else ''} {', '.join(notes)}" if notes else missing


# Where a later scene's first frame goes until the frame before it exists: a stand-in, replaced
# by the uploaded frame before anything is sent, and never part of a fingerprint.
FRAME_TO_COME = "https://frame-to-come.invalid/last-frame-of-the-scene-before.png"


def scene_model(model: str, number: int) -> str:
    """Scene 1 is made by ``model``; a later scene starts from the last frame before it, so by
    the catalogue's image-to-video model for it (MAGI-2 text-to-video's sibling)."""
    from airflow_provider_magi.models import spec_of

    spec = spec_of(model)
    return model if number == 1 or spec is None or not spec.continues_with else spec.continues_with


def scene_inputs(model: str, image: Any, number: int, scene: Scene) -> dict[str, Any]:
    """Scene ``number``'s request body, checked against its model (``image``: scene 1's first frame)."""
    from airflow_provider_magi.model_inputs import model_inputs

    first_frame = image if number == 1 else FRAME_TO_COME
    named = {**scene.named_inputs(), "image": first_frame}
    return model_inputs(scene_model(model, number), **named, extra_inputs=scene.extra_inputs)
