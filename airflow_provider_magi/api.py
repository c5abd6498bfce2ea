"""The WaveSpeed prediction contract as code: values, parsing and the retry decision.

No I/O lives here, so the worker's requests client and the triggerer's aiohttp client share one
reading of the API and one answer to "is it safe to send this again?".
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow_provider_magi.exceptions import (
    MagiAPIError,
    MagiAuthError,
    MagiError,
    MagiHistoryIncompleteError,
    MagiInputError,
    MagiPredictionFailedError,
    MagiRejectedError,
    MagiResponseError,
)

DEFAULT_BASE_URL = "https://api.wavespeed.ai"
DEFAULT_MODEL = "wavespeed-ai/magi-1-24b"

STATUS_COMPLETED = "completed"
RUNNING_STATUSES = frozenset({"created", "processing"})
# The documented "failed" plus the terminal failures the official SDK also knows.
FAILED_STATUSES = frozenset({"failed", "cancelled", "timeout", "deleted"})
TERMINAL_STATUSES = FAILED_STATUSES | {STATUS_COMPLETED}

# Statuses a retry of the same request can change: rate limits and gateway/server hiccups.
RETRYABLE_HTTP_STATUSES = frozenset({429, 500, 502, 503, 504})
# Statuses that prove the server did not start work for a POST, so resending cannot pay twice.
SUBMIT_REJECTED_STATUSES = frozenset({429})

_SNIPPET_BYTES = 200


@dataclass(frozen=True)
class Prediction:
    """One prediction as the API last reported it."""

    id: str
    model: str
    status: str
    outputs: tuple[str, ...] = ()
    has_nsfw_contents: tuple[bool, ...] = ()
    error: str = ""
    created_at: str | None = None
    inference_ms: int | None = None
    result_url: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_completed(self) -> bool:
        return self.status == STATUS_COMPLETED

    @property
    def is_failed(self) -> bool:
        return self.status in FAILED_STATUSES

    @property
    def is_known_status(self) -> bool:
        return self.status in TERMINAL_STATUSES or self.status in RUNNING_STATUSES

    def to_result(self) -> dict[str, Any]:
        """The JSON-serialisable dict that operators return and triggers carry in events."""
        return {
            "prediction_id": self.id,
            "model": self.model,
            "status": self.status,
            "outputs": list(self.outputs),
            "has_nsfw_contents": list(self.has_nsfw_contents),
            "error": self.error,
            "created_at": self.created_at,
            "inference_ms": self.inference_ms,
            "result_url": self.result_url,
        }

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> Prediction:
        """Inverse of :meth:`to_result`, for values that crossed XCom or a trigger event."""
        return cls(
            id=str(result["prediction_id"]),
            model=str(result.get("model") or ""),
            status=str(result["status"]),
            outputs=tuple(result.get("outputs") or ()),
            has_nsfw_contents=tuple(bool(v) for v in result.get("has_nsfw_contents") or ()),
            error=str(result.get("error") or ""),
            created_at=result.get("created_at"),
            inference_ms=result.get("inference_ms"),
            result_url=result.get("result_url"),
        )


@dataclass(frozen=True)
class HTTPAnswer:
    """What arrived from the server, independent of the client library that fetched it."""

    status_code: int
    content_type: str
    body: bytes
    retry_after: str | None = None


REDACTED = "***"


def redact(text: bytes, secret: str) -> bytes:
    """``text`` with every plain or JSON-escaped copy of ``secret`` replaced (a server that echoes
    the Authorization header must not put the key into our errors, logs or events)."""
    if not secret:
        return text
    for form in {secret, json.dumps(secret)[1:-1]}:
        text = text.replace(form.encode("utf-8"), REDACTED.encode())
    return text


def describe_body(answer: HTTPAnswer) -> str:
    """Say what arrived without echoing more than a short, printable head of the body."""
    head = answer.body[:_SNIPPET_BYTES].decode("utf-8", errors="replace")
    head = "".join(ch if ch.isprintable() else " " for ch in head).strip()
    more = "…" if len(answer.body) > _SNIPPET_BYTES else ""
    content_type = answer.content_type or "no content type"
    return f"HTTP {answer.status_code}, {content_type}, {len(answer.body)} bytes: {head!r}{more}"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:  # "inf", "nan" and "1e999" are not waits anyone can honour
        return max(0.0, seconds) if math.isfinite(seconds) else None
    import email.utils  # rare (HTTP-date form), and costly to import at DAG parse time

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _NonFinite:
    """Stands in for NaN, Infinity or 1e999 in an answer: no field accepts it, so the parser names
    the field instead of Python raising OverflowError far from the cause."""

    def __repr__(self) -> str:
        return "<non-finite number>"


NON_FINITE = _NonFinite()


def _finite_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else NON_FINITE


# One decoder for every answer: json.loads with hooks builds a new one per call (a poll's cost).
_DECODER = json.JSONDecoder(parse_constant=lambda _: NON_FINITE, parse_float=_finite_float)


def load_json(body: bytes | str) -> Any:
    """``json.loads`` that never yields NaN or infinity (see :class:`_NonFinite`)."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode(json.detect_encoding(body), "surrogatepass")
    return _DECODER.decode(body)


