"""A long video's ``scenes`` as the DAG author writes them: prompts, or dicts with ``prompt`` and
optional ``seed`` and ``extra_inputs``, read and refused (naming the scene) before any is paid."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_magi.exceptions import MagiInputError

_SCENE_KEYS = ("prompt", "seed", "extra_inputs")


@dataclass(frozen=True)
class Scene:
    prompt: Any
    seed: Any = None
    extra_inputs: Any = None


def parse_scenes(scenes: Any) -> list[Scene]:
    """The rendered ``scenes``: a non-empty list of prompts, or of dicts with ``prompt`` and
    optional ``seed`` and ``extra_inputs`` (a JSON text of that list is accepted, for templates
    rendered as text)."""
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
            + "'seed' and 'extra_inputs'"
            + (f", e.g. scenes=[{given!r}]" if one_prompt else "")
        )
    parsed = []
    for number, scene in enumerate(scenes, 1):
        if isinstance(scene, str):
            parsed.append(Scene(prompt=scene))
        elif isinstance(scene, Mapping) and "prompt" in scene and set(scene) <= set(_SCENE_KEYS):
            parsed.append(Scene(scene["prompt"], scene.get("seed"), scene.get("extra_inputs")))
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
