"""The triggerer's HTTP side: one pooled aiohttp session and poll budget per key and event loop,
and one exchange with an overall deadline and a size cap.

All triggers of a key in one triggerer share these (bench/triggerer.py measures why); the worker's
blocking client lives in the hook. Both read answers through :func:`answer_from`, so they parse,
cap and scrub the key alike.

Why aiohttp: the triggerer polls for every deferred task of a deployment, so CPU per poll decides
how many waits one triggerer holds. Measured in one run (bench/poll_cost.py, 64 in flight) httpx
cost 45.9 times a bare asyncio-streams client per GET, aiohttp 2.4 times; Airflow's own
``HttpAsyncHook`` uses aiohttp too.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_environ_proxies, select_proxy

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
    from airflow_provider_magi.hooks.settings import MagiSettings

# Connections to WaveSpeed per key per triggerer, however many triggers wait.
MAX_ASYNC_CONNECTIONS = 64


@dataclass
class SharedAsync:
    """What all triggers of one key share in a triggerer: the connection pool and the poll budget.

    ``gate`` lets no more requests into the session than it has connections, so the budget grants
    a poll only when a connection is free to send it, and a wait costs O(1) per request.
    ``closer`` closes the session when the event loop shuts down (``asyncio.run`` cancels it), so
    no socket or session outlives its loop.
    """

    session: aiohttp.ClientSession
    budget: PollBudget
    headers: Mapping[str, str]
    proxy: str | None = None
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_ASYNC_CONNECTIONS))
    closer: asyncio.Task[None] | None = None


_ClientKey = tuple[str, str, float, float, float]
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_ClientKey, SharedAsync]] = (
    weakref.WeakKeyDictionary()
)
_async_clients_lock = threading.Lock()


def shared_async_client(settings: MagiSettings) -> SharedAsync:
    """One pooled session and poll budget per event loop, base URL and key.

    N triggers share a few connections and one request budget. The key is part of the cache key
    only so two connections with different keys never share state; it is never set on the
    session's defaults (each request carries its own header).
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
        if shared is None or shared.session.closed:
            shared = registry[cache_key] = SharedAsync(
                _new_session(settings),
                PollBudget(settings.max_polls_per_second),
                headers={**settings.auth_headers, "Accept-Encoding": ACCEPT_ENCODING},
                proxy=_environment_proxy(settings.base_url),
            )
            shared.closer = loop.create_task(_close_at_shutdown(shared.session), name="magi-session-closer")
        return shared


def _new_session(settings: MagiSettings) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=MAX_ASYNC_CONNECTIONS, ssl=_tls_context()),
        # The whole request is bounded by request_timeout in asend; these bound each phase.
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        ),
        auto_decompress=False,  # bodies are decoded under the size cap (bounded.decode_body)
        cookie_jar=aiohttp.DummyCookieJar(),  # no state passes from one trigger's answer to another
    )


def _tls_context() -> ssl.SSLContext:
    """Certificates are checked against the bundle the worker's requests session uses
    (REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE when set, else certifi's), so a corporate CA given to
    the workers holds in the triggerer too, and no image needs a system CA store."""
    bundle = (
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or DEFAULT_CA_BUNDLE_PATH
    )
    if os.path.isdir(bundle):
        return ssl.create_default_context(capath=bundle)
    return ssl.create_default_context(cafile=bundle)


def _environment_proxy(base_url: str) -> str | None:
    """The proxy HTTPS_PROXY / NO_PROXY name for ``base_url``, read as the worker's requests
    session reads them. Once per session: aiohttp's ``trust_env`` reads them (and ~/.netrc) on
    every request, handing two jobs per poll to a thread pool (seen profiling the poll path)."""
    return select_proxy(base_url, get_environ_proxies(base_url)) or None


async def _close_at_shutdown(session: aiohttp.ClientSession) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await session.close()


async def asend(
    shared: SharedAsync, method: str, url: str, settings: MagiSettings, body: bytes | None = None
) -> HTTPAnswer:
    headers = shared.headers if body is None else {**shared.headers, "Content-Type": "application/json"}
    try:
        async with asyncio.timeout(settings.request_timeout):
            async with shared.session.request(
                method, url, headers=headers, data=body, allow_redirects=False, proxy=shared.proxy
            ) as response:
                try:
                    raw: bytes | AnswerTooLarge = await atake_capped(response.content.iter_any())
                except AnswerTooLarge as error:
                    raw = error
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
        # The connection was never made: nothing was sent.
        raise ConnectFailure(error_text(error, settings.api_key)) from error
    except aiohttp.ClientError as error:
        raise ExchangeFailure(error_text(error, settings.api_key)) from error
    except TimeoutError as error:  # after ClientError: aiohttp's own timeouts subclass it
        raise ExchangeFailure(
            f"no complete answer within request_timeout ({settings.request_timeout:g}s)"
        ) from error
    return answer_from(response.status, response.headers, raw, settings.api_key)


def answer_from(
    status_code: int, headers: Mapping[str, str], raw: bytes | AnswerTooLarge, secret: str
) -> HTTPAnswer:
    """What either client received, in the one shape the parser reads, with the key scrubbed.

    An answer over the size cap (as sent, or once decompressed) becomes a short note in place of
    its body, so the parser reports it like any other answer that is not the envelope.
    """
    content_type = headers.get("Content-Type", "")
    try:
        if isinstance(raw, AnswerTooLarge):
            raise raw
        body = decode_body(raw, headers.get("Content-Encoding"))
    except (AnswerTooLarge, UnsupportedEncoding) as error:
        body = f"[{error}]".encode()
        content_type = "unreadable"
    return HTTPAnswer(
        status_code=status_code,
        content_type=redact(content_type.encode("latin-1", "replace"), secret).decode("latin-1"),
        body=redact(body, secret),
        retry_after=headers.get("Retry-After"),
    )


def count_poll(answer: HTTPAnswer, conn_id: str) -> None:
    """One poll in the metrics; a 429 also as a throttled one."""
    metrics.incr("polls", conn_id=conn_id)
    if answer.status_code == 429:
        metrics.incr("polls.throttled", conn_id=conn_id)