def _load_envelope(answer: HTTPAnswer) -> Mapping[str, Any] | None:
    try:
        envelope = load_json(answer.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return envelope if isinstance(envelope, dict) else None


# A submit's 404 is about the model path (the only thing in its URL), never about a prediction.
UNKNOWN_MODEL_HINT = (
    "WaveSpeed does not know this model. Fix: check the operator's `model` argument, "
    "'owner/name' or 'owner/name/variant' as WaveSpeed's model page spells it (default "
    f"{DEFAULT_MODEL!r})"
)
NOT_FOUND_HINT = "the prediction or path does not exist (predictions are deleted after 7 days)"


def raise_for_answer(
    answer: HTTPAnswer,
    *,
    what: str,
    conn_id: str,
    prediction_id: str | None = None,
    not_found: str = NOT_FOUND_HINT,
) -> Mapping[str, Any]:
    """Return the envelope's ``data`` for a successful answer; raise a typed error otherwise.

    The HTTP status and the envelope's own ``code`` are both checked: WaveSpeed can answer HTTP 200
    with an error code inside.
    """
    envelope = _load_envelope(answer)
    api_message = ""
    code = answer.status_code
    if envelope is not None:
        api_message = str(envelope.get("message") or "")
        if 200 <= answer.status_code < 300 and isinstance(envelope.get("code"), bool):
            # isinstance(True, int) holds: read as a status, `true` would be an error "1".
            raise MagiResponseError(
                f"{what}: the envelope's 'code' is {envelope['code']!r}, not an HTTP-like status "
                f"number: {describe_body(answer)}",
                status_code=answer.status_code,
                prediction_id=prediction_id,
            )
        if 200 <= answer.status_code < 300 and isinstance(envelope.get("code"), int):
            code = envelope["code"]

    if 200 <= code < 300:
        data = envelope.get("data") if envelope is not None else None
        if not isinstance(data, dict):
            raise MagiResponseError(
                f"{what}: expected a JSON envelope with a 'data' object, got {describe_body(answer)}",
                status_code=answer.status_code,
                prediction_id=prediction_id,
            )
        return data

    detail = api_message or describe_body(answer)
    if envelope is not None and envelope.get("data") and isinstance(envelope["data"], dict):
        detail = api_message or str(envelope["data"].get("error") or detail)
    retry_after = parse_retry_after(answer.retry_after)
    if code in (401, 403):
        hint = (
            f"check the API key (password) of Airflow connection '{conn_id}'"
            if code == 401
            else f"the key of connection '{conn_id}' lacks permission or balance for this request"
        )
        raise MagiAuthError(
            f"{what} was refused with {code}: {detail} ({hint})",
            status_code=code,
            api_message=api_message,
            prediction_id=prediction_id,
        )
    hints = {
        400: "the request's inputs were rejected; fix them and run again",
        404: not_found,
        413: "the upload is too large",
        422: "the inputs did not match the model's schema; fix them and run again",
        429: "rate limited by WaveSpeed",
    }
    hint = hints.get(code, "WaveSpeed answered with an error")
    error_class = MagiRejectedError if code in hints and code != 429 else MagiAPIError
    raise error_class(
        f"{what} failed with {code}: {detail} ({hint})",
        status_code=code,
        api_message=api_message,
        prediction_id=prediction_id,
        retry_after=retry_after,
    )


def read_submit_answer(
    answer: HTTPAnswer, *, what: str, conn_id: str
) -> tuple[Mapping[str, Any], str | None]:
    """A submit's ``data``: once an HTTP 2xx names a prediction id, it is ours whatever ``code`` says.

    An envelope ``code`` of 0, ``true``, 302, 409 or 429 beside an id proves nothing was rejected:
    WaveSpeed issued the id, so the generation may run and bill. Raising would let a retry (ours
    on 429, Airflow's on the rest) pay again. Returns the data and, when the envelope's code was
    not 200, a note quoting it for the log. The id may still be invalid: the caller checks it and
    treats an invalid one as an uncertain submit, never resent. Without an id (an empty string is
    none) the answer is read like any other.
    """
    if 200 <= answer.status_code < 300:
        envelope = _load_envelope(answer)
        data = envelope.get("data") if envelope is not None else None
        if envelope is not None and isinstance(data, dict) and data.get("id") not in (None, ""):
            code = envelope.get("code", 200)
            if type(code) is int and code == 200:
                return data, None
            said = f"code {_short(code, 40)}, message {_short(envelope.get('message'), 120)}"
            return data, f"the answer names a prediction id, but its envelope says {said}; the id is kept"
    return raise_for_answer(answer, what=what, conn_id=conn_id, not_found=UNKNOWN_MODEL_HINT), None


def parse_prediction(data: Mapping[str, Any]) -> Prediction:
    """Read a prediction strictly: a missing id or status, or wrongly typed fields, is an error."""
    pred_id = prediction_id_of(data)
    if pred_id is None:
        if data.get("id") is not None:
            raise MagiResponseError(
                f"prediction with an invalid 'id' {describe_id(data['id'])} (an id is {PREDICTION_ID_RULE})"
            )
        raise MagiResponseError(f"prediction without an 'id' in the answer: {_short(data)}")
    status = data.get("status")
    if not isinstance(status, str) or not status:
        raise MagiResponseError(
            f"prediction {pred_id} without a 'status' in the answer: {_short(data)}",
            prediction_id=pred_id,
        )
    outputs = data.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(url, str) for url in outputs):
        raise MagiResponseError(
            f"prediction {pred_id}: 'outputs' is not a list of URLs: {_short(outputs)}",
            prediction_id=pred_id,
        )
    nsfw = data.get("has_nsfw_contents") or []
    if not isinstance(nsfw, list) or not all(isinstance(flag, bool) for flag in nsfw):
        raise MagiResponseError(
            f"prediction {pred_id}: 'has_nsfw_contents' is not a list of booleans: {_short(nsfw)}",
            prediction_id=pred_id,
        )
    timings = data.get("timings") or {}
    inference = timings.get("inference") if isinstance(timings, dict) else None
    if inference is not None and not _is_duration_ms(inference):
        raise MagiResponseError(
            f"prediction {pred_id}: 'timings.inference' is not a number of milliseconds: {_short(inference)}",
            prediction_id=pred_id,
        )
    urls = data.get("urls") or {}
    result_url = urls.get("get") if isinstance(urls, dict) else None
    return Prediction(
        id=pred_id,
        model=_text(data.get("model")),
        status=status,
        outputs=tuple(outputs),
        has_nsfw_contents=tuple(nsfw),
        error=_text(data.get("error")),
        created_at=data.get("created_at") if isinstance(data.get("created_at"), str) else None,
        inference_ms=int(inference) if inference is not None else None,
        result_url=result_url if isinstance(result_url, str) else None,
    )


