"""The local server's media routes: the two-step upload the SDK uses, the older multipart form,
and the uploaded files it serves back (bounded: the oldest go first)."""

from __future__ import annotations

import email.policy
import re
import threading
import uuid
from email.parser import BytesParser

from airflow_provider_magi.testing.config import ServerConfig
from airflow_provider_magi.testing.http import Request, Response
from airflow_provider_magi.testing.responses import envelope_error, envelope_ok, json_object

_UPLOAD_ROUTE = "/api/v3/media/upload/binary"  # the older multipart form


_UPLOAD_TICKET_ROUTE = "/api/v3/media/uploads"  # the two-step form the official SDK uses


_UPLOAD_PUT_ROUTE = re.compile(r"^/uploads/(?P<ticket>[0-9a-f]{32})$")


MAX_MEDIA_BYTES = 200 * 2**20  # the SDK's cap for any upload; images keep MAX_UPLOAD_BYTES


_MEDIA_TYPES = ("image/", "video/", "audio/")


_MEDIA_ROUTE = re.compile(r"^/media/(?P<id>[0-9a-f]+)/(?P<name>[^/]+)$")


MAX_UPLOAD_BYTES = 20 * 2**20


# All uploads the server holds at once; the oldest go first (a long-running server stays bounded).
MAX_MEDIA_KEPT_BYTES = 64 * 2**20


class UploadRoutes:
    """Mixed into :class:`~airflow_provider_magi.testing.app.WaveSpeedApp`."""

    config: ServerConfig
    media: dict[str, tuple[str, bytes, str]]
    upload_tickets: dict[str, tuple[str, int, str]]
    _lock: threading.Lock

    async def _upload(self, request: Request, match: None) -> Response:
        """``multipart/form-data`` with a ``file`` field, as WaveSpeed's binary media upload takes."""
        if len(request.body) > MAX_UPLOAD_BYTES:
            return envelope_error(413, f"File too large: the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
        part = _multipart_file(request.headers.get("content-type", ""), request.body)
        if part is None:
            return envelope_error(400, "Expected multipart/form-data with a 'file' field")
        filename, content, content_type = part
        if not content_type.startswith(_MEDIA_TYPES):  # the docs list image, video and audio
            return envelope_error(400, "Only image, video and audio files can be uploaded")
        media_id = uuid.uuid4().hex
        safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "upload"
        self._keep_media(media_id, (safe_name, content, content_type))
        return envelope_ok(
            {
                "type": content_type.split("/")[0],
                "download_url": f"{self.config.public_base_url}/media/{media_id}/{safe_name}",
                "filename": safe_name,
                "size": len(content),
            }
        )

    async def _upload_ticket(self, request: Request, match: None) -> Response:
        """Step one of the SDK's upload: JSON ``{filename, size, content_type}`` in, a PUT
        instruction and the future download URL out. The PUT goes to a path that, like the
        output URLs, needs no key (on the real service it is another host)."""
        ticket = json_object(request)
        if isinstance(ticket, Response):
            return ticket
        filename = ticket.get("filename")
        size = ticket.get("size")
        content_type = str(ticket.get("content_type") or "")
        if not isinstance(filename, str) or not filename.strip():
            return envelope_error(400, "filename is required")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            return envelope_error(400, "size must be a non-negative integer")
        if not content_type.startswith(_MEDIA_TYPES):
            return envelope_error(400, "Only image, video and audio files can be uploaded")
        limit = MAX_UPLOAD_BYTES if content_type.startswith("image/") else MAX_MEDIA_BYTES
        if size > limit:
            return envelope_error(413, f"File too large: the limit is {limit // 2**20} MB")
        ticket_id = uuid.uuid4().hex
        safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "upload"
        with self._lock:
            self.upload_tickets[ticket_id] = (safe_name, size, content_type)
        base = self.config.public_base_url
        return envelope_ok(
            {
                "upload": {
                    "method": "PUT",
                    "url": f"{base}/uploads/{ticket_id}",
                    "headers": {"Content-Type": content_type},
                },
                "download_url": f"{base}/media/{ticket_id}/{safe_name}",
            }
        )

    async def _upload_put(self, request: Request, match: re.Match[str]) -> Response:
        """Step two: the bytes, exactly the announced size, once per ticket."""
        with self._lock:
            ticket = self.upload_tickets.pop(match.group("ticket"), None)
        if ticket is None:
            return Response(
                status=404, body=b"Unknown or used upload ticket", headers={"Content-Type": "text/plain"}
            )
        filename, size, content_type = ticket
        if len(request.body) != size:
            return Response(
                status=400,
                body=f"Expected {size} bytes, got {len(request.body)}".encode(),
                headers={"Content-Type": "text/plain"},
            )
        self._keep_media(match.group("ticket"), (filename, request.body, content_type))
        return Response(status=200, body=b"", headers={"Content-Type": "text/plain"})

    def _keep_media(self, media_id: str, entry: tuple[str, bytes, str]) -> None:
        """Hold an upload, dropping the oldest once all of them pass MAX_MEDIA_KEPT_BYTES: a
        server that runs for days must not grow by every first frame it was sent (a dropped
        one answers 404, as an expired upload does on the real service)."""
        with self._lock:
            self.media[media_id] = entry
            total = sum(len(kept[1]) for kept in self.media.values())
            while total > MAX_MEDIA_KEPT_BYTES and len(self.media) > 1:
                oldest = next(iter(self.media))
                total -= len(self.media.pop(oldest)[1])

    async def _media(self, request: Request, match: re.Match[str]) -> Response:
        stored = self.media.get(match.group("id"))
        if stored is None:
            return Response(status=404, body=b"Not Found", headers={"Content-Type": "text/plain"})
        return Response(status=200, body=stored[1], headers={"Content-Type": stored[2]})


def _multipart_file(content_type: str, body: bytes) -> tuple[str, bytes, str] | None:
    """The ``file`` field of a multipart body: (filename, bytes, content type), or None."""
    if not content_type.startswith("multipart/form-data"):
        return None
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return part.get_filename() or "upload", payload, part.get_content_type()
    return None
