"""The WaveSpeed API as the local server plays it: routing, auth, faults, the account and the
control plane. The route families live beside it: predictions.py, uploads.py, account.py."""

from __future__ import annotations

import asyncio
import hmac
import html
import ipaddress
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_magi.testing.account import (
    Account,
    BillingRecord,
)
from airflow_provider_magi.testing.config import MAGI_MODEL, SYNC_MODE_LIMIT, ServerConfig
from airflow_provider_magi.testing.faults import Fault, FaultPlan, Route
from airflow_provider_magi.testing.http import Request, Response
from airflow_provider_magi.testing.predictions import (
    _HISTORY_ROUTE,
    _MODEL_ROUTE,
    _OUTPUT_ROUTE,
    _RESULT_ROUTE,
    PredictionRoutes,
    StoredPrediction,
    seconds_asked,
    validate_inputs,
)
from airflow_provider_magi.testing.responses import (
    JSON_HEADERS,
    envelope_error,
    envelope_ok,
    format_retry_after,
    json_object,
    json_response,
)
from airflow_provider_magi.testing.uploads import (
    _MEDIA_ROUTE,
    _UPLOAD_PUT_ROUTE,
    _UPLOAD_ROUTE,
    _UPLOAD_TICKET_ROUTE,
    MAX_MEDIA_KEPT_BYTES,
    UploadRoutes,
)
from airflow_provider_magi.testing.webhooks import WebhookSender

__all__ = [
    "MAGI_MODEL",
    "MAX_MEDIA_KEPT_BYTES",
    "SYNC_MODE_LIMIT",
    "BillingRecord",
    "RecordedRequest",
    "ServerConfig",
    "StoredPrediction",
    "WaveSpeedApp",
    "envelope_error",
    "envelope_ok",
    "json_object",
    "json_response",
    "validate_inputs",
]

_WEBHOOK_SECRET_ROUTE = "/api/v3/webhook/secret"


def is_loopback(host: str) -> bool:
    """Whether a bind address serves this machine only (a wildcard or any other address does not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_BALANCE_ROUTE = "/api/v3/balance"


_BILLINGS_ROUTE = "/api/v3/billings/search"


_USAGE_ROUTE = "/api/v3/user/usage_stats"


@dataclass
class RecordedRequest:
    """One request as the server saw it (never the key itself: only whether auth was sent/valid)."""

    method: str
    route: str
    path: str
    status: int
    sent_authorization: bool
    prediction_id: str | None = None
    model: str | None = None  # submits: the model id the path named
    client: str = ""  # ip:port, one per TCP connection
    at: float = field(default_factory=time.time)
    query: dict[str, str] = field(default_factory=dict)
    body_bytes: int = 0
    json: Any = None  # a JSON body of up to MAX_RECORDED_JSON bytes, as sent (uploads: only their size)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


MAX_RECORDED_JSON = 16 * 1024


def recorded_json(request: Request) -> Any:
    """What a JSON request carried, for ``/_testing/requests``; None for other or larger bodies."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        return None
    if not request.body or len(request.body) > MAX_RECORDED_JSON:
        return None
    try:
        return json.loads(request.body)
    except (ValueError, RecursionError):
        return None


