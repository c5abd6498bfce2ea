"""Streaming an output video to a local path or an ObjectStoragePath, atomically.

The bytes go to a hidden temporary name beside the target and are moved into place only once
their size is proven: by Content-Length, by the total in Content-Range, or by the framing of a
chunked body. A resume asks for the rest of the *same* object (``If-Range``) and checks the
total it is told. Every hop of a redirect passes the same output-URL rule as the first URL.
Output URLs live on another host: requests to them never carry the API key, and bodies are
taken as they are sent (``Accept-Encoding: identity``), never decompressed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests
import urllib3.exceptions

from airflow_provider_magi.exceptions import MagiDownloadError
from airflow_provider_magi.output_urls import check_output_url, is_loopback_http
from airflow_provider_magi.watchdog import overall_deadline

__all__ = ["DownloadedFile", "WritablePath", "check_output_url", "download", "is_loopback_http", "place_file"]

CHUNK_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
# A video larger than this is not an output of any model we serve; a body without a length is
# never allowed to fill the disk.
MAX_OUTPUT_BYTES = 8 * 2**30
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")
# Content types that are plainly an error page or a message, not a video.
_NOT_VIDEO_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")


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
    attempt_timeout: float | None = None,
) -> DownloadedFile:
    """Stream ``url`` to ``target``; resume with Range after a broken transfer when served.

    :param label: names the output in errors, e.g. "prediction abc output 0".
    :param attempt_timeout: cut one attempt after this many seconds, however slowly bytes still
        arrive (needs a session mounted with :class:`~airflow_provider_magi.watchdog.DeadlineAdapter`,
        as the hook's is); the next attempt resumes where it stopped.
    """
    check_output_url(url, allow_insecure_loopback=allow_insecure_loopback)
    what = label or url
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.part"
    transfer = _Transfer(session, url, temporary, timeout, checksum, what, allow_insecure_loopback)
    transfer.attempt_timeout = attempt_timeout
    try:
        size, digest = transfer.run(max_attempts)
        temporary.rename(target)
    except BaseException:
        _remove_quietly(temporary)
        raise
    return DownloadedFile(path=str(target), size=size, sha256=digest)


class _Transient(Exception):
    """A broken, short or unproven transfer worth resuming."""


class _Transfer:
    """One output's bytes, across the attempts it takes to get all of them."""

    def __init__(
        self,
        session: requests.Session,
        url: str,
        temporary: WritablePath,
        timeout: tuple[float, float],
        checksum: bool,
        what: str,
        allow_insecure_loopback: bool,
    ) -> None:
        self.session = session
        self.url = url
        self.temporary = temporary
        self.timeout = timeout
        self.checksum = checksum
        self.what = what
        self.allow_insecure_loopback = allow_insecure_loopback
        self.attempt_timeout: float | None = None
        self.handle: Any = None
        self._reset()

    def _reset(self) -> None:
        """Throw away what was written: the next attempt starts from byte 0."""
        if self.handle is not None:
            self.handle.close()
        self.handle = _open_untracked(self.temporary)
        self.written = 0
        self.total: int | None = None  # proven size of the object
        self.validator: str | None = None  # ETag or Last-Modified, for If-Range
        self.hasher = hashlib.sha256() if self.checksum else None

    def run(self, max_attempts: int) -> tuple[int, str | None]:
        try:
            for attempt in range(1, max_attempts + 1):
                try:
                    if self._timed_attempt():
                        return self.written, self.hasher.hexdigest() if self.hasher else None
                    raise _Transient(f"got {self.written} of {self._total_text()} bytes")
                except (_Transient, requests.RequestException, urllib3.exceptions.HTTPError) as error:
                    if attempt == max_attempts:
                        raise MagiDownloadError(
                            f"{self.what}: download incomplete after {attempt} attempts "
                            f"({self.written} of {self._total_text()} bytes): {error}"
                        ) from None
                    time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
        finally:
            self.handle.close()
        raise AssertionError("unreachable")

    def _total_text(self) -> str:
        return str(self.total) if self.total is not None else "?"

    def _timed_attempt(self) -> bool:
        if self.attempt_timeout is None:
            return self._attempt()
        with overall_deadline(self.attempt_timeout) as watch:
            try:
                return self._attempt()
            except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
                if watch.expired:
                    raise _Transient(
                        f"attempt cut after {self.attempt_timeout:g}s (download_timeout)"
                    ) from error
                raise

    def _attempt(self) -> bool:
        """One request; True once the whole object is proven to be in the file."""
        headers = {"Accept-Encoding": "identity"}
        if self.written:
            headers["Range"] = f"bytes={self.written}-"
            if self.validator:
                headers["If-Range"] = self.validator
        with _open_checked(
            self.session, self.url, headers, self.timeout, self.allow_insecure_loopback
        ) as resp:
            framed = self._accept(resp)
            if framed is None:  # 416: the object is already whole, or changed
                return self.total == self.written
            for chunk in resp.raw.stream(CHUNK_BYTES, decode_content=False):
                self._write(chunk)
        if self.total is not None:
            if self.written > self.total:
                self._reset()
                raise _Transient("the server sent more bytes than the object's size")
            return self.written == self.total
        # No length was announced: only a chunked body's own framing proves it ended whole
        # (a cut one raises). A close-delimited body may have been cut anywhere: ask again for
        # the bytes after it, which a whole object answers with 416.
        return framed

    def _accept(self, response: requests.Response) -> bool | None:
        """Check the answer before reading its body. Returns whether a chunked framing will prove
        the end, or None for a 416 (nothing to read)."""
        self._refuse_what_no_retry_fixes(response)
        status = response.status_code
        if status == 416 and self.written:
            self._accept_nothing_left(response)
            return None
        if status == 200:
            return self._accept_whole(response)
        if status == 206 and self.written:
            self._accept_partial(response)
            return False
        raise _Transient(f"HTTP {status}")

    def _refuse_what_no_retry_fixes(self, response: requests.Response) -> None:
        status = response.status_code
        if status in (401, 403, 404, 410):
            raise MagiDownloadError(
                f"{self.what}: the output URL answered {status} ({response.reason}); output URLs "
                "expire, download them in the run that produced them"
            )
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise MagiDownloadError(
                f"{self.what}: the output was sent {encoding}-encoded though identity was asked for; "
                "it is not decompressed (a video gains nothing from it, and a bomb could fill the disk)"
            )

    def _accept_nothing_left(self, response: requests.Response) -> None:
        """A 416 to "the bytes after what we have": the object is whole, or it changed."""
        unsatisfied = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
        if unsatisfied and int(unsatisfied.group(1)) == self.written:
            self.total = self.written
            return
        self._reset()
        raise _Transient("the object changed size since the transfer began")

    def _accept_whole(self, response: requests.Response) -> bool:
        """A 200: the whole object from byte 0 (a Range ignored, or If-Range saw a change)."""
        if self.written:
            self._reset()
        self._check_is_video(response)
        self.total = _content_length(response)
        if self.total == 0:
            raise MagiDownloadError(f"{self.what}: the output URL answered an empty body, not a video")
        self.validator = _validator(response)
        return "chunked" in response.headers.get("Transfer-Encoding", "").lower()

    def _accept_partial(self, response: requests.Response) -> None:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
        if match is None:
            self._reset()
            raise _Transient("a partial answer without a usable Content-Range")
        start, end, total = (int(group) for group in match.groups())
        etag = response.headers.get("ETag")
        changed = (
            start != self.written
            or end < start
            or end >= total
            or (self.total is not None and total != self.total)
            or (
                etag is not None
                and self.validator is not None
                and self.validator.startswith('"')
                and etag != self.validator
            )
        )
        if changed:
            self._reset()
            raise _Transient(
                f"the resumed answer (bytes {start}-{end}/{total}) is not the rest of the same object"
            )
        self.total = total

    def _check_is_video(self, response: requests.Response) -> None:
        content_type = response.headers.get("Content-Type", "").strip().lower()
        if content_type.startswith(_NOT_VIDEO_TYPES):
            raise MagiDownloadError(
                f"{self.what}: the output URL answered {content_type!r}, not a video "
                "(an error page from the CDN?); nothing was saved"
            )

    def _write(self, chunk: bytes) -> None:
        if self.written == 0 and chunk.lstrip()[:1] == b"<":
            raise MagiDownloadError(
                f"{self.what}: the output URL answered an HTML or XML document, not a video; "
                "nothing was saved"
            )
        if self.written + len(chunk) > MAX_OUTPUT_BYTES:
            raise MagiDownloadError(f"{self.what}: the output is larger than {MAX_OUTPUT_BYTES // 2**30} GiB")
        self.handle.write(chunk)
        self.written += len(chunk)
        if self.hasher is not None:
            self.hasher.update(chunk)


def _open_untracked(path: WritablePath) -> Any:
    """Open the temporary file past ObjectStoragePath's lineage tracking: Airflow's hook lineage
    collector must see the final file (the hook reports it), never the ``.part`` name."""
    fs = getattr(path, "fs", None)
    if fs is not None:
        return fs.open(path.path, "wb")
    return path.open("wb")


def _open_checked(
    session: requests.Session,
    url: str,
    headers: dict[str, str],
    timeout: tuple[float, float],
    allow_insecure_loopback: bool,
) -> requests.Response:
    """GET ``url``, following redirects by hand so every hop passes the output-URL rule."""
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        check_output_url(current, allow_insecure_loopback=allow_insecure_loopback)
        prepared = session.prepare_request(requests.Request("GET", current, headers=headers))
        if prepared.url != current:  # what the connection will really use
            check_output_url(str(prepared.url), allow_insecure_loopback=allow_insecure_loopback)
        settings = session.merge_environment_settings(prepared.url, {}, True, None, None)
        settings["stream"] = True
        response = session.send(prepared, allow_redirects=False, timeout=timeout, **settings)
        if not response.is_redirect:
            return response
        location = response.headers.get("Location", "")
        response.close()
        current = urljoin(current, location)
    raise MagiDownloadError(f"output URL {url!r} redirected more than {MAX_REDIRECTS} times")


def _content_length(response: requests.Response) -> int | None:
    length = response.headers.get("Content-Length", "").strip()
    return int(length) if length.isdigit() else None


def _validator(response: requests.Response) -> str | None:
    """What If-Range can name: a strong ETag, else Last-Modified."""
    etag = response.headers.get("ETag", "").strip()
    if etag.startswith('"'):
        return etag
    return response.headers.get("Last-Modified") or None


def _remove_quietly(path: WritablePath) -> None:
    try:
        path.unlink(missing_ok=True)
    except (OSError, TypeError):
        try:
            if path.exists():
                path.unlink()
        except OSError:
            pass


def place_file(source: str | os.PathLike[str], target: WritablePath) -> int:
    """Copy a finished local file to ``target`` the way a download lands: under a hidden temporary
    name beside it, moved into place only when whole, so readers never see a partial video."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.part"
    try:
        with open(source, "rb") as reader:
            handle = _open_untracked(temporary)
            try:
                shutil.copyfileobj(reader, handle, CHUNK_BYTES)
            finally:
                handle.close()
        temporary.rename(target)
    except BaseException:
        _remove_quietly(temporary)
        raise
    return os.path.getsize(source)
