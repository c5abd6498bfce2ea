"""A batch's inputs: a list, the JSON text of one, or a JSON Lines file; every item checked first.

Every item is checked (the MAGI rules of ``validation``) before the batch pays for its first
video: a typo in item 900 must not surface after 899 videos were bought, and one error names
every bad item (up to 20, then how many more), each by its index (and the file's line), the
field, and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_magi.exceptions import MagiInputError
from airflow_provider_magi.models import NAMED_INPUTS
from airflow_provider_magi.validation import inputs_fingerprint, shorten

ITEM_KEYS = (*NAMED_INPUTS, "extra_inputs", "key", "metadata")
# A key names an item in the manifest and in errors: short enough to read in a log line.
MAX_KEY_CHARS = 200
_FORMS = (
    "a list of prompts or of dicts with 'prompt' (and optional 'image', 'seed', 'extra_inputs', "
    "'key', 'metadata'; for MAGI-2 'duration', 'aspect_ratio', 'last_image'), "
    "the JSON text of such a list, or a JSON Lines file (a path, a URL or an ObjectStoragePath)"
)


# An error names at most this many bad items, then says how many more there are.
MAX_NAMED_ERRORS = 20


@dataclass(frozen=True)
class BatchItem:
    """One input, checked: what to send, and its fingerprint for the ledger."""

    index: int
    inputs: dict[str, Any]
    fingerprint: str
    key: str | None = None  # the caller's name for the item, unique in the batch
    metadata: dict[str, Any] | None = None  # the caller's JSON object, copied to the manifest
    price: float | None = None  # known before any bill when the catalogue prices it (MAGI-2)
    seconds: int | None = None  # the video's length, its default included, when the model has one


class JsonLinesItems(list[Any]):
    """The items of a JSON Lines file, with where each came from: its line number in the file
    (1-based, blank lines counted, as an editor counts them)."""

    def __init__(self, items: list[Any], source: str, line_numbers: list[int]) -> None:
        super().__init__(items)
        self.source = source
        self.line_numbers = line_numbers


@dataclass(frozen=True)
class _NotJson:
    """A line that is not JSON: still an item (it holds an index), reported with the others."""

    error: str


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


def _read_json_lines(source: Any) -> JsonLinesItems:
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
    numbers: list[int] = []
    # Split on newlines only (text mode has made \r\n and \r newlines): str.splitlines() also
    # splits on form feeds and U+2028, which a JSON string may hold, and which no editor counts.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue  # blank lines are not items: indexes count the items only
        try:
            items.append(json.loads(line))
        except ValueError as error:
            items.append(_NotJson(str(error)))
        numbers.append(number)
    return JsonLinesItems(items, text_source, numbers)


def check_items(raw_items: list[Any], model: str) -> list[BatchItem]:
    """Every item checked, or every problem named (up to :data:`MAX_NAMED_ERRORS`, then how
    many more), each by its index and, for a JSON Lines file, its line; nothing is sent here."""
    if not raw_items:
        raise MagiInputError(f"Invalid inputs: the batch is empty. Fix: pass {_FORMS}")
    lines = getattr(raw_items, "line_numbers", None)
    source = getattr(raw_items, "source", "")
    checked: list[BatchItem] = []
    problems: list[str] = []
    for index, raw in enumerate(raw_items):
        where = _where(index, lines, source)
        try:
            checked.append(_check_item(index, where, raw, model))
        except MagiInputError as error:
            problems.append(str(error))
    problems += _duplicate_keys(checked, lines, source)
    if len(problems) == 1:
        raise MagiInputError(problems[0])
    if problems:
        named = "\n".join(f"- {problem}" for problem in problems[:MAX_NAMED_ERRORS])
        more = len(problems) - MAX_NAMED_ERRORS
        raise MagiInputError(
            f"Invalid inputs: {len(problems)} of {len(raw_items)} items are bad, and nothing was sent "
            f"(every item is checked before anything is paid). Fix each:\n{named}"
            + (f"\n- and {more} more" if more > 0 else "")
        )
    return checked


def _where(index: int, lines: list[int] | None, source: str) -> str:
    """An item as errors name it: its index and, from a JSON Lines file, its line there."""
    return f"inputs[{index}]" if lines is None else f"inputs[{index}] (line {lines[index]} of {source})"


def _duplicate_keys(items: list[BatchItem], lines: list[int] | None, source: str) -> list[str]:
    """A key names one item: the second and later items with a key already used are refused."""
    first: dict[str, int] = {}
    problems = []
    for item in items:
        if item.key is None:
            continue
        if item.key in first:
            where = _where(item.index, lines, source)
            problems.append(
                f"Invalid {where}: key {item.key!r} is also the key of inputs[{first[item.key]}]. Fix: give "
                "each item a key of its own (keys name items in the manifest), or leave 'key' out"
            )
        else:
            first[item.key] = item.index
    return problems


def identical_items(items: list[BatchItem]) -> list[list[int]]:
    """Groups of items without a key whose inputs are the same: each is paid for (a batch makes
    what it is given), so the task says so in a warning."""
    groups: dict[str, list[int]] = {}
    for item in items:
        if item.key is None:
            groups.setdefault(item.fingerprint, []).append(item.index)
    return [indexes for indexes in groups.values() if len(indexes) > 1]


def _check_key(where: str, fields: Mapping[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    key, metadata = fields.get("key"), fields.get("metadata")
    if key is not None and (not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_CHARS):
        raise MagiInputError(
            f"Invalid {where}: key {shorten(key)}. Fix: a non-empty string of at most {MAX_KEY_CHARS} "
            "characters, unique in the batch"
        )
    if metadata is not None:
        try:
            if not isinstance(metadata, Mapping):
                raise TypeError(type(metadata).__name__)
            metadata = json.loads(json.dumps(dict(metadata)))
        except (TypeError, ValueError, RecursionError) as error:
            raise MagiInputError(
                f"Invalid {where}: metadata {shorten(fields.get('metadata'))} ({error}). Fix: a JSON "
                "object (it is copied to the item's manifest line)"
            ) from None
    return key, metadata


def _check_item(index: int, where: str, raw: Any, model: str) -> BatchItem:
    fields: Mapping[str, Any]
    if isinstance(raw, _NotJson):
        raise MagiInputError(
            f"Invalid {where}: is not JSON ({raw.error}). Fix: one JSON object or string per line"
        )
    if isinstance(raw, str):
        fields = {"prompt": raw}
    elif isinstance(raw, Mapping):
        unknown = sorted(str(key) for key in raw if key not in ITEM_KEYS)
        if unknown:
            raise MagiInputError(
                f"Invalid {where}: unknown key(s) {', '.join(unknown)}. Fix: use only "
                f"{', '.join(_item_keys(model))}; other model inputs go inside 'extra_inputs'"
            )
        if "prompt" not in raw and _needs_prompt(model):
            raise MagiInputError(f"Invalid {where}: no 'prompt'. Fix: add the text of the video to make")
        fields = raw
    else:
        raise MagiInputError(
            f"Invalid {where}: {type(raw).__name__} {shorten(raw)}. Fix: a prompt string or a dict "
            "with 'prompt'"
        )
    from airflow_provider_magi.model_inputs import model_inputs, price_of

    named = {
        name: fields.get(name)
        for name in ("prompt", "image", "seed", "duration", "aspect_ratio", "last_image")
    }
    try:
        inputs = model_inputs(model, **named, extra_inputs=fields.get("extra_inputs"))
    except MagiInputError as error:
        raise MagiInputError(f"{where}: {error}") from None
    key, metadata = _check_key(where, fields)
    return BatchItem(
        index=index,
        inputs=inputs,
        fingerprint=inputs_fingerprint(model, inputs),
        key=key,
        metadata=metadata,
        price=price_of(model, inputs),
        seconds=_seconds_of(model, inputs),
    )


def _seconds_of(model: str, inputs: dict[str, Any]) -> int | None:
    from airflow_provider_magi.models import spec_of

    spec = spec_of(model)
    return spec.seconds_of(inputs) if spec is not None else None


def _item_keys(model: str) -> tuple[str, ...]:
    """The keys an item may have for this model (every named input for a model the catalogue
    does not know)."""
    from airflow_provider_magi.models import spec_of

    spec = spec_of(model)
    return ITEM_KEYS if spec is None else (*spec.names, "extra_inputs", "key", "metadata")


def _needs_prompt(model: str) -> bool:
    from airflow_provider_magi.models import spec_of

    spec = spec_of(model)
    rule = spec.rule("prompt") if spec is not None else None
    return spec is None or (rule is not None and rule.required)