class WaveSpeedApp(PredictionRoutes, UploadRoutes):
    """Request handler for :class:`~airflow_provider_magi.testing.http.HTTPServer`."""

    def __init__(self, config: ServerConfig, faults: FaultPlan | None = None) -> None:
        self.config = config
        self.faults = faults or FaultPlan()
        self.predictions: dict[str, StoredPrediction] = {}
        self.media: dict[str, tuple[str, bytes, str]] = {}  # id -> (filename, bytes, content type)
        self.upload_tickets: dict[str, tuple[str, int, str]] = {}  # ticket -> (filename, size, type)
        self.webhooks = WebhookSender(self.faults)
        self.account = Account(
            balance=config.balance,
            prices=config.prices,
            default_price=config.default_price,
            billing_delay=config.billing_delay,
            per_second_prices=config.per_second_prices,
        )
        self._unbilled: set[str] = set()  # predictions that may still be billed
        self._clips: dict[str, asyncio.Task[bytes | None]] = {}  # a prediction's own clip, made once
        self._log: list[RecordedRequest] = []
        self._lock = threading.Lock()
        # The server's clock: ``_skew`` moves its wall clock only (a jump: what was running keeps
        # running); ``_advanced`` is time that passed for everything on it (predictions finish,
        # billing falls due). Both 0 unless a test sets them (``set_clock``, ``advance_clock``).
        self._skew = 0.0
        self._advanced = 0.0

    def monotonic(self) -> float:
        """The server's own elapsed-time clock: what predictions and billing are timed by."""
        return time.monotonic() + self._advanced

    def wall_now(self) -> float:
        """The server's wall clock (Unix time): the times its answers carry."""
        return time.time() + self._skew + self._advanced

    def set_clock(self, unix_time: float) -> None:
        """Make the wall clock read ``unix_time`` now (creation and billing times follow it);
        elapsed times do not change, so nothing finishes or falls due because of the jump."""
        self.settle()  # what was due before the jump is billed at the time it fell due
        self._skew = unix_time - time.time() - self._advanced

    def advance_clock(self, seconds: float) -> None:
        """Let ``seconds`` pass for everything on the server at once: predictions progress,
        billing falls due (at the time it fell due), the wall clock moves on."""
        if seconds < 0:
            raise ValueError(f"the clock only moves forward, got {seconds!r}")
        self._advanced += seconds

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._log)

    def count(self, route: str, *, status: int | None = None, model: str | None = None) -> int:
        """Requests seen on ``route``; with ``status``, only those answered so; with ``model``,
        only submits that named that model (``sand-ai/magi-2/text-to-video``)."""
        return sum(
            1
            for r in self.requests()
            if r.route == route
            and (status is None or r.status == status)
            and (model is None or r.model == model)
        )

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self.predictions.clear()
            self._unbilled.clear()
            self._clips.clear()
        self.account.reset()
        self.faults.replace([])
        self._skew = self._advanced = 0.0

    @property
    def balance(self) -> float:
        """The account's balance in USD, after every billing that is due."""
        self.settle()
        return float(self.account.balance)

    def set_balance(self, usd: float) -> None:
        self.settle()
        self.account.set_balance(usd)

    @property
    def billings(self) -> list[BillingRecord]:
        """Every billing record so far, oldest first."""
        self.settle()
        return self.account.billings

    def price_of(self, model: str, seconds: int | None = None) -> float:
        """What one completed prediction of ``model`` costs; a model priced per second is priced
        for ``seconds`` of video (default: the length it makes when none is asked for)."""
        return float(
            self.account.price_of(
                model, seconds_asked(model, {} if seconds is None else {"duration": seconds})
            )
        )

    def settle(self) -> None:
        """Bill each prediction that completed at least ``billing_delay`` seconds ago, once.

        Billing is worked out when someone looks (an account route, a submit, these properties),
        so it costs nothing per poll and reads the same as if it had happened on time: the record
        carries the time it fell due.
        """
        now = self.monotonic()
        wall_offset = self.wall_now() - now
        delay = self.account.billing_delay
        with self._lock:
            pending = [self.predictions[i] for i in self._unbilled if i in self.predictions]
        for prediction in pending:
            completes = prediction.completes_at()
            if completes is not None and completes + delay > now:
                continue  # running, or completed too recently to be billed
            if completes is not None:
                self.account.bill(
                    prediction.id, prediction.model, prediction.price, completes + delay + wall_offset
                )
            with self._lock:
                self._unbilled.discard(prediction.id)

    def complete_now(self, prediction_id: str) -> None:
        """Make a running prediction finish on its next poll (for tests that measure latency)."""
        prediction = self.predictions[prediction_id]
        prediction.duration = max(0.0, self.monotonic() - prediction.started)

    async def __call__(self, request: Request) -> Response:
        route, handler, match = self._route(request)
        prediction_id = match.group("id") if match is not None and "id" in match.groupdict() else None
        response = await self._handle(request, route, handler, match)
        if route == "admin":  # the control plane is not part of what a test counts
            return response
        with self._lock:
            self._log.append(
                RecordedRequest(
                    method=request.method,
                    route=route,
                    path=request.path,
                    status=0 if response.drop else response.status,
                    sent_authorization="authorization" in request.headers,
                    prediction_id=prediction_id or response.headers.get("x-prediction-id"),
                    model=match.group("model") if route == "submit" and match is not None else None,
                    client=request.client,
                    query=dict(request.query),
                    body_bytes=len(request.body or b""),
                    json=recorded_json(request),
                )
            )
        return response

    def _route(self, request: Request) -> tuple[str, Any, re.Match[str] | None]:
        path = request.path
        if request.method == "POST" and path == _UPLOAD_ROUTE:
            return "upload", self._upload, None
        if request.method == "POST" and path == _UPLOAD_TICKET_ROUTE:  # before the model route
            return "upload_ticket", self._upload_ticket, None
        if request.method == "PUT" and (m := _UPLOAD_PUT_ROUTE.match(path)):
            return "upload_put", self._upload_put, m
        if request.method == "GET" and (m := _MEDIA_ROUTE.match(path)):
            return "media", self._media, m
        if request.method == "POST" and path == _BILLINGS_ROUTE:  # before the model route
            return "billings", self._billings, None
        if request.method == "POST" and path == _USAGE_ROUTE:  # before the model route
            return "usage", self._usage, None
        if request.method == "POST" and (m := _MODEL_ROUTE.match(path)):
            return "submit", self._submit, m
        if request.method == "GET" and (m := _RESULT_ROUTE.match(path)):
            return "result", self._result, m
        if request.method in ("GET", "HEAD") and (m := _OUTPUT_ROUTE.match(path)):
            return "output", self._output, m
        if request.method == "GET" and path == _WEBHOOK_SECRET_ROUTE:
            return "webhook_secret", self._webhook_secret, None
        if request.method == "POST" and path == _HISTORY_ROUTE:  # before the model route
            return "history", self._history, None
        if request.method == "GET" and path == _BALANCE_ROUTE:
            return "balance", self._balance, None
        if path.startswith("/_testing/"):
            return "admin", self._admin, None
        return "unknown", None, None

    async def _handle(self, request: Request, route: str, handler: Any, match: Any) -> Response:
        if handler is None:
            return envelope_error(404, f"No route for {request.method} {request.path}")
        if route == "admin":
            if not is_loopback(self.config.bind_host) and not self._authorized(request):
                # Bound beyond this machine, the control plane (faults, reset, balance, every
                # request seen) is for the key's holder only.
                return envelope_error(401, "Unauthorized: /_testing/* needs the API key off loopback")
            return self._admin(request)
        if route in (
            "submit",
            "result",
            "upload",
            "upload_ticket",
            "history",
            "webhook_secret",
            "balance",
            "billings",
            "usage",
        ) and not self._authorized(request):
            return envelope_error(401, "Unauthorized: invalid or missing API key")
        fault = self.faults.pick(route)  # type: ignore[arg-type]
        if fault is not None:
            early = await self._apply_fault(fault, route)
            if early is not None:
                return early
        response: Response = await handler(request, match)
        if fault is not None and fault.kind == "drop_after_accept" and route == "submit":
            response.drop = True
        if fault is not None and fault.kind == "truncate" and isinstance(response.content_length, int):
            response.truncate_at = response.content_length // 2
        return response

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.config.api_key.encode()
        )

    async def _apply_fault(self, fault: Fault, route: Route | str) -> Response | None:
        kind = fault.kind
        if kind == "slow":
            await asyncio.sleep(fault.delay)
            return None
        if kind == "drop":
            return Response(status=0, drop=True)
        if kind in ("drop_after_accept", "truncate"):
            return None
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = format_retry_after(fault.retry_after)
        if kind == "rate_limit":
            return envelope_error(429, "Too many requests: rate limit exceeded", headers)
        if kind == "status":
            return envelope_error(fault.status, f"Injected error {fault.status}", headers)
        if kind == "html":
            page = f"<html><body><h1>{fault.status} Bad Gateway</h1><p>nginx</p></body></html>"
            return Response(
                status=fault.status, body=page.encode(), headers={"Content-Type": "text/html", **headers}
            )
        if kind == "malformed_json":
            return Response(status=200, body=b'{"code": 200, "data": {"id": ', headers=dict(JSON_HEADERS))
        if kind == "envelope_error":
            body = {"code": fault.status, "message": f"Injected envelope error {fault.status}", "data": None}
            return Response(status=200, body=json.dumps(body).encode(), headers=dict(JSON_HEADERS))
        raise AssertionError(f"unhandled fault kind {kind}")

    async def _webhook_secret(self, request: Request, match: None) -> Response:
        """The secret webhook calls are signed with (``whsec_`` and hex, as the docs show it)."""
        return envelope_ok({"secret": self.webhooks.secret})

    async def _balance(self, request: Request, match: None) -> Response:
        """``GET /api/v3/balance``: ``{balance}`` in USD (docs)."""
        self.settle()
        return envelope_ok(self.account.balance_data())

    async def _billings(self, request: Request, match: None) -> Response:
        """``POST /api/v3/billings/search``: pages of billing records (docs; see account.py)."""
        query = json_object(request)
        if isinstance(query, Response):
            return query
        self.settle()
        answer = self.account.search(query)
        return envelope_error(400, answer) if isinstance(answer, str) else envelope_ok(answer)

    async def _usage(self, request: Request, match: None) -> Response:
        """``POST /api/v3/user/usage_stats``: spend per model and day in a range (docs)."""
        query = json_object(request)
        if isinstance(query, Response):
            return query
        self.settle()
        answer = self.account.usage(query)
        return envelope_error(400, answer) if isinstance(answer, str) else envelope_ok(answer)

    def _admin(self, request: Request) -> Response:
        action = request.path.removeprefix("/_testing/")
        if action == "requests" and request.method == "GET":
            return json_response([r.to_dict() for r in self.requests()])
        if action == "faults" and request.method == "GET":
            return json_response(self.faults.snapshot())
        if action == "faults" and request.method in ("PUT", "POST"):
            try:
                raw = json.loads(request.body or b"[]")
                faults = [Fault.from_dict(item) for item in (raw if isinstance(raw, list) else [raw])]
            except (ValueError, TypeError, RecursionError) as error:
                return json_response({"error": str(error)}, status=400)
            if request.method == "PUT":
                self.faults.replace(faults)
            else:
                for fault in faults:
                    self.faults.add(fault)
            return json_response(self.faults.snapshot())
        if action == "reset" and request.method == "POST":
            self.reset()
            return json_response({"reset": True})
        if action == "account" and request.method == "GET":
            return json_response(
                {"balance": self.balance, "billings": [record.to_item() for record in self.billings]}
            )
        if action == "balance" and request.method == "POST":
            try:
                self.set_balance(float(request.query.get("usd", "")))
            except ValueError:
                return json_response(
                    {"error": "usage: POST /_testing/balance?usd=<a finite amount of USD>"}, status=400
                )
            return json_response({"balance": self.balance})
        if action == "clock" and request.method == "POST":
            try:
                if "at" in request.query:
                    self.set_clock(float(request.query["at"]))
                if "advance" in request.query:
                    self.advance_clock(float(request.query["advance"]))
            except ValueError:
                return json_response(
                    {"error": "usage: POST /_testing/clock?at=<Unix time>&advance=<seconds >= 0>"}, status=400
                )
            return json_response({"now": self.wall_now()})
        if action == "forget" and request.method == "POST":
            self.settle()  # a prediction deleted later stays billed, as on the real service
            with self._lock:
                forgotten = self.predictions.pop(request.query.get("id", ""), None)
            return json_response({"forgotten": forgotten is not None})
        if action == "complete" and request.method == "POST":
            prediction_id = request.query.get("id", "")
            if prediction_id not in self.predictions:
                return json_response({"error": f"unknown prediction {prediction_id}"}, status=404)
            self.complete_now(prediction_id)
            return json_response({"completed": prediction_id})
        if action.startswith("predictions/") and request.method == "GET":
            return self._prediction_page(action.removeprefix("predictions/"))
        return json_response({"error": f"unknown admin call {request.method} {request.path}"}, status=404)

    def _prediction_page(self, prediction_id: str) -> Response:
        """A page a person can open in a browser (no key: a browser cannot send one), what the
        task's "WaveSpeed prediction" link opens against this server: WaveSpeed's own API pages
        need the key, and its site's predictions page is for the real service only."""
        prediction = self.predictions.get(prediction_id)
        if prediction is None:
            body = f"<h1>No prediction {html.escape(prediction_id)} on this local server</h1>"
            return _html_page(404, "Not found", body)
        data = self._prediction_data(prediction)
        rows = [
            ("Prediction", data["id"]),
            ("Model", data["model"]),
            ("Status", data["status"]),
            ("Created", data["created_at"]),
            ("Prompt", str(prediction.inputs.get("prompt", ""))),
        ]
        if data["error"]:
            rows.append(("Error", data["error"]))
        table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        outputs = "".join(
            f'<li><a href="{html.escape(url)}">{html.escape(url)}</a></li>' for url in data["outputs"]
        )
        body = (
            f"<h1>Prediction {html.escape(prediction.id)}</h1><table>{table}</table>"
            f"<h2>Outputs</h2><ul>{outputs or '<li>none yet</li>'}</ul>"
            "<p>Served by the local WaveSpeed server (airflow_provider_magi.testing), not by WaveSpeed.</p>"
        )
        return _html_page(200, f"Prediction {prediction.id}", body)


def _html_page(status: int, title: str, body: str) -> Response:
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
    page += f"<body>{body}</body></html>"
    return Response(
        status=status,
        body=page.encode(),
        headers={"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": "default-src 'none'"},
    )