# WaveSpeed issues 32 lowercase hex digits (uuid4().hex; the local server does the same). The rule
# leaves room for other forms (uuids with dashes, prefixed ids) while keeping every id safe in a
# URL path, a file name, a log line, a task-state row and an XCom.
_PREDICTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
PREDICTION_ID_RULE = "1 to 128 ASCII letters, digits, '.', '_', ':' or '-', starting with a letter or digit"


def is_valid_prediction_id(value: Any) -> bool:
    """True for an id we can store, log and put in a URL.

    Anything else (a lone surrogate, which no store can encode; 5,000 characters; spaces; a
    slash; a number) is not an id WaveSpeed issues, and trusting it crashed the write of a paid
    submit's id, so every retry paid again. Such an answer is an uncertain submit instead.
    """
    return isinstance(value, str) and _PREDICTION_ID.fullmatch(value) is not None


def describe_id(value: Any) -> str:
    """``value`` quoted for a message: ASCII only (no surrogate reaches a log) and short."""
    return _short_ascii(value, 80)


def prediction_id_of(data: Mapping[str, Any]) -> str | None:
    """The answer's prediction id, if it carries a valid one (whatever else is wrong with it)."""
    pred_id = data.get("id")
    return pred_id if is_valid_prediction_id(pred_id) else None


