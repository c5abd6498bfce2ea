"""An overall deadline for a blocking ``requests`` call.

``requests`` only has per-read timeouts: a server that sends one byte every few seconds (in the
headers or the body) holds the call forever. The adapter here remembers which connection the
calling thread is using; when the deadline passes, a timer shuts that socket down, the blocked
read returns at once, and the caller sees an ordinary connection error it can attribute to the
deadline. (The triggerer's async client needs none of this: it is cancelled with asyncio.)
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()


class Watch:
    """One call's deadline: which connection it uses, and whether time ran out."""

    def __init__(self) -> None:
        self.expired = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    def attach(self, connection: Any) -> None:
        # The socket itself is kept: http.client drops the connection's reference to it once the
        # headers say "Connection: close", while the body is still being read from it.
        sock = getattr(connection, "sock", None)
        if sock is None:  # still connecting: connect() reports again when it has one
            return
        with self._lock:
            self._socket = sock
            if self.expired:
                _cut(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._socket is not None:
                _cut(self._socket)


def _cut(sock: socket.socket) -> None:
    with suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


class _Watched:
    """Mixed into urllib3's connections: report to the calling thread's watch."""

    def _report(self) -> None:
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.attach(self)

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._report()

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._report()  # a kept-alive connection is reused without connect()
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections :func:`overall_deadline` can cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


@contextmanager
def overall_deadline(seconds: float) -> Iterator[Watch]:
    """Cut this thread's request (through a :class:`DeadlineAdapter`) after ``seconds``."""
    watch = Watch()
    timer = threading.Timer(seconds, watch.expire)
    timer.daemon = True
    previous = getattr(_current, "watch", None)
    _current.watch = watch
    timer.start()
    try:
        yield watch
    finally:
        timer.cancel()
        _current.watch = previous
