"""A small asyncio HTTP/1.1 server (h11) that can also misbehave on purpose.

A framework server cannot drop a connection after reading a request, or send fewer bytes than
its Content-Length promised; faithful fault injection needs both, so the wire is ours.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import h11

MAX_REQUEST_BODY = 64 * 1024 * 1024
_READ_CHUNK = 64 * 1024


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
                request = await _read_request(conn, reader, client)
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


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader, client: str) -> Request | None:
    head: h11.Request | None = None
    body = bytearray()
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
            body += event.data
            if len(body) > MAX_REQUEST_BODY:
                raise ConnectionError("request body too large")
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
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
