"""The WaveSpeed prediction API as the local server plays it: routes, validation, lifecycle."""

from __future__ import annotations

import asyncio
import email.policy
import hmac
import ipaddress
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.parser import BytesParser
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_magi.testing import clips
from airflow_provider_magi.testing.account import (
    DEFAULT_BALANCE_USD,
    DEFAULT_PRICE_USD,
    Account,
    BillingRecord,
)
from airflow_provider_magi.testing.faults import Directives, Fault, FaultPlan, Route, parse_directives
from airflow_provider_magi.testing.http import Request, Response
from airflow_provider_magi.testing.video import aiter_video, video_size
from airflow_provider_magi.testing.webhooks import WebhookSender, webhook_problem

MAGI_MODEL = "wavespeed-ai/magi-1-24b"
SEED_MIN, SEED_MAX = -1, 2147483647
# Model ids have two or three parts: wavespeed-ai/magi-1-24b, wavespeed-ai/z-image/turbo.
_MODEL_ROUTE = re.compile(r"^/api/v3/(?P<model>[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)?)$")
SYNC_MODE_LIMIT = 30.0  # seconds a sync-mode submit may hold its connection before answering
# Both forms the docs show: ".../result" and, newer, the bare prediction path.
_RESULT_ROUTE = re.compile(r"^/api/v3/predictions/(?P<id>[^/]+)(?:/result)?$")
_OUTPUT_ROUTE = re.compile(r"^/outputs/(?P<id>[^/]+)/(?P<index>\d+)\.mp4$")
_UPLOAD_ROUTE = "/api/v3/media/upload/binary"  # the older multipart form
_UPLOAD_TICKET_ROUTE = "/api/v3/media/uploads"  # the two-step form the official SDK uses
_UPLOAD_PUT_ROUTE = re.compile(r"^/uploads/(?P<ticket>[0-9a-f]{32})$")
_HISTORY_ROUTE = "/api/v3/predictions"
_WEBHOOK_SECRET_ROUTE = "/api/v3/webhook/secret"
_BALANCE_ROUTE = "/api/v3/balance"
_BILLINGS_ROUTE = "/api/v3/billings/search"
_USAGE_ROUTE = "/api/v3/user/usage_stats"
# The history filter's statuses (docs); "processing" also matches predictions not yet started.
_HISTORY_STATUSES = {
    "completed": {"completed"},
    "failed": {"failed"},
    "processing": {"created", "processing"},
}
MAX_MEDIA_BYTES = 200 * 2**20  # the SDK's cap for any upload; images keep MAX_UPLOAD_BYTES
_MEDIA_TYPES = ("image/", "video/", "audio/")
_MEDIA_ROUTE = re.compile(r"^/media/(?P<id>[0-9a-f]+)/(?P<name>[^/]+)$")
MAX_UPLOAD_BYTES = 20 * 2**20
# All uploads the server holds at once; the oldest go first (a long-running server stays bounded).
MAX_MEDIA_KEPT_BYTES = 64 * 2**20
_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass
class RecordedRequest:
    """One request as the server saw it (never the key itself: only whether auth was sent/valid)."""

    method: str
    route: str
    path: str
    status: int
    sent_authorization: bool
    prediction_id: str | None = None
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


@dataclass
class StoredPrediction:
    id: str
    model: str
    inputs: dict[str, Any]
    directives: Directives
    created_at: str
    started: float
    duration: float
    webhook: str | None = None
    completed_at: float | None = None
    price: Decimal = Decimal(0)  # what completing it costs, fixed at submit

    def completes_at(self) -> float | None:
        """The monotonic time it completes (or completed); None if it never will."""
        d = self.directives
        if d.status or d.never_finish or d.fail:
            return None
        return self.started + self.duration

    def status(self, now: float) -> str:
        d = self.directives
        if d.status:
            return d.status
        elapsed = now - self.started
        if d.never_finish or elapsed < self.duration:
            return "created" if elapsed < min(0.5, self.duration / 4) else "processing"
        return "failed" if d.fail else "completed"


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


