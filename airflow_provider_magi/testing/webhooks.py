"""Webhook calls as WaveSpeed makes them, from the local server (which shares no code with the
client side: this signs on its own, so a bug in the provider's verifier cannot hide here).

When a prediction with ``?webhook=<url>`` reaches ``completed`` or ``failed``, the server POSTs
the prediction object (no envelope) with ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature: v3,<hex HMAC-SHA256 of "id.timestamp.body">`` keyed with the secret
(``GET /api/v3/webhook/secret``) minus its ``whsec_`` prefix. Calls go to loopback addresses
only (this server never sends traffic elsewhere); a non-2xx answer or a refused connection is
retried a few times. Never with the API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from airflow_provider_magi.testing.faults import FaultPlan

ATTEMPTS = 3
_BACKOFF = 0.2
_TERMINAL = ("completed", "failed")


def webhook_problem(url: str | None) -> str | None:
    """Why a submit's ``webhook`` is refused, or None. Stricter than known: https anywhere, or
    plain http only to loopback (the real service's rule for http is not documented)."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return None
    return "webhook must be an https URL"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Delivery:
    """One attempt to call a webhook, as recorded for tests."""

    prediction_id: str
    url: str
    attempt: int
    status: int  # 0: no answer
    at: float = field(default_factory=time.time)


class WebhookSender:
    """Watches predictions that asked for a webhook and calls it once they end."""

    def __init__(self, faults: FaultPlan) -> None:
        self.secret = "whsec_" + secrets.token_hex(24)
        self.faults = faults
        self.deliveries: list[Delivery] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def watch(self, prediction: Any, render: Callable[[Any], dict[str, Any]]) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver_when_done(prediction, render))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _deliver_when_done(self, prediction: Any, render: Callable[[Any], dict[str, Any]]) -> None:
        while prediction.status(time.monotonic()) not in _TERMINAL:
            await asyncio.sleep(0.05)
        url = prediction.webhook
        host = urlsplit(url).hostname or ""
        if not _is_loopback(host):  # accepted like the real API, but this server stays on loopback
            self.deliveries.append(Delivery(prediction.id, url, 0, 0))
            return
        body = json.dumps(render(prediction)).encode()
        async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
            for attempt in range(1, ATTEMPTS + 1):
                headers = self._signed_headers(body)
                try:
                    answer = await client.post(url, content=body, headers=headers)
                    status = answer.status_code
                except httpx.HTTPError:
                    status = 0
                self.deliveries.append(Delivery(prediction.id, url, attempt, status))
                if 200 <= status < 300:
                    return
                await asyncio.sleep(_BACKOFF * attempt)

    def _signed_headers(self, body: bytes) -> dict[str, str]:
        webhook_id = f"msg_{uuid.uuid4().hex}"
        timestamp = str(int(time.time()))
        key = self.secret.removeprefix("whsec_").encode()
        digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        fault = self.faults.pick("webhook")
        if fault is not None and fault.kind == "corrupt_signature":
            digest = digest[:-1] + ("0" if digest[-1] != "0" else "1")
        return {
            "Content-Type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": f"v3,{digest}",
        }
