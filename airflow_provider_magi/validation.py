"""MAGI-1 24B input rules, checked after templating and before anything is sent (or paid for)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
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
class ImageFile:
    """A first frame read and checked: what the upload sends."""

    name: str
    content: bytes
    content_type: str


@dataclass(frozen=True)
class LocalImage:
    """A first frame to upload before submitting: a local path or an ObjectStoragePath.

    Nothing is read when it is made: the file is read (and checked) only when a prediction is
    about to be submitted, so a retry that reattaches to a paid prediction never needs it again.
    """

    path: Any
    field: str = "image"  # the input it is (``image``, or MAGI-2's ``last_image``), for errors

    def __str__(self) -> str:
        return str(self.path)

    def read(self) -> ImageFile:
        """The file's bytes, if it is a regular file holding an image WaveSpeed accepts.

        Refused, naming the field and the fix: anything that is not a regular file (a directory,
        a FIFO, a device), anything under /proc, /sys or /dev (``/proc/self/environ`` reports 0
        bytes and holds the worker's secrets), more than the upload limit, and any bytes that are
        not a PNG, JPEG, WebP or GIF image (so ``/etc/passwd`` or a symlinked key file is never
        sent anywhere).
        """
        local = _local_filesystem_path(self.path)
        field = self.field
        content = _read_local(local, field) if local is not None else _read_object(self.path, field)
        if len(content) > MAX_IMAGE_BYTES:
            raise _invalid(
                field,
                f"is over the {MAX_IMAGE_BYTES // 2**20} MiB upload limit",
                str(self.path),
                "resize or compress the first frame",
            )
        content_type = sniff_image_type(content)
        if content_type is None:
            raise _invalid(
                field,
                "is not a PNG, JPEG, WebP or GIF image",
                str(self.path),
                "pass the first frame as a PNG, JPEG, WebP or GIF file, or as an https URL",
            )
        name = getattr(self.path, "name", "") or "image"
        return ImageFile(name=name, content=content, content_type=content_type)


_IMAGE_FIX = "pass an http(s) URL, a local file path, or an ObjectStoragePath of the first-frame image"
# Kernel and device filesystems: files there are not images, and some hold secrets.
_PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


def sniff_image_type(content: bytes) -> str | None:
    """The image type the bytes really are (never the file name's word for it), or None."""
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    if content[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def _local_filesystem_path(path: Any) -> str | None:
    """The local path behind a Path, or behind an ObjectStoragePath on the local filesystem."""
    if isinstance(path, (str, os.PathLike)) and not hasattr(path, "fs"):
        return os.fspath(path)
    protocol = getattr(path, "protocol", None)
    protocols = protocol if isinstance(protocol, (tuple, list)) else (protocol,)
    if any(p in ("file", "local") for p in protocols):
        return str(getattr(path, "path", "")) or None
    return None


def _read_local(path: str, field: str) -> bytes:
    real = os.path.realpath(path)
    if any(real == root or real.startswith(root + os.sep) for root in _PSEUDO_FILESYSTEMS):
        raise _invalid(field, f"is a kernel or device file ({real})", path, _IMAGE_FIX)
    try:
        # O_NONBLOCK: opening a FIFO must not hang the task; fstat then refuses it.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise _invalid(field, "does not exist", path, _IMAGE_FIX) from None
    except OSError as error:
        raise _invalid(field, f"cannot be opened ({error.strerror})", path, _IMAGE_FIX) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _invalid(field, "is not a regular file", path, _IMAGE_FIX)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(MAX_IMAGE_BYTES + 1)  # never more than the limit, whatever stat says
    finally:
        os.close(fd)


def _read_object(path: Any, field: str) -> bytes:
    try:
        if not path.is_file():
            raise _invalid(field, "does not exist or is not a file", str(path), _IMAGE_FIX)
        with path.open("rb") as handle:
            content = handle.read(MAX_IMAGE_BYTES + 1)
    except OSError as error:
        raise _invalid(field, f"cannot be read ({error})", str(path), _IMAGE_FIX) from None
    return bytes(content)


def _absolute(path: Path, given: Any, field: str = "image") -> Path:
    """A relative first frame is refused: each worker would read it from its own working directory."""
    if not path.is_absolute():
        raise _invalid(
            field,
            f"is a relative path, which a worker would read from its own working directory ({os.getcwd()})",
            given,
            "pass an absolute path (or ~/...), a file:// or object-storage URL, or an https URL",
        )
    return path


def check_image(image: Any, field: str = "image") -> str | LocalImage | None:
    """A URL is passed on; a path or object-storage location is read and checked at submit time."""
    if image is None or image == "":
        return None
    if hasattr(image, "fs"):  # ObjectStoragePath
        return LocalImage(image, field)
    if isinstance(image, os.PathLike):
        return LocalImage(_absolute(Path(image), image, field), field)
    if not isinstance(image, str):
        raise _invalid(field, f"must be a URL or a path, not {type(image).__name__}", image, _IMAGE_FIX)
    text = image.strip()
    parts = urlsplit(text)
    if parts.scheme in ("http", "https") and parts.netloc:
        return text
    if parts.scheme in ("http", "https", "ftp", "data"):
        raise _invalid(field, "is not an http(s) URL", image, _IMAGE_FIX)
    if not parts.scheme:
        return LocalImage(_absolute(Path(text).expanduser(), image, field), field)
    from airflow.sdk import ObjectStoragePath

    try:
        return LocalImage(ObjectStoragePath(text), field)
    except (ValueError, TypeError) as error:
        raise _invalid(
            field, f"is not a storage location Airflow knows ({error})", image, _IMAGE_FIX
        ) from None


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


def check_extra_inputs(extra_inputs: Any, named: tuple[str, ...] = NAMED_INPUTS) -> dict[str, Any]:
    if extra_inputs is None:
        return {}
    if not isinstance(extra_inputs, Mapping):
        raise _invalid(
            "extra_inputs",
            f"must be a dict, not {type(extra_inputs).__name__}",
            extra_inputs,
            'pass a dict such as {"resolution": "720p"}',
        )
    collisions = sorted(set(extra_inputs) & set(named))
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
        json.dumps(dict(extra_inputs), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise _invalid(
            "extra_inputs",
            f"is not strict JSON ({error})",
            extra_inputs,
            "use strings, finite numbers, booleans, lists and dicts (no NaN or infinity)",
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


def inputs_fingerprint(model: str, inputs: Mapping[str, Any]) -> str:
    """A digest of what a prediction was asked to make: the model and every input.

    A retry reuses a stored prediction only when this matches, so clearing a task after editing
    its prompt makes a new video instead of silently returning the old one. A local first frame
    counts by its path, not its bytes: reading it again would make a reattaching retry depend on
    a file it no longer needs.
    """
    described = {key: str(value) if isinstance(value, LocalImage) else value for key, value in inputs.items()}
    canonical = json.dumps({"model": model.strip().strip("/"), "inputs": described}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def inputs_summary(
    *,
    prompt: Any,
    image: Any,
    seed: Any,
    extra_inputs: Any,
    duration: Any = None,
    aspect_ratio: Any = None,
    last_image: Any = None,
) -> dict[str, Any]:
    """What was asked for, for the result dict and asset events, without touching any file.

    Called when a paid prediction has finished: nothing local (a first frame deleted since the
    submit, say) may fail the task at that point, so this never raises.
    """
    summary: dict[str, Any] = {"prompt": prompt}
    if image not in (None, ""):
        summary["image"] = str(image).strip() if isinstance(image, str) else str(image)
    with contextlib.suppress(MagiInputError):
        seed = check_seed(seed)
    if seed not in (None, ""):
        summary["seed"] = seed
    for name, value in (("duration", duration), ("aspect_ratio", aspect_ratio), ("last_image", last_image)):
        if value not in (None, ""):
            summary[name] = value if isinstance(value, (int, str)) else str(value)
    if isinstance(extra_inputs, Mapping):
        summary.update(
            {
                key: value
                for key, value in extra_inputs.items()
                if key not in NAMED_INPUTS and key not in summary
            }
        )
    return summary


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


def check_webhook_url(url: Any, *, allow_insecure_loopback: bool = False) -> str | None:
    """An https receiver; plain http only to loopback, and only for the local server."""
    if url is None or url == "":
        return None
    if isinstance(url, str) and allow_insecure_loopback:
        from airflow_provider_magi.output_urls import is_loopback_http  # requests: not at parse time

        if is_loopback_http(url):
            return url
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme != "https" or not parts.netloc:
        raise _invalid(
            "webhook_url", "is not an https URL", url, "pass the https address of your webhook receiver"
        )
    return str(url)
