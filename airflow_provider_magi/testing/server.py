"""Run the local WaveSpeed server: in a background thread for tests, or in the foreground."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

from airflow_provider_magi.testing.account import DEFAULT_BALANCE_USD, DEFAULT_PRICE_USD
from airflow_provider_magi.testing.app import (
    MAGI_MODEL,
    SYNC_MODE_LIMIT,
    BillingRecord,
    RecordedRequest,
    ServerConfig,
    WaveSpeedApp,
)
from airflow_provider_magi.testing.config import PER_SECOND_PRICES, SERVED_MODELS
from airflow_provider_magi.testing.faults import Fault, FaultPlan
from airflow_provider_magi.testing.http import HTTPServer


class LocalWaveSpeedServer:
    """A WaveSpeed-compatible server on a loopback port, for tests and offline DAG runs.

    >>> with LocalWaveSpeedServer(api_key="k", completion_seconds=1) as server:
    ...     server.base_url  # doctest: +SKIP
    'http://127.0.0.1:43817'
    """

    def __init__(
        self,
        *,
        api_key: str = "local-test-key",
        completion_seconds: float = 3.0,
        models: tuple[str, ...] | list[str] | None = None,
        sync_mode_limit: float | None = None,
        output_bytes: int | None = None,
        faults: list[Fault] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        balance: float = DEFAULT_BALANCE_USD,
        prices: dict[str, float] | None = None,
        default_price: float = DEFAULT_PRICE_USD,
        billing_delay: float = 0.0,
        advertise_url: str | None = None,
        per_second_prices: dict[str, float] | None = None,
    ) -> None:
        """``balance`` is the account's starting USD; ``prices`` maps a model id to the USD one
        completed prediction of it costs (``default_price`` for any other; a stand-in, the real
        prices are on WaveSpeed's pricing page); each completed prediction is billed once,
        ``billing_delay`` seconds after it completed. A model priced per second (MAGI-2: the
        catalogue's $0.08, or ``per_second_prices={model: usd}``) costs that times the
        ``duration`` asked for, unless ``prices`` names it (then its flat price wins). ``models``
        defaults to every catalogue model (MAGI-1 24B, MAGI-2 text- and image-to-video). A
        submit the balance cannot pay for is refused (403, "Insufficient balance") and starts
        nothing.

        ``advertise_url`` is the base its answers put in output, upload and result URLs. By
        default the bound address, except that a wildcard bind (``0.0.0.0``, ``::``) advertises
        ``127.0.0.1``: ``http://0.0.0.0:...`` is no address a client can fetch (and the
        provider's URL rule refuses it)."""
        self._advertise_url = advertise_url.rstrip("/") if advertise_url else None
        self.app = WaveSpeedApp(
            ServerConfig(
                api_key=api_key,
                completion_seconds=completion_seconds,
                output_bytes=output_bytes,
                models=tuple(models) if models else SERVED_MODELS,
                sync_mode_limit=SYNC_MODE_LIMIT if sync_mode_limit is None else sync_mode_limit,
                balance=balance,
                prices=dict(prices or {}),
                default_price=default_price,
                billing_delay=billing_delay,
                bind_host=host,
                per_second_prices=dict(PER_SECOND_PRICES if per_second_prices is None else per_second_prices),
            ),
            FaultPlan(faults, seed=seed),
        )
        self._http = HTTPServer(self.app, host=host, port=port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    @property
    def api_key(self) -> str:
        return self.app.config.api_key

    @property
    def base_url(self) -> str:
        if self._advertise_url:
            return self._advertise_url
        host = "127.0.0.1" if self._http.host in ("0.0.0.0", "::", "") else self._http.host
        return f"http://{host}:{self._http.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.app.requests()

    def count(self, route: str, *, status: int | None = None, model: str | None = None) -> int:
        """Requests seen on ``route`` (``model``: only submits naming that model)."""
        return self.app.count(route, status=status, model=model)

    def set_faults(self, faults: list[Fault]) -> None:
        self.app.faults.replace(faults)

    @property
    def balance(self) -> float:
        """The account's balance in USD now (every billing that is due deducted)."""
        return self.app.balance

    def set_balance(self, usd: float) -> None:
        self.app.set_balance(usd)

    @property
    def billings(self) -> list[BillingRecord]:
        """The billing records so far, oldest first."""
        return self.app.billings

    def now(self) -> float:
        """The server's wall clock (Unix time): creation and billing times are on it."""
        return self.app.wall_now()

    def set_clock(self, unix_time: float) -> None:
        """Make the server's clock read ``unix_time`` now (say a few seconds before a UTC
        midnight); predictions keep running and nothing falls due because of the jump."""
        self.app.set_clock(unix_time)

    def advance_clock(self, seconds: float) -> None:
        """Let ``seconds`` pass on the server without waiting for them: predictions progress
        and billing falls due (``billing_delay`` after completion) as if they had passed."""
        self.app.advance_clock(seconds)

    def price_of(self, model: str = MAGI_MODEL, seconds: int | None = None) -> float:
        """What one completed prediction of ``model`` costs on this server, in USD; a model
        priced per second is priced for ``seconds`` of video (default: its default length)."""
        return self.app.price_of(model, seconds)

    def connection_uri_json(self, conn_type: str = "magi") -> dict[str, Any]:
        """The connection as ``AIRFLOW_CONN_*`` JSON: point any DAG at this server."""
        return {"conn_type": conn_type, "host": self.base_url, "password": self.api_key}

    # ------------------------------------------------------------ lifecycle

    async def serve(self) -> None:
        await self._http.start()
        self.app.config.public_base_url = self.base_url

    def start(self) -> LocalWaveSpeedServer:
        self._thread = threading.Thread(target=self._run, name="magi-local-server", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._startup_error is not None:
            raise RuntimeError(f"local WaveSpeed server did not start: {self._startup_error}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            future = asyncio.run_coroutine_threadsafe(self._stop_all(), self._loop)
            future.result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    async def _stop_all(self) -> None:
        await self.app.webhooks.close()  # predictions that never end would wait forever
        await self._http.stop()

    @property
    def webhook_secret(self) -> str:
        return self.app.webhooks.secret

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self.serve())
        except BaseException as error:  # reported to start()
            self._startup_error = error
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def __enter__(self) -> LocalWaveSpeedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
