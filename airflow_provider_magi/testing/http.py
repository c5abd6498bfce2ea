"""A small asyncio HTTP/1.1 server (h11) that can also misbehave on purpose.

A framework server cannot drop a connection after reading a request, or send fewer bytes than
its Content-Length promised; faithful fault injection needs both, so the wire is ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import h11

# The largest request body read: the SDK's 200 MiB media cap, plus room for a multipart form's
# framing. A bigger one is answered 413 (Payload Too Large), never a dropped connection.
MAX_REQUEST_BODY = 201 * 1024 * 1024
# A body past the cap is read and discarded up to this many times the cap (so the client gets to
# read the 413), then the connection is closed.
_DISCARD_FACTOR = 4


_READ_CHUNK = 64 * 1024


class _BodyTooLarge(Exception):
    """A request body over MAX_REQUEST_BODY: answered 413 once the client is done sending."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    client: str = ""


@dataclass
class Response:
    status: int
    body: bytes | AsyncIterator[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None  # required for a streamed body
    # Misbehaviour, for fault injection:
    drop: bool = False  # close the connection without answering
    truncate_at: int | None = None  # promise the full length, send this many body bytes, close


Handler = Callable[[Request], Awaitable[Response]]


class HTTPServer:
    """Serves ``handler`` on a loopback port with keep-alive; one task per connection."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if peer else ""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BODY)
        try:
            while True:
                try:
                    request = await _read_request(conn, reader, client)
                except _BodyTooLarge:
                    await _answer_too_large(conn, writer)
                    return
                if request is None:
                    return
                response = await self.handler(request)
                if response.drop:
                    writer.transport.abort()
                    return
                if not await _write_response(conn, writer, request, response):
                    return
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return
        finally:
            self._connections.discard(task)
            with contextlib.suppress(Exception):
                writer.close()


async def _answer_too_large(conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
    """413 with the API's envelope, then close (the rest of the body is not read)."""
    limit = MAX_REQUEST_BODY // 2**20
    body = json.dumps(
        {"code": 413, "message": f"Request body too large: the limit is {limit} MiB", "data": None}
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    writer.write(conn.send(h11.Response(status_code=413, headers=headers)))
    writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader, client: str) -> Request | None:
    head: h11.Request | None = None
    body = bytearray()
    received = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(_READ_CHUNK)
            conn.receive_data(data)
            if not data and conn.their_state is not h11.DONE:
                if head is None:
                    return None
                raise ConnectionError("client closed mid-request")
            continue
        if isinstance(event, h11.ConnectionClosed):
            return None
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            received += len(event.data)
            if received <= MAX_REQUEST_BODY:
                body += event.data
            elif received > _DISCARD_FACTOR * MAX_REQUEST_BODY:
                raise _BodyTooLarge()  # still sending: answered now, then closed
            else:
                body.clear()  # over the cap: read on (discarding) so the client reads the 413
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            if received > MAX_REQUEST_BODY:
                raise _BodyTooLarge()
            target = urlsplit(head.target.decode("latin-1"))
            return Request(
                method=head.method.decode("ascii"),
                path=target.path,
                query=dict(parse_qsl(target.query)),
                headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers},
                body=bytes(body),
                client=client,
            )


async def _write_response(
    conn: h11.Connection, writer: asyncio.StreamWriter, request: Request, response: Response
) -> bool:
    """Send ``response``; return False when the connection was closed on purpose."""
    body = response.body
    length = len(body) if isinstance(body, bytes) else response.content_length
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    headers.append((b"server", b"magi-local-wavespeed"))
    writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
    if request.method != "HEAD":
        sent = 0
        async for chunk in _chunks(body):
            if response.truncate_at is not None and sent + len(chunk) >= response.truncate_at:
                chunk = chunk[: response.truncate_at - sent]
                writer.write(conn.send(h11.Data(data=chunk)))
                await writer.drain()
                writer.transport.abort()
                return False
            writer.write(conn.send(h11.Data(data=chunk)))
            sent += len(chunk)
            await writer.drain()
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()
    return True


async def _chunks(body: bytes | AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if isinstance(body, bytes):
        if body:
            yield body
        return
    async for chunk in body:
        yield chunk
