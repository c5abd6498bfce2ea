"""The triggerer's HTTP side: one pooled client and poll budget per key and event loop, and one
exchange with an overall deadline and a size cap.

All triggers of a key in one triggerer share these (bench/triggerer.py measures why); the worker's
blocking client lives in the hook. Both read answers through :func:`answer_from`, so they parse,
cap and scrub the key alike.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from airflow_provider_magi import metrics
from airflow_provider_magi.api import ConnectFailure, ExchangeFailure, HTTPAnswer, error_text, redact
from airflow_provider_magi.bounded import (
    ACCEPT_ENCODING,
    AnswerTooLarge,
    UnsupportedEncoding,
    atake_capped,
    decode_body,
)
from airflow_provider_magi.pacing import PollBudget

if TYPE_CHECKING:
    import requests

    from airflow_provider_magi.hooks.magi import MagiSettings

# Connections to WaveSpeed per key per triggerer, however many triggers wait.
MAX_ASYNC_CONNECTIONS = 64


@dataclass
class SharedAsync:
    """What all triggers of one key share in a triggerer: the connection pool and the poll budget.

    ``gate`` lets no more requests into the client than it has connections: httpx's pool scans
    its whole wait queue on every change, so 5,000 triggers queued inside it stalled the event
    loop for minutes (bench/triggerer.py); waiting on a semaphore costs O(1) per request.
    """

    client: httpx.AsyncClient
    budget: PollBudget
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_ASYNC_CONNECTIONS))


_ClientKey = tuple[str, str, float, float, float]
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_ClientKey, SharedAsync]] = (
    weakref.WeakKeyDictionary()
)
_async_clients_lock = threading.Lock()


def shared_async_client(settings: MagiSettings) -> SharedAsync:
    """One pooled client and poll budget per event loop, base URL and key.

    N triggers share a few connections and one request budget. The key is part of the cache key
    only so two connections with different keys never share state; it is never set on the
    client's defaults (each request carries its own header).
    """
    loop = asyncio.get_running_loop()
    cache_key = (
        settings.base_url,
        settings.api_key,
        settings.connect_timeout,
        settings.read_timeout,
        settings.max_polls_per_second,
    )
    with _async_clients_lock:
        registry = _async_clients.setdefault(loop, {})
        shared = registry.get(cache_key)
        if shared is None or shared.client.is_closed:
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout, pool=None),
                limits=httpx.Limits(
                    max_connections=MAX_ASYNC_CONNECTIONS, max_keepalive_connections=MAX_ASYNC_CONNECTIONS
                ),
                follow_redirects=False,
            )
            shared = registry[cache_key] = SharedAsync(client, PollBudget(settings.max_polls_per_second))
        return shared


async def asend(
    client: httpx.AsyncClient, method: str, url: str, settings: MagiSettings, body: bytes | None = None
) -> HTTPAnswer:
    headers = {**settings.auth_headers, "Accept-Encoding": ACCEPT_ENCODING}
    if body is not None:
        headers["Content-Type"] = "application/json"

    async def exchange() -> HTTPAnswer:
        async with client.stream(method, url, headers=headers, content=body) as response:
            try:
                raw: bytes | AnswerTooLarge = await atake_capped(response.aiter_raw())
            except AnswerTooLarge as error:
                raw = error
        return answer_from(response, raw, settings.api_key)

    try:
        return await asyncio.wait_for(exchange(), settings.request_timeout)
    except TimeoutError as error:
        raise ExchangeFailure(
            f"no complete answer within request_timeout ({settings.request_timeout:g}s)"
        ) from error
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
        raise ConnectFailure(error_text(error, settings.api_key)) from error
    except httpx.HTTPError as error:
        raise ExchangeFailure(error_text(error, settings.api_key)) from error


def answer_from(
    response: requests.Response | httpx.Response, raw: bytes | AnswerTooLarge, secret: str
) -> HTTPAnswer:
    """What either client received, in the one shape the parser reads, with the key scrubbed.

    An answer over the size cap (as sent, or once decompressed) becomes a short note in place of
    its body, so the parser reports it like any other answer that is not the envelope.
    """
    content_type = response.headers.get("Content-Type", "")
    try:
        if isinstance(raw, AnswerTooLarge):
            raise raw
        body = decode_body(raw, response.headers.get("Content-Encoding"))
    except (AnswerTooLarge, UnsupportedEncoding) as error:
        body = f"[{error}]".encode()
        content_type = "unreadable"
    return HTTPAnswer(
        status_code=response.status_code,
        content_type=redact(content_type.encode("latin-1", "replace"), secret).decode("latin-1"),
        body=redact(body, secret),
        retry_after=response.headers.get("Retry-After"),
    )


def count_poll(answer: HTTPAnswer, conn_id: str) -> None:
    """One poll in the metrics; a 429 also as a throttled one."""
    metrics.incr("polls", conn_id=conn_id)
    if answer.status_code == 429:
        metrics.incr("polls.throttled", conn_id=conn_id)