def parse_submitted(data: Mapping[str, Any], model: str) -> tuple[Prediction, str | None]:
    """Read a submit's answer; once it names an id, nothing else in it may lose that id.

    Returns the prediction and, when other fields were malformed, what was wrong with them (the
    caller logs it and carries on with the id: raising would let a retry pay for a second video).
    """
    try:
        return parse_prediction(data), None
    except MagiResponseError as error:
        pred_id = prediction_id_of(data)
        if pred_id is None:
            raise
        return Prediction(id=pred_id, model=model, status="created"), str(error)


# Longer than any real generation, short enough that dividing by 1000 stays a float.
_MAX_DURATION_MS = 10**12


def _is_duration_ms(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return 0 <= value <= _MAX_DURATION_MS  # int vs int: no float conversion to overflow


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


HISTORY_PATH = "/api/v3/predictions"
HISTORY_STATUSES = ("completed", "failed", "processing")


def history_query(
    *,
    model: str | None = None,
    status: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> dict[str, Any]:
    """The filters of the prediction-history endpoint, checked before anything is sent."""
    if status is not None and status not in HISTORY_STATUSES:
        raise ValueError(f"status must be one of {HISTORY_STATUSES}, got {status!r}")
    query: dict[str, Any] = {}
    if model:
        query["model"] = model.strip().strip("/")
    if status:
        query["status"] = status
    for name, when in (("created_after", created_after), ("created_before", created_before)):
        if when is not None:
            query[name] = as_utc(when).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return query


def parse_history_page(data: Mapping[str, Any]) -> tuple[list[Prediction], int]:
    """One page of the history: its predictions (strictly parsed) and the total across pages."""
    items = data.get("items")
    total = data.get("total")
    if not isinstance(items, list) or isinstance(total, bool) or not isinstance(total, int):
        raise MagiResponseError(f"prediction history: expected 'items' and 'total', got {_short(dict(data))}")
    if not all(isinstance(item, dict) for item in items):
        raise MagiResponseError("prediction history: an item is not a prediction object")
    return [parse_prediction(item) for item in items], total


# A candidate lookup reads at most this much of the history: enough for any window of two minutes
# at the highest account level's rate, and a bound on how long a lost answer holds a worker.
HISTORY_PAGE_SIZE = 100
HISTORY_MAX_PAGES = 10


def read_whole_history(
    fetch_page: Callable[[int], Mapping[str, Any]], *, max_pages: int = HISTORY_MAX_PAGES
) -> list[Prediction]:
    """Every item a history query promises (``fetch_page(n)`` returns page n's data), or
    ``MagiHistoryIncompleteError``: a caller deciding whether a submit started must tell "none
    listed" from "not all read", so a partial answer is never returned as the whole.

    Pages are read until as many items as ``total`` arrived. A total beyond what ``max_pages`` of
    ``HISTORY_PAGE_SIZE`` can hold, an empty or failed page before that, or running out of pages,
    all mean the history could not be read completely. Pages may be shorter than asked (a server
    may cap page_size): reading goes on while the total says there is more.
    """
    found: list[Prediction] = []
    total = 0
    for number in range(1, max_pages + 1):
        try:
            items, total = parse_history_page(fetch_page(number))
        except MagiError as error:
            raise MagiHistoryIncompleteError(
                f"the prediction history could not be read completely (page {number}): {error}"
            ) from None
        if total > max_pages * HISTORY_PAGE_SIZE:
            raise MagiHistoryIncompleteError(
                f"the prediction history could not be read completely: it lists {total} "
                f"predictions, more than the {max_pages * HISTORY_PAGE_SIZE} a lookup reads"
            )
        found += items
        if len(found) >= total:
            return found
        if not items:
            break
    raise MagiHistoryIncompleteError(
        f"the prediction history could not be read completely: it promised {total} predictions "
        f"and {len(found)} arrived in {number} page(s)"
    )


def as_utc(when: datetime) -> datetime:
    """``when`` as an aware UTC time (a naive one is taken to be UTC already)."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


def parse_timestamp(value: Any) -> datetime | None:
    """An ISO 8601 time from an answer ('Z' allowed, no zone read as UTC); None if it is not one."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        return None


def same_model(listed: str, wanted: str) -> bool:
    """Model ids compared as paths (``/owner/name/`` is ``owner/name``); an empty one matches none."""
    listed = listed.strip().strip("/")
    return bool(listed) and listed == wanted.strip().strip("/")


def submit_candidates(
    predictions: list[Prediction], model: str, start: datetime, end: datetime
) -> list[Prediction]:
    """The predictions that could be a submit's: of ``model``, created within [start, end].

    Checked here, not left to the server's filters: a history answer listing another model's
    prediction from 2019 was once attached to as "the only one". An item whose ``created_at`` or
    ``model`` cannot be read is kept (fail safe): it may be this submit's, and calling it "not
    ours" would pay again. An id listed twice (pages shift while new predictions arrive) counts
    once.
    """
    kept: dict[str, Prediction] = {}
    for prediction in predictions:
        created = parse_timestamp(prediction.created_at)
        if created is not None and not as_utc(start) <= created <= as_utc(end):
            continue
        if not str(prediction.model or "").strip().strip("/") or same_model(prediction.model, model):
            kept.setdefault(prediction.id, prediction)
    return list(kept.values())


def is_retryable(method: str, error: BaseException) -> bool:
    """The one rule for resending: GETs retry on transient failures, POSTs only on provable rejection.

    A POST that may have reached the server (timeout, dropped connection, 5xx) is never resent:
    that could start, and bill, a second generation.
    """
    if isinstance(error, MagiAPIError):
        if error.http_status is None:
            return False
        allowed = RETRYABLE_HTTP_STATUSES if method == "GET" else SUBMIT_REJECTED_STATUSES
        return error.http_status in allowed
    if isinstance(error, ConnectFailure):
        return True
    if isinstance(error, ExchangeFailure):
        return method == "GET"
    return False


class ConnectFailure(Exception):
    """The connection could not be opened: the request was provably never sent."""


class ExchangeFailure(Exception):
    """The connection broke or timed out after the request may have been sent."""


def error_text(error: BaseException, secret: str = "") -> str:
    """An exception's type and text, with the key scrubbed (HTTP libraries may quote headers)."""
    text = redact(str(error).encode(), secret).decode(errors="replace")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_ascii(value: Any, limit: int) -> str:
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def final_result(prediction: Prediction) -> dict[str, Any]:
    """The task's result for a terminal prediction, or the error that fails the task."""
    if prediction.is_failed:
        reason = prediction.error or "no error text from WaveSpeed"
        raise MagiPredictionFailedError(
            f"Prediction {prediction.id} {prediction.status}: {reason}", prediction_id=prediction.id
        )
    if not prediction.outputs:
        raise MagiPredictionFailedError(
            f"Prediction {prediction.id} completed without any outputs", prediction_id=prediction.id
        )
    return prediction.to_result()


def json_body(inputs: Mapping[str, Any]) -> bytes:
    """The submit's body, refused before sending if it is not strict JSON (NaN, infinity)."""
    try:
        return json.dumps(dict(inputs), allow_nan=False).encode()
    except (TypeError, ValueError) as error:
        raise MagiInputError(
            f"Invalid inputs: not strict JSON ({error}). Fix: use finite numbers, strings, lists "
            "and dicts only."
        ) from None
