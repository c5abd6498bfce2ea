"""A batch's inputs: a list, the JSON text of one, or a JSON Lines file; every item checked first.

Every item is checked (the MAGI rules of ``validation``) before the batch pays for its first
video: a typo in item 900 must not surface after 899 videos were bought. Errors name the item's
index (and the file's line), the field, and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_magi.exceptions import MagiInputError
from airflow_provider_magi.validation import inputs_fingerprint, magi_inputs, shorten

ITEM_KEYS = ("prompt", "image", "seed", "extra_inputs")
_FORMS = (
    "a list of prompts or of dicts with 'prompt' (and optional 'image', 'seed', 'extra_inputs'), "
    "the JSON text of such a list, or a JSON Lines file (a path, a URL or an ObjectStoragePath)"
)


@dataclass(frozen=True)
class BatchItem:
    """One input, checked: what to send, and its fingerprint for the ledger."""

    index: int
    inputs: dict[str, Any]
    fingerprint: str


def load_items(raw: Any) -> list[Any]:
    """The raw items of ``inputs`` in input order (not yet checked)."""
    if isinstance(raw, (list, tuple)):
        return list(raw)
    if isinstance(raw, str) and raw.lstrip().startswith("["):
        try:
            parsed = json.loads(raw)
        except ValueError as error:
            raise MagiInputError(f"Invalid inputs: not valid JSON ({error}). Fix: pass {_FORMS}") from None
        if not isinstance(parsed, list):
            raise MagiInputError(f"Invalid inputs: the JSON is not a list. Fix: pass {_FORMS}")
        return parsed
    if isinstance(raw, (str, Path)) or hasattr(raw, "fs"):
        return _read_json_lines(raw)
    raise MagiInputError(f"Invalid inputs: {type(raw).__name__} {shorten(raw)}. Fix: pass {_FORMS}")


def _read_json_lines(source: Any) -> list[Any]:
    text_source = str(source).strip()
    if not text_source:
        raise MagiInputError(f"Invalid inputs: empty. Fix: pass {_FORMS}")
    path: Any
    if isinstance(source, str) and "://" in text_source:
        from airflow.sdk import ObjectStoragePath

        path = ObjectStoragePath(text_source)
    elif isinstance(source, str):
        path = Path(text_source).expanduser()
        if not path.is_absolute():
            raise MagiInputError(
                f"Invalid inputs: {shorten(source)} is neither a JSON list nor an absolute path or URL "
                f"of a JSON Lines file. Fix: pass {_FORMS}"
            )
    else:
        path = source
    try:
        with path.open("r") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise MagiInputError(
            f"Invalid inputs: the JSON Lines file {text_source} cannot be read ({error}). Fix: check "
            "the path and that the worker can read it"
        ) from None
    items: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines are not items: indexes count the items only
        try:
            items.append(json.loads(line))
        except ValueError as error:
            raise MagiInputError(
                f"Invalid inputs: {text_source} line {number} (item {len(items)}) is not JSON ({error}). "
                "Fix: one JSON object or string per line"
            ) from None
    return items


def check_items(raw_items: list[Any], model: str) -> list[BatchItem]:
    """Every item checked, or the first problem named by its index; nothing is sent here."""
    if not raw_items:
        raise MagiInputError(f"Invalid inputs: the batch is empty. Fix: pass {_FORMS}")
    return [_check_item(index, raw, model) for index, raw in enumerate(raw_items)]


def _check_item(index: int, raw: Any, model: str) -> BatchItem:
    where = f"inputs[{index}]"
    fields: Mapping[str, Any]
    if isinstance(raw, str):
        fields = {"prompt": raw}
    elif isinstance(raw, Mapping):
        unknown = sorted(str(key) for key in raw if key not in ITEM_KEYS)
        if unknown:
            raise MagiInputError(
                f"Invalid {where}: unknown key(s) {', '.join(unknown)}. Fix: use only "
                f"{', '.join(ITEM_KEYS)}; other model inputs go inside 'extra_inputs'"
            )
        if "prompt" not in raw:
            raise MagiInputError(f"Invalid {where}: no 'prompt'. Fix: add the text of the video to make")
        fields = raw
    else:
        raise MagiInputError(
            f"Invalid {where}: {type(raw).__name__} {shorten(raw)}. Fix: a prompt string or a dict "
            "with 'prompt'"
        )
    try:
        inputs = magi_inputs(
            prompt=fields.get("prompt"),
            image=fields.get("image"),
            seed=fields.get("seed"),
            extra_inputs=fields.get("extra_inputs"),
        )
    except MagiInputError as error:
        raise MagiInputError(f"{where}: {error}") from None
    return BatchItem(index=index, inputs=inputs, fingerprint=inputs_fingerprint(model, inputs))
