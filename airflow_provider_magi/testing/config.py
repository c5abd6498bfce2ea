"""What the local server is told at start: key, pace, models, prices. Shared by its route families."""

from __future__ import annotations

from dataclasses import dataclass, field

from airflow_provider_magi.testing.account import (
    DEFAULT_BALANCE_USD,
    DEFAULT_PRICE_USD,
)

MAGI_MODEL = "wavespeed-ai/magi-1-24b"


SEED_MIN, SEED_MAX = -1, 2147483647


SYNC_MODE_LIMIT = 30.0  # seconds a sync-mode submit may hold its connection before answering


@dataclass
class ServerConfig:
    api_key: str = "local-test-key"
    completion_seconds: float = 3.0
    output_bytes: int | None = None  # default: the sample video's own size
    public_base_url: str = ""  # set once the port is known
    models: tuple[str, ...] = (MAGI_MODEL,)  # the only ids a submit may name; others answer 404
    sync_mode_limit: float = SYNC_MODE_LIMIT
    balance: float = DEFAULT_BALANCE_USD  # USD the account starts with
    prices: dict[str, float] = field(default_factory=dict)  # model -> USD per completed prediction
    default_price: float = DEFAULT_PRICE_USD  # a stand-in: the real prices are on WaveSpeed's site
    billing_delay: float = 0.0  # seconds from completion to the billing record (and deduction)
    bind_host: str = "127.0.0.1"  # off loopback, /_testing/* needs the API key
