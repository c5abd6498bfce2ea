"""Streaming an output video to a local path or an ObjectStoragePath, atomically.

The bytes go to a hidden temporary name beside the target and are moved into place only after
the byte count matches Content-Length, so a reader never sees half a video. Output URLs live on
another host: requests to them never carry the API key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from airflow_provider_magi.exceptions import MagiDownloadError

CHUNK_BYTES = 1024 * 1024
_RANGE_START = "bytes={}-"


# A ``pathlib.Path`` or an Airflow ``ObjectStoragePath``: both offer parent, name, open, rename,
# unlink and mkdir, which is all a download uses.
WritablePath = Any


@dataclass(frozen=True)
class DownloadedFile:
    path: str
    size: int
    sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def check_output_url(url: str, *, allow_insecure_loopback: bool) -> None:
    """Accept https, and plain http only to a loopback host when explicitly allowed."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        if allow_insecure_loopback:
            return
        raise MagiDownloadError(
            f"output URL {url!r} is plain http: allowed only for a loopback server with "
            "allow_insecure_loopback=True (the local WaveSpeed server)"
        )
    raise MagiDownloadError(f"output URL {url!r} is not an https URL; refusing to download it")


def is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and bool(parts.hostname) and _is_loopback(parts.hostname or "")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def download(
    session: requests.Session,
    url: str,
    target: WritablePath,
    *,
    timeout: tuple[float, float] = (10.0, 60.0),
    max_attempts: int = 4,
    checksum: bool = False,
    allow_insecure_loopback: bool = False,
    label: str = "",
) -> DownloadedFile:
    """Stream ``url`` to ``target``; resume with Range after a broken transfer when served.

    :param label: names the output in errors, e.g. "prediction abc output 0".
    """
    check_output_url(url, allow_insecure_loopback=allow_insecure_loopback)
    what = label or url
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.part"
    try:
        size, digest = _fetch(session, url, temporary, timeout, max_attempts, checksum, what)
        temporary.rename(target)
    except BaseException:
        _remove_quietly(temporary)
        raise
    return DownloadedFile(path=str(target), size=size, sha256=digest)


def _fetch(
    session: requests.Session,
    url: str,
    temporary: WritablePath,
    timeout: tuple[float, float],
    max_attempts: int,
    checksum: bool,
    what: str,
) -> tuple[int, str | None]:
    written = 0
    expected: int | None = None
    hasher = hashlib.sha256() if checksum else None
    handle = temporary.open("wb")
    try:
        for attempt in range(1, max_attempts + 1):
            headers = {"Range": _RANGE_START.format(written)} if written else {}
            try:
                with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
                    if response.status_code in (401, 403, 404, 410):
                        raise MagiDownloadError(
                            f"{what}: the output URL answered {response.status_code} "
                            f"({response.reason}); output URLs expire, download them in the run "
                            "that produced them"
                        )
                    if response.status_code not in (200, 206):
                        raise _Transient(f"HTTP {response.status_code}")
                    resumed_at = f"bytes {written}-"
                    if written and not response.headers.get("Content-Range", "").startswith(resumed_at):
                        # The server ignored Range (or answered another one): start over from 0.
                        handle.close()
                        handle = temporary.open("wb")
                        written = 0
                        hasher = hashlib.sha256() if checksum else None
                    expected = _expected_total(response, written, expected)
                    for chunk in response.iter_content(CHUNK_BYTES):
                        handle.write(chunk)
                        written += len(chunk)
                        if hasher is not None:
                            hasher.update(chunk)
                if expected is not None and written != expected:
                    raise _Transient(f"got {written} of {expected} bytes")
                handle.close()
                return written, hasher.hexdigest() if hasher else None
            except (_Transient, requests.RequestException) as error:
                if attempt == max_attempts:
                    raise MagiDownloadError(
                        f"{what}: download incomplete after {attempt} attempts "
                        f"({written} of {expected if expected is not None else '?'} bytes): {error}"
                    ) from None
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
    finally:
        handle.close()
    raise AssertionError("unreachable")


def _expected_total(response: requests.Response, written: int, known: int | None) -> int | None:
    length = response.headers.get("Content-Length")
    if length is None or not length.isdigit():
        return known
    return written + int(length) if response.status_code == 206 else int(length)


class _Transient(Exception):
    """A broken or short transfer worth resuming."""


def _remove_quietly(path: WritablePath) -> None:
    try:
        path.unlink(missing_ok=True)
    except (OSError, TypeError):
        try:
            if path.exists():
                path.unlink()
        except OSError:
            pass
