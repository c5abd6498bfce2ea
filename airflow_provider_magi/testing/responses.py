"""The local server's answers: JSON, WaveSpeed's envelope, and the checks of a JSON request body."""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_magi.testing.http import Request, Response

JSON_HEADERS = {"Content-Type": "application/json"}


def json_object(request: Request) -> dict[str, Any] | Response:
    """A request's JSON object body, or the 400 that refuses it. Stricter than known: the docs
    require JSON, so a body not sent as ``application/json`` is refused (the real service may
    guess)."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        return envelope_error(400, "Content-Type must be application/json")
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        return envelope_error(400, "Request body is not valid JSON")
    if not isinstance(body, dict):
        return envelope_error(400, "Request body must be a JSON object")
    return body


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status=status, body=json.dumps(payload).encode(), headers=dict(JSON_HEADERS))


def envelope_ok(data: dict[str, Any]) -> Response:
    return json_response({"code": 200, "message": "success", "data": data})


def envelope_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = json_response({"code": status, "message": message, "data": None}, status=status)
    response.headers.update(headers or {})
    return response


def format_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:.3f}"
