"""What the local server is told at start: key, pace, models, prices. Shared by its route families."""

from __future__ import annotations

from dataclasses import dataclass, field

from airflow_provider_magi.models import CATALOGUE
from airflow_provider_magi.testing.account import (
    DEFAULT_BALANCE_USD,
    DEFAULT_PRICE_USD,
)

MAGI_MODEL = "wavespeed-ai/magi-1-24b"
# What the server serves unless told otherwise: every model of the catalogue (MAGI-1 24B and
# MAGI-2 text-to-video and image-to-video).
SERVED_MODELS: tuple[str, ...] = tuple(CATALOGUE)
# Models priced per second of video (the catalogue's rule): USD per second.
PER_SECOND_PRICES: dict[str, float] = {
    spec.id: spec.usd_per_second for spec in CATALOGUE.values() if spec.usd_per_second is not None
}


SEED_MIN, SEED_MAX = -1, 2147483647


SYNC_MODE_LIMIT = 30.0  # seconds a sync-mode submit may hold its connection before answering


@dataclass
class ServerConfig:
    api_key: str = "local-test-key"
    completion_seconds: float = 3.0
    output_bytes: int | None = None  # default: the sample video's own size
    public_base_url: str = ""  # set once the port is known
    models: tuple[str, ...] = SERVED_MODELS  # the only ids a submit may name; others answer 404
    sync_mode_limit: float = SYNC_MODE_LIMIT
    balance: float = DEFAULT_BALANCE_USD  # USD the account starts with
    prices: dict[str, float] = field(default_factory=dict)  # model -> USD per completed prediction
    # model -> USD per second of video asked for (a flat entry in ``prices`` wins)
    per_second_prices: dict[str, float] = field(default_factory=lambda: dict(PER_SECOND_PRICES))
    default_price: float = DEFAULT_PRICE_USD  # a stand-in: the real prices are on WaveSpeed's site
    billing_delay: float = 0.0  # seconds from completion to the billing record (and deduction)
    bind_host: str = "127.0.0.1"  # off loopback, /_testing/* needs the API key
