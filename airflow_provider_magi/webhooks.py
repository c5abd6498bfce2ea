"""Verifying WaveSpeed webhook calls, for users who run their own receiver.

WaveSpeed signs each call: headers ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature: v3,<hex>``, the hex being HMAC-SHA256 over ``"{id}.{timestamp}.{raw body}"``
keyed with the secret from ``GET /api/v3/webhook/secret`` minus its ``whsec_`` prefix (used as
text, not base64-decoded). Calls older than five minutes are refused, so a captured call cannot
be replayed later; inside those five minutes, drop a ``webhook-id`` you have already handled
(see docs/operating.md). Anything malformed raises ``MagiWebhookError``, never another error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from typing import Any

from airflow_provider_magi.exceptions import MagiError

DEFAULT_TOLERANCE_SECONDS = 300
_SIGNATURE_VERSION = "v3"
_UNIX_SECONDS = re.compile(r"^[0-9]{1,12}$")  # up to year 33658: any longer is not a timestamp


class MagiWebhookError(MagiError):
    """The call is not a genuine, fresh WaveSpeed webhook."""


def _signing_key(secret: Any) -> bytes:
    """The HMAC key; an empty one would let anyone sign, so it is refused."""
    if not isinstance(secret, str) or not secret.removeprefix("whsec_").strip():
        raise MagiWebhookError(
            "the webhook secret is empty: pass the secret from GET /api/v3/webhook/secret "
            "(with or without its whsec_ prefix)"
        )
    return secret.removeprefix("whsec_").encode()


def sign_webhook(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header WaveSpeed would send (also used by the local server)."""
    key = _signing_key(secret)
    message = f"{webhook_id}.{timestamp}.".encode() + body
    return f"{_SIGNATURE_VERSION},{hmac.new(key, message, hashlib.sha256).hexdigest()}"


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """Return the prediction the webhook carries, or raise ``MagiWebhookError`` saying why not.

    :param headers: The request's headers (any case).
    :param body: The raw request body, exactly as received (not re-serialised JSON).
    :param secret: Your webhook secret, with or without its ``whsec_`` prefix.
    """
    signing_key = _signing_key(secret)
    if not isinstance(body, (bytes, bytearray)):
        raise MagiWebhookError("pass the raw request body as bytes, exactly as received")
    lowered = {_text(key).lower(): _text(value) for key, value in headers.items()}
    missing = [
        name for name in ("webhook-id", "webhook-timestamp", "webhook-signature") if not lowered.get(name)
    ]
    if missing:
        raise MagiWebhookError(f"webhook call without {', '.join(missing)} header(s)")
    stamp = lowered["webhook-timestamp"].strip()
    if not _UNIX_SECONDS.match(stamp):
        raise MagiWebhookError("webhook-timestamp is not Unix seconds")
    timestamp = int(stamp)
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance:
        raise MagiWebhookError(f"webhook call is {age:.0f}s old, outside the {tolerance:.0f}s tolerance")
    message = f"{lowered['webhook-id']}.{timestamp}.".encode() + bytes(body)
    expected = f"{_SIGNATURE_VERSION},{hmac.new(signing_key, message, hashlib.sha256).hexdigest()}"
    offered = [part.strip() for part in lowered["webhook-signature"].split(" ")]
    # Compared as bytes: compare_digest refuses non-ASCII text, and a header may carry anything.
    if not any(hmac.compare_digest(expected.encode(), candidate.encode()) for candidate in offered):
        raise MagiWebhookError("webhook signature does not match: wrong secret or altered body")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise MagiWebhookError("webhook body is not JSON") from None
    if not isinstance(payload, dict):
        raise MagiWebhookError("webhook body is not a JSON object")
    return payload


def _text(value: Any) -> str:
    """A header name or value as text; bytes are decoded as HTTP does (latin-1)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    if isinstance(value, str):
        return value
    raise MagiWebhookError(f"webhook header of type {type(value).__name__}; pass the request's headers")
