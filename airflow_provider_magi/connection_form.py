"""The connection form, in one place: provider info declares it (Airflow 3.2+), the hook's
classmethod serves older releases. Plain data, so get_provider_info stays cheap."""

from __future__ import annotations

from typing import Any

CONN_FIELDS: dict[str, Any] = {
    "connect_timeout": {
        "label": "Connect timeout (s)",
        "schema": {"type": ["number", "null"], "default": 10},
    },
    "read_timeout": {
        "label": "Read timeout (s)",
        "schema": {"type": ["number", "null"], "default": 60},
    },
    "request_timeout": {
        "label": "Whole-request timeout (s)",
        "schema": {"type": ["number", "null"], "default": 120},
    },
    "download_timeout": {
        "label": "Longest download attempt (s)",
        "schema": {"type": ["number", "null"], "default": 1800},
    },
    "max_retries": {
        "label": "Retries for transient errors",
        "schema": {"type": ["integer", "null"], "default": 5},
    },
    "max_retry_wait": {
        "label": "Longest wait between retries (s)",
        "schema": {"type": ["number", "null"], "default": 60},
    },
    "max_polls_per_second": {
        "label": "Polls per second per triggerer (all waiting tasks)",
        "schema": {"type": ["number", "null"], "default": 20},
    },
    # Money (README "What it costs"): empty means no guard.
    "min_balance_usd": {
        "label": "Minimum balance to submit (USD, empty: no floor)",
        "schema": {"type": ["number", "null"]},
    },
    "daily_budget_usd": {
        "label": "Daily budget per UTC day (USD, empty: none)",
        "schema": {"type": ["number", "null"]},
    },
    "cost_lookup_seconds": {
        "label": "Seconds to look for a finished video's price (0: off)",
        "schema": {"type": ["number", "null"], "default": 10},
    },
    # Never pay twice (README "Retries and money"): empty keeps the ledger in Airflow's own store.
    "ledger_path": {
        "label": "Ledger location (s3://, gs://, file://; empty: Airflow's own store)",
        "schema": {"type": ["string", "null"]},
    },
}

RELABELING = {"password": "API key", "host": "Base URL"}
PLACEHOLDERS = {
    "password": "WaveSpeed API key (WAVESPEED_API_KEY)",
    "host": "https://api.wavespeed.ai (leave empty for the real API)",
}
# The extras above have their own fields where Airflow renders conn-fields (3.2+), so the raw
# Extra box is hidden there; older forms keep it, as the only way to set them.
HIDDEN_FIELDS = ["schema", "login", "port", "extra"]
HIDDEN_FIELDS_WITHOUT_CONN_FIELDS = ["schema", "login", "port"]
EXTRA_PLACEHOLDER = (
    '{"read_timeout": 60, "request_timeout": 120, "max_retries": 5, "max_retry_wait": 60, '
    '"max_polls_per_second": 20, "min_balance_usd": 5, "daily_budget_usd": 50, '
    '"cost_lookup_seconds": 10}'
)

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": HIDDEN_FIELDS,
    "relabeling": RELABELING,
    "placeholders": PLACEHOLDERS,
}
