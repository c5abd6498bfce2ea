"""The local server's prediction routes: submit, result, outputs, history, and the clip each makes."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_magi.models import CHOICE, IMAGE, INTEGER, TEXT, ModelSpec, spec_of
from airflow_provider_magi.testing import clips
from airflow_provider_magi.testing.account import (
    Account,
)
from airflow_provider_magi.testing.config import MAGI_MODEL, SEED_MAX, SEED_MIN, ServerConfig
from airflow_provider_magi.testing.faults import Directives, FaultPlan, parse_directives
from airflow_provider_magi.testing.http import Request, Response
from airflow_provider_magi.testing.responses import (
    envelope_error,
    envelope_ok,
    json_object,
)
from airflow_provider_magi.testing.uploads import _MEDIA_ROUTE, MAX_UPLOAD_BYTES
from airflow_provider_magi.testing.video import aiter_video, video_size
from airflow_provider_magi.testing.webhooks import WebhookSender, webhook_problem

# Model ids have two or three parts: wavespeed-ai/magi-1-24b, wavespeed-ai/z-image/turbo.
_MODEL_ROUTE = re.compile(r"^/api/v3/(?P<model>[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)?)$")


# Both forms the docs show: ".../result" and, newer, the bare prediction path.
_RESULT_ROUTE = re.compile(r"^/api/v3/predictions/(?P<id>[^/]+)(?:/result)?$")


_OUTPUT_ROUTE = re.compile(r"^/outputs/(?P<id>[^/]+)/(?P<index>\d+)\.mp4$")


_HISTORY_ROUTE = "/api/v3/predictions"


# The history filter's statuses (docs); "processing" also matches predictions not yet started.
_HISTORY_STATUSES = {
    "completed": {"completed"},
    "failed": {"failed"},
    "processing": {"created", "processing"},
}


_RANGE = re.compile(r"^bytes=(\d+)-$")


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
    # The video length its inputs ask for (MAGI-2's ``duration`` input, whole seconds); None for
    # a model without one. Not ``duration`` above: that is how long the prediction runs here.
    seconds: int | None = None

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


class PredictionRoutes:
    """Mixed into :class:`~airflow_provider_magi.testing.app.WaveSpeedApp`."""

    config: ServerConfig
    faults: FaultPlan
    predictions: dict[str, StoredPrediction]
    media: dict[str, tuple[str, bytes, str]]
    webhooks: WebhookSender
    account: Account
    _unbilled: set[str]
    _clips: dict[str, asyncio.Task[bytes | None]]
    _lock: threading.Lock

    if TYPE_CHECKING:  # provided by WaveSpeedApp

        def settle(self) -> None: ...

        def monotonic(self) -> float: ...

        def wall_now(self) -> float: ...

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
        seconds = seconds_asked(model, inputs)
        price = self.account.price_of(model, seconds)
        if not self.account.can_afford(price):
            # Stricter than known: the docs do not say how a submit without the balance for it is
            # answered; 403 is what has been seen for "no permission or not enough balance".
            return envelope_error(403, "Insufficient balance")
        directives = parse_directives(str(inputs.get("prompt", "")))
        prediction = StoredPrediction(
            id=uuid.uuid4().hex,
            model=model,
            inputs=inputs,
            directives=directives,
            created_at=datetime.fromtimestamp(self.wall_now(), UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            started=self.monotonic(),
            duration=directives.duration
            if directives.duration is not None
            else self.config.completion_seconds,
            webhook=request.query.get("webhook"),
            price=price,
            seconds=seconds,
        )
        with self._lock:
            self.predictions[prediction.id] = prediction
            self._unbilled.add(prediction.id)
        self.account.submitted(prediction.id, model, self.wall_now())
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
        while prediction.status(self.monotonic()) not in ("completed", "failed"):
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

    async def _result(self, request: Request, match: re.Match[str]) -> Response:
        prediction = self.predictions.get(match.group("id"))
        if prediction is None:
            return envelope_error(404, f"Prediction {match.group('id')} not found")
        return envelope_ok(self._prediction_data(prediction))

    async def _output(self, request: Request, match: re.Match[str]) -> Response:
        prediction = self.predictions.get(match.group("id"))
        digits = match.group("index")
        index = int(digits) if len(digits) <= 6 else 10**6  # 5,000 digits would raise in int()
        if prediction is None or prediction.status(self.monotonic()) != "completed":
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
        """A prediction's own clip (made once): MAGI-2's of the length asked for, with sound; an
        image-to-video MAGI-1 prediction's from its first frame; None (the sample clip) for
        MAGI-1 text-to-video, when a MAGI-1 frame cannot be had, or without PyAV."""
        spec = spec_of(prediction.model)
        image = prediction.inputs.get("image")
        made_here = spec is not None and spec.fps is not None and prediction.seconds is not None
        if not (made_here or isinstance(image, str)) or not clips.has_encoder():
            return None
        task = self._clips.get(prediction.id)
        if task is None:
            maker = (
                self._make_magi_2_clip(prediction)
                if made_here
                else self._make_clip(prediction.id, str(image))
            )
            task = self._clips[prediction.id] = asyncio.ensure_future(maker)
        return await asyncio.shield(task)

    async def _make_clip(self, prediction_id: str, image_url: str) -> bytes | None:
        image = await self._first_frame(image_url)
        if image is None:
            return None
        return await asyncio.to_thread(clips.first_frame_clip, image, prediction_id)

    async def _make_magi_2_clip(self, prediction: StoredPrediction) -> bytes | None:
        """``seconds`` of video at the model's frame rate with a tone; from ``image`` (and
        towards ``last_image``) when the server can read them, else from a made-up picture."""
        inputs = prediction.inputs
        image = await self._first_frame(inputs["image"]) if isinstance(inputs.get("image"), str) else None
        last_image = (
            await self._first_frame(inputs["last_image"])
            if isinstance(inputs.get("last_image"), str)
            else None
        )
        aspect_ratio = inputs.get("aspect_ratio")
        return await asyncio.to_thread(
            clips.magi_2_clip,
            prediction.id,
            prediction.seconds or 0,
            aspect_ratio=aspect_ratio if isinstance(aspect_ratio, str) else None,
            image=image,
            last_image=last_image,
        )

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
        now = self.monotonic()
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

    def _prediction_data(self, prediction: StoredPrediction) -> dict[str, Any]:
        now = self.monotonic()
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


def seconds_asked(model: str, inputs: dict[str, Any]) -> int | None:
    """The video length a prediction's inputs ask for, by the catalogue (MAGI-2: ``duration``,
    default 5); None for a model without a length input."""
    spec = spec_of(model)
    return spec.seconds_of(inputs) if spec is not None else None


def validate_inputs(model: str, inputs: dict[str, Any]) -> str | None:
    """The checks the real service makes for MAGI-1 24B, and for the catalogue's other models by
    their input rules (MAGI-2); other models only need a JSON object."""
    if model != MAGI_MODEL:
        spec = spec_of(model)
        return _check_rules(spec, inputs) if spec is not None else None
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


def _check_rules(spec: ModelSpec, inputs: dict[str, Any]) -> str | None:
    """The first input that breaks one of the model's rules, in words naming it; None if all
    hold. Inputs the catalogue does not name pass (as WaveSpeed takes extra fields)."""
    for rule in spec.inputs:  # an input sent without the one it needs, first: it says more
        if rule.needs is not None and inputs.get(rule.name) is not None and inputs.get(rule.needs) is None:
            return f"{rule.name} needs {rule.needs}: it is only taken together with {rule.needs}"
    for rule in spec.inputs:
        value = inputs.get(rule.name)
        if value is None or (
            rule.required and rule.kind == TEXT and isinstance(value, str) and not value.strip()
        ):
            if rule.required:
                return f"{rule.name} is required" + (
                    " and must be a non-empty string" if rule.kind == TEXT else ""
                )
            continue
        if rule.kind == TEXT:
            if not isinstance(value, str):
                return f"{rule.name} must be a string"
        elif rule.kind == IMAGE:
            if not isinstance(value, str) or not re.match(r"^https?://", value):
                return f"{rule.name} must be a URL (http or https)"
        elif rule.kind == INTEGER:
            low = rule.minimum if rule.minimum is not None else -(2**63)
            high = rule.maximum if rule.maximum is not None else 2**63
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                return f"{rule.name} must be {rule.describe()}, got {value!r}"
        elif rule.kind == CHOICE and value not in rule.choices:
            return f"{rule.name} must be {rule.describe()}, got {value!r}"
    return None