class WaveSpeedApp:
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
        )
        self._unbilled: set[str] = set()  # predictions that may still be billed
        self._clips: dict[str, asyncio.Task[bytes | None]] = {}  # image-to-video clips, made once
        self._log: list[RecordedRequest] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------ inspection (thread-safe)

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._log)

    def count(self, route: str, *, status: int | None = None) -> int:
        return sum(1 for r in self.requests() if r.route == route and (status is None or r.status == status))

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self.predictions.clear()
            self._unbilled.clear()
            self._clips.clear()
        self.account.reset()
        self.faults.replace([])

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

    def price_of(self, model: str) -> float:
        return float(self.account.price_of(model))

    def settle(self) -> None:
        """Bill each prediction that completed at least ``billing_delay`` seconds ago, once.

        Billing is worked out when someone looks (an account route, a submit, these properties),
        so it costs nothing per poll and reads the same as if it had happened on time: the record
        carries the time it fell due.
        """
        now = time.monotonic()
        wall_offset = time.time() - now
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
        prediction.duration = max(0.0, time.monotonic() - prediction.started)

    # ------------------------------------------------------------ dispatch

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
            headers["Retry-After"] = _format_retry_after(fault.retry_after)
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
            return Response(status=200, body=b'{"code": 200, "data": {"id": ', headers=_JSON)
        if kind == "envelope_error":
            body = {"code": fault.status, "message": f"Injected envelope error {fault.status}", "data": None}
            return Response(status=200, body=json.dumps(body).encode(), headers=_JSON)
        raise AssertionError(f"unhandled fault kind {kind}")

    # ------------------------------------------------------------ routes

    async def _submit(self, request: Request, match: re.Match[str]) -> Response:
        model = match.group("model")
        if model not in self.config.models:
            known = ", ".join(self.config.models)
            return envelope_error(404, f"Model {model!r} not found (this server knows: {known})")
        inputs = json_object(request)
        if isinstance(inputs, Response):
            return inputs
        sync_mode = inputs.pop("enable_sync_mode", False) is True
        problem = validate_inputs(model, inputs) or webhook_problem(request.query.get("webhook"))
        if problem:
            return envelope_error(400, problem)
        self.settle()
        if not self.account.can_afford(model):
            # Stricter than known: the docs do not say how a submit without the balance for it is
            # answered; 403 is what has been seen for "no permission or not enough balance".
            return envelope_error(403, "Insufficient balance")
        directives = parse_directives(str(inputs.get("prompt", "")))
        prediction = StoredPrediction(
            id=uuid.uuid4().hex,
            model=model,
            inputs=inputs,
            directives=directives,
            created_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            started=time.monotonic(),
            duration=directives.duration
            if directives.duration is not None
            else self.config.completion_seconds,
            webhook=request.query.get("webhook"),
            price=self.account.price_of(model),
        )
        with self._lock:
            self.predictions[prediction.id] = prediction
            self._unbilled.add(prediction.id)
        self.account.submitted(prediction.id, model, time.time())
        if prediction.webhook:
            self.webhooks.watch(prediction, self._prediction_data)
        if sync_mode:
            return await self._answer_when_done(prediction)
        response = envelope_ok(self._prediction_data(prediction))
        response.headers["x-prediction-id"] = prediction.id
        return response

    async def _answer_when_done(self, prediction: StoredPrediction) -> Response:
        """Sync mode: hold the answer until the prediction ends, up to ``sync_mode_limit``; then
        answer what the SDK recognises as a sync timeout (status ``processing``, the error text
        "Sync mode timed out"); the prediction keeps running and is polled as usual."""
        deadline = time.monotonic() + self.config.sync_mode_limit
        while prediction.status(time.monotonic()) not in ("completed", "failed"):
            if time.monotonic() >= deadline:
                data = self._prediction_data(prediction)
                data["error"] = "Sync mode timed out; query the result later"
                response = envelope_ok(data)
                response.headers["x-prediction-id"] = prediction.id
                return response
            await asyncio.sleep(0.05)
        response = envelope_ok(self._prediction_data(prediction))
        response.headers["x-prediction-id"] = prediction.id
        return response

    async def _upload(self, request: Request, match: None) -> Response:
        """``multipart/form-data`` with a ``file`` field, as WaveSpeed's binary media upload takes."""
        if len(request.body) > MAX_UPLOAD_BYTES:
            return envelope_error(413, f"File too large: the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
        part = _multipart_file(request.headers.get("content-type", ""), request.body)
        if part is None:
            return envelope_error(400, "Expected multipart/form-data with a 'file' field")
        filename, content, content_type = part
        if not content_type.startswith(_MEDIA_TYPES):  # the docs list image, video and audio
            return envelope_error(400, "Only image, video and audio files can be uploaded")
        media_id = uuid.uuid4().hex
        safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "upload"
        self._keep_media(media_id, (safe_name, content, content_type))
        return envelope_ok(
            {
                "type": content_type.split("/")[0],
                "download_url": f"{self.config.public_base_url}/media/{media_id}/{safe_name}",
                "filename": safe_name,
                "size": len(content),
            }
        )

    async def _upload_ticket(self, request: Request, match: None) -> Response:
        """Step one of the SDK's upload: JSON ``{filename, size, content_type}`` in, a PUT
        instruction and the future download URL out. The PUT goes to a path that, like the
        output URLs, needs no key (on the real service it is another host)."""
        ticket = json_object(request)
        if isinstance(ticket, Response):
            return ticket
        filename = ticket.get("filename")
        size = ticket.get("size")
        content_type = str(ticket.get("content_type") or "")
        if not isinstance(filename, str) or not filename.strip():
            return envelope_error(400, "filename is required")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            return envelope_error(400, "size must be a non-negative integer")
        if not content_type.startswith(_MEDIA_TYPES):
            return envelope_error(400, "Only image, video and audio files can be uploaded")
        limit = MAX_UPLOAD_BYTES if content_type.startswith("image/") else MAX_MEDIA_BYTES
        if size > limit:
            return envelope_error(413, f"File too large: the limit is {limit // 2**20} MB")
        ticket_id = uuid.uuid4().hex
        safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "upload"
        with self._lock:
            self.upload_tickets[ticket_id] = (safe_name, size, content_type)
        base = self.config.public_base_url
        return envelope_ok(
            {
                "upload": {
                    "method": "PUT",
                    "url": f"{base}/uploads/{ticket_id}",
                    "headers": {"Content-Type": content_type},
                },
                "download_url": f"{base}/media/{ticket_id}/{safe_name}",
            }
        )

    async def _upload_put(self, request: Request, match: re.Match[str]) -> Response:
        """Step two: the bytes, exactly the announced size, once per ticket."""
        with self._lock:
            ticket = self.upload_tickets.pop(match.group("ticket"), None)
        if ticket is None:
            return Response(
                status=404, body=b"Unknown or used upload ticket", headers={"Content-Type": "text/plain"}
            )
        filename, size, content_type = ticket
        if len(request.body) != size:
            return Response(
                status=400,
                body=f"Expected {size} bytes, got {len(request.body)}".encode(),
                headers={"Content-Type": "text/plain"},
            )
        self._keep_media(match.group("ticket"), (filename, request.body, content_type))
        return Response(status=200, body=b"", headers={"Content-Type": "text/plain"})

    def _keep_media(self, media_id: str, entry: tuple[str, bytes, str]) -> None:
        """Hold an upload, dropping the oldest once all of them pass MAX_MEDIA_KEPT_BYTES: a
        server that runs for days must not grow by every first frame it was sent (a dropped
        one answers 404, as an expired upload does on the real service)."""
        with self._lock:
            self.media[media_id] = entry
            total = sum(len(kept[1]) for kept in self.media.values())
            while total > MAX_MEDIA_KEPT_BYTES and len(self.media) > 1:
                oldest = next(iter(self.media))
                total -= len(self.media.pop(oldest)[1])

    async def _media(self, request: Request, match: re.Match[str]) -> Response:
        stored = self.media.get(match.group("id"))
        if stored is None:
            return Response(status=404, body=b"Not Found", headers={"Content-Type": "text/plain"})
        return Response(status=200, body=stored[1], headers={"Content-Type": stored[2]})

    async def _webhook_secret(self, request: Request, match: None) -> Response:
        """The secret webhook calls are signed with (``whsec_`` and hex, as the docs show it)."""
        return envelope_ok({"secret": self.webhooks.secret})

    async def _history(self, request: Request, match: None) -> Response:
        """``POST /api/v3/predictions``: pages of this key's predictions, newest first.

        JSON ``{page >= 1, page_size 1..100, model?, status?, created_after?, created_before?}``
        (ISO 8601); answers ``{page, total, items}``. Everything the server holds is from the
        last 7 days, as on the real service (which keeps no more).
        """
        query = json_object(request)
        if isinstance(query, Response):
            return query
        page, size = query.get("page", 1), query.get("page_size", 20)
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            return envelope_error(400, "page must be an integer >= 1")
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 100:
            return envelope_error(400, "page_size must be an integer from 1 to 100")
        status = query.get("status")
        if status is not None and status not in _HISTORY_STATUSES:
            return envelope_error(400, f"status must be one of {sorted(_HISTORY_STATUSES)}")
        bounds = {}
        for name in ("created_after", "created_before"):
            if query.get(name) is not None:
                try:
                    bounds[name] = _iso_time(query[name])
                except (TypeError, ValueError):
                    return envelope_error(400, f"{name} must be an ISO 8601 time")
        now = time.monotonic()
        with self._lock:
            chosen = [
                p
                for p in self.predictions.values()
                if (query.get("model") is None or p.model == query["model"])
                and (status is None or p.status(now) in _HISTORY_STATUSES[status])
                and ("created_after" not in bounds or _iso_time(p.created_at) >= bounds["created_after"])
                and ("created_before" not in bounds or _iso_time(p.created_at) <= bounds["created_before"])
            ]
        chosen.sort(key=lambda p: p.started, reverse=True)
        items = [self._prediction_data(p) for p in chosen[(page - 1) * size : page * size]]
        return envelope_ok({"page": page, "total": len(chosen), "items": items})

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

    async def _result(self, request: Request, match: re.Match[str]) -> Response:
        prediction = self.predictions.get(match.group("id"))
        if prediction is None:
            return envelope_error(404, f"Prediction {match.group('id')} not found")
        return envelope_ok(self._prediction_data(prediction))

    async def _output(self, request: Request, match: re.Match[str]) -> Response:
        prediction = self.predictions.get(match.group("id"))
        digits = match.group("index")
        index = int(digits) if len(digits) <= 6 else 10**6  # 5,000 digits would raise in int()
        if prediction is None or prediction.status(time.monotonic()) != "completed":
            return Response(status=404, body=b"Not Found", headers={"Content-Type": "text/plain"})
        if index >= prediction.directives.outputs:
            return Response(status=404, body=b"Not Found", headers={"Content-Type": "text/plain"})
        if prediction.directives.expire:
            return Response(
                status=403,
                body=b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                headers={"Content-Type": "application/xml"},
            )
        wanted = prediction.directives.size or self.config.output_bytes
        clip = await self._clip(prediction)
        total = video_size(wanted, clip)
        start = 0
        status = 200
        headers = {"Content-Type": "video/mp4", "Accept-Ranges": "bytes"}
        range_match = _RANGE.match(request.headers.get("range", ""))
        if range_match and int(range_match.group(1)) < total:
            start = int(range_match.group(1))
            status = 206
            headers["Content-Range"] = f"bytes {start}-{total - 1}/{total}"
        response = Response(
            status=status,
            body=aiter_video(wanted, start, clip),
            headers=headers,
            content_length=total - start,
        )
        if prediction.directives.truncate and start == 0:
            response.truncate_at = total // 2
        return response

    async def _clip(self, prediction: StoredPrediction) -> bytes | None:
        """An image-to-video prediction's own clip, starting from its first frame (made once);
        None (the sample clip) for text-to-video, or when the frame cannot be had."""
        image = prediction.inputs.get("image")
        if not isinstance(image, str) or not clips.has_encoder():
            return None
        task = self._clips.get(prediction.id)
        if task is None:
            task = self._clips[prediction.id] = asyncio.ensure_future(self._make_clip(prediction.id, image))
        return await asyncio.shield(task)

    async def _make_clip(self, prediction_id: str, image_url: str) -> bytes | None:
        image = await self._first_frame(image_url)
        if image is None:
            return None
        return await asyncio.to_thread(clips.first_frame_clip, image, prediction_id)

    async def _first_frame(self, url: str) -> bytes | None:
        """The image a submit named: an upload this server holds is read here; another loopback
        URL is fetched (no redirects, capped); nothing off this machine is ever fetched."""
        parts = urlsplit(url)
        if url.startswith(f"{self.config.public_base_url}/") and (m := _MEDIA_ROUTE.match(parts.path)):
            stored = self.media.get(m.group("id"))
            return stored[1] if stored is not None else None
        if not _is_loopback(parts.hostname or ""):
            return None
        import httpx

        try:
            async with (
                httpx.AsyncClient(timeout=5.0, follow_redirects=False, trust_env=False) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    return None
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_UPLOAD_BYTES:
                        return None
                return body
        except httpx.HTTPError:
            return None

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
                return json_response({"error": "usage: POST /_testing/balance?usd=<amount>"}, status=400)
            return json_response({"balance": self.balance})
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
        return json_response({"error": f"unknown admin call {request.method} {request.path}"}, status=404)

    def _prediction_data(self, prediction: StoredPrediction) -> dict[str, Any]:
        now = time.monotonic()
        status = prediction.status(now)
        base = self.config.public_base_url
        d = prediction.directives
        completed = status == "completed"
        outputs = [f"{base}/outputs/{prediction.id}/{i}.mp4" for i in range(d.outputs)] if completed else []
        inference = int(prediction.duration * 1000) if status in ("completed", "failed") else 0
        return {
            "id": prediction.id,
            "model": prediction.model,
            "outputs": outputs,
            "urls": {"get": f"{base}/api/v3/predictions/{prediction.id}/result"},
            "has_nsfw_contents": [d.nsfw] * len(outputs),
            "status": status,
            "created_at": prediction.created_at,
            "error": d.fail if status == "failed" and d.fail else "",
            "timings": {"inference": inference},
            "executionTime": inference,  # ms, as the docs show it on prediction-history items
        }


def _is_loopback(host: str) -> bool:
    """A loopback host by its name or address alone (never a DNS query)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _iso_time(text: Any) -> datetime:
    when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _multipart_file(content_type: str, body: bytes) -> tuple[str, bytes, str] | None:
    """The ``file`` field of a multipart body: (filename, bytes, content type), or None."""
    if not content_type.startswith("multipart/form-data"):
        return None
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return part.get_filename() or "upload", payload, part.get_content_type()
    return None


def validate_inputs(model: str, inputs: dict[str, Any]) -> str | None:
    """The checks the real service makes for MAGI-1 24B; other models only need a JSON object."""
    if model != MAGI_MODEL:
        return None
    prompt = inputs.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt is required and must be a non-empty string"
    image = inputs.get("image")
    if image is not None and (not isinstance(image, str) or not re.match(r"^https?://", image)):
        return "image must be a URL (http or https)"
    seed = inputs.get("seed")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not SEED_MIN <= seed <= SEED_MAX
    ):
        return f"seed must be an integer between {SEED_MIN} and {SEED_MAX}"
    return None


_JSON = {"Content-Type": "application/json"}


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
    return Response(status=status, body=json.dumps(payload).encode(), headers=dict(_JSON))


def envelope_ok(data: dict[str, Any]) -> Response:
    return json_response({"code": 200, "message": "success", "data": data})


def envelope_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = json_response({"code": status, "message": message, "data": None}, status=status)
    response.headers.update(headers or {})
    return response


def _format_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:.3f}"
