"""Uploading a first frame the way WaveSpeed's official SDK (2.0.5) does, in two steps.

1. ``POST /api/v3/media/uploads`` with JSON ``{filename, size, content_type}`` (the API key, like
   every API call) answers ``data.upload = {method: "PUT", url, headers}`` and
   ``data.download_url``.
2. The bytes go by ``PUT`` to ``upload.url`` with exactly ``upload.headers``: that is another
   host (object storage), so it never gets the API key, and it must pass the same rule as an
   output URL (https, never link-local or metadata hosts; loopback http only for the local
   server). Nothing is billed by an upload, so both steps are resent after transient failures.

A service that answers 404 to step one gets the older multipart ``/api/v3/media/upload/binary``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.exceptions

from airflow_provider_magi.exceptions import (
    MagiAPIError,
    MagiDownloadError,
    MagiRejectedError,
    MagiResponseError,
)
from airflow_provider_magi.output_urls import check_output_url
from airflow_provider_magi.watchdog import overall_deadline

TICKET_PATH = "/api/v3/media/uploads"
LEGACY_PATH = "/api/v3/media/upload/binary"


@dataclass(frozen=True)
class UploadTicket:
    """Where and how to PUT the bytes, and the URL a submit's ``image`` then takes."""

    url: str
    headers: dict[str, str]
    download_url: str


# What a presigned PUT may need from the instruction: the object's type and metadata, and the
# storage service's own signed headers. Framing headers (Host, Content-Length, Transfer-Encoding,
# Connection) belong to the HTTP client: taken from an answer they could split or smuggle the
# request. Anything else is refused rather than sent.
_ALLOWED_HEADERS = frozenset(
    {"content-type", "content-md5", "cache-control", "content-disposition", "content-encoding",
     "content-language", "expires"}
)  # fmt: skip
_ALLOWED_PREFIXES = ("x-amz-", "x-goog-", "x-ms-", "x-oss-", "x-cos-", "x-upload-")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def header_problem(name: Any, value: Any) -> str | None:
    """Why an instruction's header cannot be sent with the PUT, or None if it can."""
    if not isinstance(name, str) or not isinstance(value, str):
        return "is not text"
    if not _TOKEN.fullmatch(name):
        return "is not a valid header name"
    lowered = name.lower()
    if lowered not in _ALLOWED_HEADERS and not lowered.startswith(_ALLOWED_PREFIXES):
        return "is not one a presigned upload needs (only content and storage headers are sent)"
    if any(not (" " <= ch <= "~") for ch in value):  # printable ASCII: no NUL, CR, LF or "€"
        return "has a value that is not printable ASCII"
    return None


def parse_ticket(data: Mapping[str, Any], what: str) -> UploadTicket:
    """Step one's answer, strictly: anything else is a response error naming what is wrong."""
    upload = data.get("upload")
    download_url = data.get("download_url")
    if not isinstance(upload, dict) or str(upload.get("method", "")).upper() != "PUT":
        raise MagiResponseError(f"{what}: the answer has no PUT upload instruction: {dict(data)!r:.200}")
    url = upload.get("url")
    headers = upload.get("headers") or {}
    if not isinstance(url, str) or not url:
        raise MagiResponseError(f"{what}: the upload instruction has no url")
    if not isinstance(headers, dict):
        raise MagiResponseError(f"{what}: the upload instruction's headers are not an object")
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem:
            raise MagiResponseError(f"{what}: the upload instruction's header {name!r:.60} {problem}")
    if not isinstance(download_url, str) or not download_url.startswith(("https://", "http://")):
        raise MagiResponseError(f"{what}: the answer has no download_url")
    return UploadTicket(url=url, headers=dict(headers), download_url=download_url)


def put_bytes(
    session: requests.Session,
    ticket: UploadTicket,
    content: bytes,
    *,
    what: str,
    timeout: tuple[float, float],
    request_timeout: float,
    max_attempts: int,
    allow_insecure_loopback: bool,
) -> None:
    """Step two: the bytes, with the instruction's headers only (never the API key)."""
    try:
        check_output_url(ticket.url, allow_insecure_loopback=allow_insecure_loopback)
    except MagiDownloadError as error:
        raise MagiResponseError(
            f"{what}: the upload instruction points where no bytes may go: {error}"
        ) from None
    for attempt in range(1, max_attempts + 1):
        problem: str
        with overall_deadline(request_timeout) as watch:
            try:
                response = session.put(
                    ticket.url, data=content, headers=ticket.headers, timeout=timeout, allow_redirects=False
                )
                response.close()
            except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError) as error:
                # Failed while building the request: nothing was sent, and resending cannot help.
                raise MagiResponseError(f"{what}: the upload request cannot be built ({error})") from None
            except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
                problem = "no answer in time" if watch.expired else type(error).__name__
            else:
                if 200 <= response.status_code < 300:
                    return
                problem = f"HTTP {response.status_code}"
                if response.status_code not in (408, 429, 500, 502, 503, 504):
                    raise MagiRejectedError(
                        f"{what}: the upload target refused the bytes ({problem})",
                        status_code=response.status_code,
                    )
        if attempt < max_attempts:
            time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
    raise MagiAPIError(
        f"{what}: the upload target did not take the bytes after {max_attempts} attempts ({problem})"
    )
