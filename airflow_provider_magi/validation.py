"""MAGI-1 24B input rules, checked after templating and before anything is sent (or paid for)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_magi.exceptions import MagiInputError

MAX_IMAGE_BYTES = 20 * 2**20  # WaveSpeed's documented image upload limit
SEED_MIN = -1
SEED_MAX = 2147483647
NAMED_INPUTS = ("prompt", "image", "seed")
_INTEGER_TEXT = re.compile(r"^[+-]?\d+$")


def shorten(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _invalid(field: str, problem: str, value: Any, fix: str) -> MagiInputError:
    return MagiInputError(f"Invalid {field}: {problem} (got {shorten(value)}). Fix: {fix}")


def check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise _invalid("prompt", f"must be a string, not {type(prompt).__name__}", prompt, "pass text")
    if not prompt.strip():
        raise _invalid("prompt", "is empty", prompt, "describe the video to generate")
    return prompt


@dataclass(frozen=True)
class LocalImage:
    """A first frame to upload before submitting: a local path or an ObjectStoragePath."""

    path: Any
    size: int

    def __str__(self) -> str:
        return str(self.path)


_IMAGE_FIX = "pass an http(s) URL, a local file path, or an ObjectStoragePath of the first-frame image"


def check_image(image: Any) -> str | LocalImage | None:
    """A URL is passed on; a path or object-storage location is checked now and uploaded later."""
    if image is None or image == "":
        return None
    if hasattr(image, "fs"):  # ObjectStoragePath
        return _local_image(image)
    if isinstance(image, os.PathLike):
        return _local_image(Path(image))
    if not isinstance(image, str):
        raise _invalid("image", f"must be a URL or a path, not {type(image).__name__}", image, _IMAGE_FIX)
    text = image.strip()
    parts = urlsplit(text)
    if parts.scheme in ("http", "https") and parts.netloc:
        return text
    if parts.scheme in ("http", "https", "ftp", "data"):
        raise _invalid("image", "is not an http(s) URL", image, _IMAGE_FIX)
    if not parts.scheme:
        return _local_image(Path(text).expanduser())
    from airflow.sdk import ObjectStoragePath

    try:
        return _local_image(ObjectStoragePath(text))
    except (ValueError, TypeError) as error:
        raise _invalid(
            "image", f"is not a storage location Airflow knows ({error})", image, _IMAGE_FIX
        ) from None


def _local_image(path: Any) -> LocalImage:
    try:
        is_file = path.is_file()
        stat = path.stat() if is_file else None
        size = int(stat.st_size if hasattr(stat, "st_size") else stat["size"]) if stat is not None else 0
    except (OSError, KeyError, TypeError):
        is_file, size = False, 0
    if not is_file:
        raise _invalid("image", "does not exist or is not a file", str(path), _IMAGE_FIX)
    if size > MAX_IMAGE_BYTES:
        raise _invalid(
            "image",
            f"is {size / 2**20:.1f} MiB, over the {MAX_IMAGE_BYTES // 2**20} MiB upload limit",
            str(path),
            "resize or compress the first frame",
        )
    return LocalImage(path=path, size=size)


def check_seed(seed: Any) -> int | None:
    """Accept an int, or the text of one (Jinja renders templates to strings)."""
    if seed is None or seed == "":
        return None
    fix = f"use a whole number from {SEED_MIN} to {SEED_MAX} (-1 for random)"
    if isinstance(seed, bool):
        raise _invalid("seed", "must be an integer, not a boolean", seed, fix)
    if isinstance(seed, str):
        if not _INTEGER_TEXT.match(seed.strip()):
            raise _invalid("seed", "is not an integer", seed, fix)
        seed = int(seed.strip())
    if not isinstance(seed, int):
        raise _invalid("seed", f"must be an integer, not {type(seed).__name__}", seed, fix)
    if not SEED_MIN <= seed <= SEED_MAX:
        raise _invalid("seed", "is out of range", seed, fix)
    return seed


def check_extra_inputs(extra_inputs: Any) -> dict[str, Any]:
    if extra_inputs is None:
        return {}
    if not isinstance(extra_inputs, Mapping):
        raise _invalid(
            "extra_inputs",
            f"must be a dict, not {type(extra_inputs).__name__}",
            extra_inputs,
            'pass a dict such as {"resolution": "720p"}',
        )
    collisions = sorted(set(extra_inputs) & set(NAMED_INPUTS))
    if collisions:
        raise _invalid(
            "extra_inputs",
            f"repeats the named parameter(s) {', '.join(collisions)}",
            extra_inputs,
            f"pass {', '.join(collisions)} as the operator's own argument(s)",
        )
    bad_keys = [key for key in extra_inputs if not isinstance(key, str) or not key]
    if bad_keys:
        raise _invalid("extra_inputs", "has keys that are not names", bad_keys, "use string keys")
    try:
        json.dumps(dict(extra_inputs))
    except (TypeError, ValueError) as error:
        raise _invalid(
            "extra_inputs", f"is not JSON-serialisable ({error})", extra_inputs, "use JSON values"
        ) from None
    return dict(extra_inputs)


def magi_inputs(
    *, prompt: Any, image: Any = None, seed: Any = None, extra_inputs: Any = None
) -> dict[str, Any]:
    """The request body for MAGI-1 24B; extra inputs pass through untouched for fields the docs add."""
    inputs: dict[str, Any] = {"prompt": check_prompt(prompt)}
    if (checked_image := check_image(image)) is not None:
        inputs["image"] = checked_image
    if (checked_seed := check_seed(seed)) is not None:
        inputs["seed"] = checked_seed
    inputs.update(check_extra_inputs(extra_inputs))
    return inputs


def check_prediction_id(value: Any) -> str:
    """A prediction id, or the result dict of a task that made one."""
    if isinstance(value, Mapping) and "prediction_id" in value:
        value = value["prediction_id"]
    if not isinstance(value, str) or not value.strip() or value.strip() == "None":
        raise _invalid(
            "prediction_id",
            "is not a prediction id",
            value,
            "pass the id the submitting task pushed to XCom (key 'prediction_id')",
        )
    return value.strip()


def check_webhook_url(url: Any) -> str | None:
    if url is None or url == "":
        return None
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme != "https" or not parts.netloc:
        raise _invalid(
            "webhook_url", "is not an https URL", url, "pass the https address of your webhook receiver"
        )
    return str(url)
