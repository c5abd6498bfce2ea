"""MagiHook: the connection, the key and every HTTP call to WaveSpeed."""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import requests
import urllib3.exceptions
from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError, ProxyError

from airflow_provider_magi import metrics
from airflow_provider_magi.api import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    HISTORY_PAGE_SIZE,
    HISTORY_PATH,
    PREDICTION_ID_RULE,
    ConnectFailure,
    ExchangeFailure,
    HTTPAnswer,
    Prediction,
    as_utc,
    describe_id,
    error_text,
    history_query,
    is_valid_prediction_id,
    parse_history_page,
    parse_prediction,
    parse_submitted,
    raise_for_answer,
    read_submit_answer,
    read_whole_history,
    submit_candidates,
)
from airflow_provider_magi.bounded import (
    ACCEPT_ENCODING,
    AnswerTooLarge,
    take_capped,
)
from airflow_provider_magi.compat import AirflowNotFoundException, BaseHook, mask_secret
from airflow_provider_magi.downloads import DownloadedFile, WritablePath, download
from airflow_provider_magi.exceptions import (
    MagiAPIError,
    MagiAuthError,
    MagiError,
    MagiInputError,
    MagiRejectedError,
    MagiResponseError,
    MagiSubmitUncertainError,
    MagiTransportError,
)
from airflow_provider_magi.hooks.account import MagiAccountMixin
from airflow_provider_magi.hooks.async_client import (
    answer_from,
    asend,
    count_poll,
    shared_async_client,
)
from airflow_provider_magi.retries import RetryPolicy, settle
from airflow_provider_magi.waiting import Waiter
from airflow_provider_magi.watchdog import DeadlineAdapter, overall_deadline

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_provider_magi.validation import ImageFile

API_KEY_ENV = "WAVESPEED_API_KEY"
_USER_AGENT = "airflow-provider-magi"
# After an uncertain submit: predictions created this long around it are named as candidates,
# and the lookup may take this long at most.
CANDIDATE_WINDOW_SECONDS = 60.0
CANDIDATE_LOOKUP_SECONDS = 30.0
# Used by test_connection: asking for a prediction that cannot exist proves the key without
# starting (and paying for) a generation.
_PROBE_PREDICTION_ID = "airflow-connection-test"
# How long triggers in one triggerer reuse a connection lookup (a rotated key is seen after this).
SETTINGS_TTL = 60.0
_env_key_announced = False


@dataclass(frozen=True)
class MagiSettings:
    """Everything a client needs from the connection; the key stays out of repr."""

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    request_timeout: float = 120.0  # the whole of one request: connect, send, every byte back
    download_timeout: float = 1800.0  # one attempt of one output download (the next one resumes)
    max_retries: int = 5
    max_retry_wait: float = 60.0
    max_polls_per_second: float = 20.0  # shared by all triggers using this key in one triggerer
    ledger_path: str | None = None  # an ObjectStoragePath URL for the ledger (default: Airflow's own)
    # The spending guards and the price lookup (see README "What it costs"); None: no guard.
    min_balance_usd: float | None = None  # no submit while the balance is below this
    daily_budget_usd: float | None = None  # no submit the UTC day's spend plus its price exceeds
    cost_lookup_seconds: float = 10.0  # how long a finished task looks for its price (0: never)

    @classmethod
    def from_connection(cls, conn: Connection, conn_id: str, extra: Mapping[str, Any]) -> MagiSettings:
        host = (conn.host or "").strip()
        if host and "://" not in host:
            host = f"https://{host}"
        if host and conn.port:
            host = f"{host}:{conn.port}"
        return cls(
            conn_id=conn_id,
            base_url=(host or DEFAULT_BASE_URL).rstrip("/"),
            api_key=normalise_api_key(conn.password or "", conn_id),
            ledger_path=_ledger_path(extra, conn_id),
            **_extras(extra, conn_id),
        )

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "User-Agent": _USER_AGENT}


def normalise_api_key(raw: str, conn_id: str) -> str:
    """The key without surrounding whitespace (a pasted key often ends in a newline).

    Anything else that cannot travel in an HTTP header is refused here, by a message that names
    the connection and never the key: the HTTP library's own error would quote the whole header.
    """
    mask_secret(raw)  # masked as stored too, in case any log line ever sees the raw form
    key = raw.strip()
    if any(not "!" <= ch <= "~" for ch in key):
        raise MagiAuthError(
            f"Airflow connection '{conn_id}': the API key contains a space, a control character or "
            "a non-ASCII character, which cannot be sent in an HTTP header. Fix: paste the key "
            "again exactly as WaveSpeed shows it."
        )
    return key


def _extras(extra: Mapping[str, Any], conn_id: str) -> dict[str, Any]:
    casts = {
        "connect_timeout": float,
        "read_timeout": float,
        "request_timeout": float,
        "download_timeout": float,
        "max_retries": int,
        "max_retry_wait": float,
        "max_polls_per_second": float,
        "min_balance_usd": float,
        "daily_budget_usd": float,
        "cost_lookup_seconds": float,
    }
    values: dict[str, Any] = {}
    for name, cast in casts.items():
        # Older connection forms stored fields as extra__<conn_type>__<name>.
        raw = extra.get(name, extra.get(f"extra__magi__{name}"))
        if raw in (None, ""):
            continue
        try:
            value = cast(raw)
        except (TypeError, ValueError, OverflowError):
            raise MagiError(f"Connection '{conn_id}': extra '{name}' must be a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise MagiError(f"Connection '{conn_id}': extra '{name}' must be a finite number, got {raw!r}")
        if value < 0 or (
            value == 0 and name in ("max_polls_per_second", "request_timeout", "download_timeout")
        ):
            raise MagiError(f"Connection '{conn_id}': extra '{name}' is out of range, got {raw!r}")
        values[name] = value
    return values


def _ledger_path(extra: Mapping[str, Any], conn_id: str) -> str | None:
    raw = extra.get("ledger_path")
    if raw in (None, ""):
        return None
    if not isinstance(raw, str) or "://" not in raw:
        raise MagiError(
            f"Connection '{conn_id}': extra 'ledger_path' must be an object-storage URL such as "
            f"'s3://bucket/magi-ledger' or 'file:///shared/magi-ledger', got {raw!r:.80}"
        )
    return raw.strip()


def _settings_from_env(conn_id: str, log: Any) -> MagiSettings | None:
    global _env_key_announced
    key = os.environ.get(API_KEY_ENV)
    if not key:
        return None
    if not _env_key_announced:
        log.info("Connection '%s' not found; using the API key from $%s.", conn_id, API_KEY_ENV)
        _env_key_announced = True
    return MagiSettings(conn_id=conn_id, base_url=DEFAULT_BASE_URL, api_key=normalise_api_key(key, conn_id))


def _settings_without_connection(conn_id: str, log: Any) -> MagiSettings:
    """What a missing connection falls back to: the environment's key, for the default id only.

    A named connection that does not exist is a typo or a missing deployment step; falling back
    would send that task to the production key and URL, and bill there.
    """
    default = MagiHook.default_conn_name
    if conn_id != default:
        raise MagiError(
            f"Airflow connection '{conn_id}' does not exist; ${API_KEY_ENV} is used only for "
            f"'{default}'; create connection {conn_id} or use magi_conn_id='{default}' (a 'magi' "
            "connection holds the API key as its password)."
        ) from None
    settings = _settings_from_env(conn_id, log)
    if settings is None:
        raise MagiError(
            f"Airflow connection '{conn_id}' does not exist and ${API_KEY_ENV} is not set: create "
            "the connection (conn type 'magi', API key as password) or export the key."
        ) from None
    return settings


class MagiHook(MagiAccountMixin, BaseHook):
    """Talks to WaveSpeed's prediction API for MAGI-1 24B (or any model path on the same API).

    :param magi_conn_id: Airflow connection of type ``magi``: API key as password, optional host
        to override ``https://api.wavespeed.ai``, extras ``connect_timeout``, ``read_timeout``,
        ``max_retries`` and ``max_retry_wait``.
    """

    conn_name_attr = "magi_conn_id"
    default_conn_name = "magi_default"
    conn_type = "magi"
    hook_name = "WaveSpeed MAGI-1"

    def __init__(self, magi_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.magi_conn_id = magi_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form for Airflow < 3.2; newer releases read provider info instead."""
        from airflow_provider_magi import connection_form as form

        return {
            "hidden_fields": form.HIDDEN_FIELDS_WITHOUT_CONN_FIELDS,
            "relabeling": form.RELABELING,
            "placeholders": {**form.PLACEHOLDERS, "extra": form.EXTRA_PLACEHOLDER},
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(magi_conn_id={self.magi_conn_id!r})"

    # ---------------------------------------------------------------- connection

    @cached_property
    def settings(self) -> MagiSettings:
        try:
            conn = self.get_connection(self.magi_conn_id)
        except AirflowNotFoundException:
            settings = _settings_without_connection(self.magi_conn_id, self.log)
        else:
            settings = MagiSettings.from_connection(conn, self.magi_conn_id, conn.extra_dejson)
        return self._checked(settings)

    async def aget_settings(self) -> MagiSettings:
        """The triggerer's way to read the connection: no blocking call on the event loop.

        Thousands of triggers start together after a triggerer restart; they share one lookup
        per connection id for ``SETTINGS_TTL`` seconds instead of each asking Airflow for it
        (measured with 5,000 triggers: the lookups alone stalled the loop for minutes).
        """
        if "settings" in self.__dict__:
            return self.settings
        loop = asyncio.get_running_loop()
        cache = _async_settings.setdefault(loop, {})
        entry = cache.get(self.magi_conn_id)
        if entry is None or entry[0] < loop.time():
            entry = (loop.time() + SETTINGS_TTL, loop.create_task(self._alookup_settings()))
            cache[self.magi_conn_id] = entry
        try:
            settings = await asyncio.shield(entry[1])
        except Exception:
            if cache.get(self.magi_conn_id) is entry:  # let the next caller try again
                del cache[self.magi_conn_id]
            raise
        self.__dict__["settings"] = settings
        return settings

    async def _alookup_settings(self) -> MagiSettings:
        try:
            conn = await get_async_connection(self.magi_conn_id, self)
        except AirflowNotFoundException:
            settings = _settings_without_connection(self.magi_conn_id, self.log)
        else:
            extra = await get_async_extra_dejson(conn)
            settings = MagiSettings.from_connection(conn, self.magi_conn_id, extra)
        return self._checked(settings)

    def _checked(self, settings: MagiSettings) -> MagiSettings:
        if not settings.api_key:
            raise MagiAuthError(
                f"Airflow connection '{self.magi_conn_id}' has no API key: put the WaveSpeed key "
                "in the connection's password field."
            )
        mask_secret(settings.api_key)
        return settings

    # ---------------------------------------------------------------- sync client (worker)

    @cached_property
    def session(self) -> requests.Session:
        session = requests.Session()
        adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    @property
    def is_local_server(self) -> bool:
        """True when the connection points at plain http on loopback, i.e. a local test server."""
        from airflow_provider_magi.downloads import is_loopback_http

        return is_loopback_http(self.settings.base_url)

    def result_url(self, prediction_id: str) -> str:
        return self.settings.base_url + _result_path(prediction_id)

    def create_prediction(
        self, inputs: Mapping[str, Any], model: str = DEFAULT_MODEL, *, webhook_url: str | None = None
    ) -> Prediction:
        """Submit one generation. Sent once; resent only after a provable rejection (429, no connect).

        Once an HTTP 2xx names a valid prediction id, that id is returned whatever else in the
        answer is malformed, the envelope's ``code`` included: raising instead would let a retry
        pay for a second video. An id that is not valid (see ``api.is_valid_prediction_id``) is
        an uncertain submit, never resent.

        :param webhook_url: WaveSpeed calls it on ``completed`` and ``failed`` (``?webhook=``).
        """
        path = f"/api/v3/{model_path(model)}"
        if webhook_url:
            path += "?" + urlencode({"webhook": webhook_url})
        body = json_body(inputs)
        what = f"Submitting to {model}"
        submitted_at = datetime.now(UTC)
        try:
            data = self._call("POST", path, what=what, body=body, submit=True)
        except MagiSubmitUncertainError as error:
            metrics.incr("submits.uncertain", model=model, conn_id=self.magi_conn_id)
            raise self._with_candidates(error, model, submitted_at) from None
        pred_id = data.get("id")
        if not is_valid_prediction_id(pred_id):
            metrics.incr("submits.uncertain", model=model, conn_id=self.magi_conn_id)
            said = (
                f"success without a prediction id ({dict(data)!r:.200})"
                if pred_id is None
                else f"with an invalid prediction id {describe_id(pred_id)} (an id is {PREDICTION_ID_RULE})"
            )
            uncertain = MagiSubmitUncertainError(
                f"{what}: WaveSpeed answered {said}. It may have accepted the request and the video may "
                "be billed, so it is not sent again and no second generation is billed. Check your "
                "WaveSpeed predictions before running the task again."
            )
            raise self._with_candidates(uncertain, model, submitted_at)
        metrics.incr("submits", model=model, conn_id=self.magi_conn_id)
        prediction, problem = parse_submitted(data, model)
        if problem:
            self.log.warning(
                "Submitted prediction %s, but its answer was malformed: %s", prediction.id, problem
            )
        return prediction

    def _with_candidates(
        self, error: MagiSubmitUncertainError, model: str, submitted_at: datetime
    ) -> MagiSubmitUncertainError:
        """The same error, naming the checked candidates (:meth:`find_submit_candidates`).

        The lookup is best effort and bounded in time: if it fails, the error says so and names
        no candidate, so nothing is attached to on a guess.
        """
        try:
            found = self.find_submit_candidates(model, submitted_at, lookup_seconds=CANDIDATE_LOOKUP_SECONDS)
        except MagiError as lookup_error:
            note = f"Whether it started is unknown: listing predictions to find it failed ({lookup_error})."
            return MagiSubmitUncertainError(f"{error}\n{note}")
        candidates = [
            {"prediction_id": p.id, "status": p.status, "created_at": p.created_at, "model": p.model}
            for p in found
        ]
        if candidates:
            listed = "; ".join(
                f"{c['prediction_id']} ({c['status']}, created {c['created_at']})" for c in candidates
            )
            note = (
                f"WaveSpeed lists {len(candidates)} prediction(s) of {model} created around the "
                f"submit: {listed}."
            )
        else:
            note = (
                f"WaveSpeed lists no prediction of {model} created around the submit: it most "
                "likely did not start."
            )
        return MagiSubmitUncertainError(f"{error}\n{note}", candidates=candidates)

    def find_submit_candidates(
        self,
        model: str,
        submitted_at: datetime,
        *,
        until: datetime | None = None,
        lookup_seconds: float = CANDIDATE_LOOKUP_SECONDS,
    ) -> list[Prediction]:
        """The predictions of ``model`` that WaveSpeed lists as created around a submit.

        The window runs from ``CANDIDATE_WINDOW_SECONDS`` before ``submitted_at`` to as long after
        ``until`` (default: now), for clocks that differ. The server's filters are not trusted:
        every page the total promises is read (bounded) and each item's model and creation time
        are checked here (``api.submit_candidates``). Raises ``MagiHistoryIncompleteError`` when
        the history could not be read whole within ``lookup_seconds``, the request in flight
        included: "unknown" must not pass for "none".
        """
        deadline = time.time() + lookup_seconds
        window = timedelta(seconds=CANDIDATE_WINDOW_SECONDS)
        start = as_utc(submitted_at) - window
        end = as_utc(until or datetime.now(UTC)) + window
        query = history_query(model=model, created_after=start, created_before=end)

        def fetch_page(number: int) -> Mapping[str, Any]:
            page = {**query, "page": number, "page_size": HISTORY_PAGE_SIZE}
            return self._call(
                "POST",
                HISTORY_PATH,
                what="Listing predictions",
                body=json_body(page),
                resend_safe=True,
                deadline=deadline,
                cap_by_deadline=True,
            )

        return submit_candidates(read_whole_history(fetch_page), model, start, end)

    def upload_media(self, image: ImageFile) -> str:
        """Upload a checked first frame; return the URL WaveSpeed serves it at.

        Two steps, as WaveSpeed's SDK does it (see uploads.py); the older multipart endpoint only
        when the two-step one answers 404. An upload starts nothing billable, so unlike a submit
        it is safely resent on failure.
        """
        from airflow_provider_magi import uploads

        what = f"Uploading {image.name}"
        ticket_request = {
            "filename": image.name,
            "size": len(image.content),
            "content_type": image.content_type,
        }
        try:
            data = self._call(
                "POST", uploads.TICKET_PATH, what=what, body=json_body(ticket_request), resend_safe=True
            )
        except MagiRejectedError as error:
            if error.http_status != 404:
                raise
            self.log.info(
                "%s: the two-step upload is not served here (404); using the multipart upload", what
            )
            url = self._upload_multipart(image, what)
        else:
            ticket = uploads.parse_ticket(data, what)
            settings = self.settings
            uploads.put_bytes(
                self.session,
                ticket,
                image.content,
                what=what,
                timeout=(settings.connect_timeout, settings.read_timeout),
                request_timeout=settings.request_timeout,
                max_attempts=settings.max_retries + 1,
                allow_insecure_loopback=self.is_local_server,
            )
            url = ticket.download_url
        self.log.info("Uploaded %s (%d bytes) as %s", image.name, len(image.content), url)
        metrics.incr("upload.bytes", len(image.content), conn_id=self.magi_conn_id)
        return url

    def _upload_multipart(self, image: ImageFile, what: str) -> str:
        """The older one-step upload (multipart field ``file``)."""
        from airflow_provider_magi.uploads import LEGACY_PATH

        data = self._call(
            "POST",
            LEGACY_PATH,
            what=what,
            files={"file": (image.name, image.content, image.content_type)},
            resend_safe=True,
        )
        url = data.get("download_url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise MagiResponseError(f"{what}: the answer has no download_url: {dict(data)!r:.200}")
        return url

    def get_prediction(self, prediction_id: str, *, deadline: float | None = None) -> Prediction:
        """Read a prediction; retries stop at ``deadline`` (Unix time) when one is given."""
        data = self._call(
            "GET",
            _result_path(prediction_id),
            what=f"Reading prediction {prediction_id}",
            prediction_id=prediction_id,
            deadline=deadline,
            is_poll=True,
        )
        return parse_prediction(data)

    def get_webhook_secret(self) -> str:
        """The secret WaveSpeed signs webhook calls with (pass it to ``verify_webhook``)."""
        data = self._call("GET", "/api/v3/webhook/secret", what="Reading the webhook secret")
        secret = data.get("secret")
        if not isinstance(secret, str) or not secret:
            raise MagiResponseError("Reading the webhook secret: the answer has no secret")
        mask_secret(secret)
        return secret

    def list_predictions(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = 100,
        max_pages: int = 10,
        deadline: float | None = None,
    ) -> list[Prediction]:
        """This key's predictions from WaveSpeed's history (the last 7 days), newest first.

        For finding predictions (after an uncertain submit, say), not for waiting on one: the
        docs ask that the history not be polled for a task's status. Reading it starts nothing,
        so it is resent after transient failures like a GET.
        """
        query = history_query(
            model=model, status=status, created_after=created_after, created_before=created_before
        )
        found: list[Prediction] = []
        for page in range(1, max_pages + 1):
            data = self._call(
                "POST",
                HISTORY_PATH,
                what="Listing predictions",
                body=json_body({**query, "page": page, "page_size": page_size}),
                resend_safe=True,
                deadline=deadline,
            )
            items, total = parse_history_page(data)
            found += items
            if not items or len(found) >= total:
                break
        return found

    async def alist_predictions(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = 100,
        max_pages: int = 10,
    ) -> list[Prediction]:
        """:meth:`list_predictions` for the triggerer's event loop."""
        settings = await self.aget_settings()
        query = history_query(
            model=model, status=status, created_after=created_after, created_before=created_before
        )
        shared = shared_async_client(settings)
        policy = RetryPolicy(
            "GET", max_retries=settings.max_retries, max_wait=settings.max_retry_wait, log=self.log
        )
        found: list[Prediction] = []
        for page in range(1, max_pages + 1):
            body = json_body({**query, "page": page, "page_size": page_size})

            async def attempt(body: bytes = body) -> Mapping[str, Any]:
                async with shared.gate:
                    answer = await asend(
                        shared, "POST", settings.base_url + HISTORY_PATH, settings, body=body
                    )
                return raise_for_answer(answer, what="Listing predictions", conn_id=settings.conn_id)

            try:
                data: Mapping[str, Any] = await policy.acall(attempt)
            except (ConnectFailure, ExchangeFailure, MagiError) as error:
                raise settle("GET", error, what="Listing predictions", base_url=settings.base_url) from None
            items, total = parse_history_page(data)
            found += items
            if not items or len(found) >= total:
                break
        return found

    def wait_for_prediction(self, waiter: Waiter) -> Prediction:
        """Poll in this process (a worker slot) until terminal; the trigger is the async twin."""
        while True:
            try:
                prediction = self.get_prediction(waiter.prediction_id, deadline=waiter.deadline)
            except (MagiAuthError, MagiRejectedError):
                raise
            except MagiError as error:
                self.log.warning(
                    "Prediction %s: poll failed, will poll again: %s", waiter.prediction_id, error
                )
            else:
                waiter.observe(prediction, self.log)
                if prediction.is_terminal:
                    return prediction
            delay = waiter.next_delay()
            if delay is None:
                self.log.error("%s", waiter.timeout_message())
                waiter.count_timeout()
                raise waiter.timeout_error()
            time.sleep(delay)

    def download_output(
        self,
        url: str,
        target: WritablePath,
        *,
        checksum: bool = False,
        allow_insecure_loopback: bool = False,
        label: str = "",
    ) -> DownloadedFile:
        """Stream one output to ``target`` atomically. The API key is never sent to output hosts."""
        settings = self.settings
        started = time.monotonic()
        downloaded = download(
            self.session,
            url,
            target,
            timeout=(settings.connect_timeout, settings.read_timeout),
            max_attempts=settings.max_retries + 1,
            checksum=checksum,
            allow_insecure_loopback=allow_insecure_loopback,
            label=label,
            attempt_timeout=settings.download_timeout,
        )
        metrics.incr("download.bytes", downloaded.size, conn_id=self.magi_conn_id)
        metrics.timing("download.time", time.monotonic() - started, conn_id=self.magi_conn_id)
        self._report_output(target)
        return downloaded

    def _report_output(self, target: WritablePath) -> None:
        """Tell Airflow's hook lineage collector about the final file (the temporary one is never
        reported: it is written past the tracking wrapper)."""
        uri = str(target) if hasattr(target, "fs") else f"file://{os.path.abspath(os.fspath(target))}"
        try:
            from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector

            get_hook_lineage_collector().add_output_asset(context=self, uri=uri)
        except Exception:  # lineage must never fail a download that succeeded
            self.log.debug("Could not report %s to the hook lineage collector", uri, exc_info=True)

    def test_connection(self) -> tuple[bool, str]:
        """Prove the key by reading the balance (free): "Connection OK, balance $X".

        Where the balance endpoint answers 404 (a service without it), the key is proved the old
        way instead: reading a prediction that cannot exist, which is refused with 401/403 for a
        wrong key and answered 404 for a good one. Nothing is billed either way. The messages
        speak to someone at the connection form: Airflow tests a copy of the connection under a
        random id, so they name neither that id nor the probe prediction.
        """
        from airflow_provider_magi.costs import usd_text

        where = "WaveSpeed"
        try:
            where = f"WaveSpeed at {self.settings.base_url}"
            balance = self.get_balance()
        except MagiAPIError as error:
            if error.http_status == 404 and not isinstance(error, MagiAuthError):
                return self._probe_key(where)
            return _refused(where, error)
        except MagiResponseError as error:
            if error.http_status is not None and 200 <= error.http_status < 300:  # the key was taken
                return (
                    True,
                    f"Connection OK: {where} accepted the API key (the balance is unreadable: {error}).",
                )
            return False, f"WaveSpeed could not be tested: {error}"
        except MagiError as error:
            return False, f"WaveSpeed could not be tested: {error}"
        return True, f"Connection OK, balance {usd_text(balance)}: {where} accepted the API key."

    def _probe_key(self, where: str) -> tuple[bool, str]:
        """The key test without a balance endpoint: a 404 for a prediction that cannot exist."""
        try:
            self.get_prediction(_PROBE_PREDICTION_ID)
        except MagiAPIError as error:
            if error.http_status == 404 and not isinstance(error, MagiAuthError):
                return True, f"{where} accepted the API key."
            return _refused(where, error)
        except MagiError as error:
            return False, f"WaveSpeed could not be tested: {error}"
        return True, f"{where} accepted the API key."

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        body: bytes | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        prediction_id: str | None = None,
        resend_safe: bool = False,
        deadline: float | None = None,
        cap_by_deadline: bool = False,
        is_poll: bool = False,
        submit: bool = False,
    ) -> Mapping[str, Any]:
        """One exchange with its retries. ``deadline`` stops retries; with ``cap_by_deadline`` it
        also ends the request in flight. ``submit`` reads the answer as a submit's (an id in a
        2xx is kept whatever the envelope's code says)."""
        settings = self.settings
        url = settings.base_url + path
        # The retry rules key on whether resending can start a second generation, not on the verb.
        rule = "GET" if method == "GET" or resend_safe else method

        def attempt() -> Mapping[str, Any]:
            answer = self._send(
                method, url, body=body, files=files, deadline=deadline if cap_by_deadline else None
            )
            if is_poll:
                count_poll(answer, settings.conn_id)
            if submit:
                data, note = read_submit_answer(answer, what=what, conn_id=settings.conn_id)
                if note:
                    self.log.warning("%s: %s", what, note)
                return data
            return raise_for_answer(answer, what=what, conn_id=settings.conn_id, prediction_id=prediction_id)

        policy = RetryPolicy(
            rule,
            max_retries=settings.max_retries,
            max_wait=settings.max_retry_wait,
            log=self.log,
            deadline=deadline,
        )
        try:
            return policy.call(attempt)
        except (ConnectFailure, ExchangeFailure, MagiError) as error:
            raise settle(rule, error, what=what, base_url=settings.base_url) from None

    def _send(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        deadline: float | None = None,
    ) -> HTTPAnswer:
        """One request, ended by ``request_timeout`` or by ``deadline`` (Unix time), the sooner."""
        settings = self.settings
        headers = {**settings.auth_headers, "Accept-Encoding": ACCEPT_ENCODING}
        if body is not None:
            headers["Content-Type"] = "application/json"
        limit = settings.request_timeout
        if deadline is not None:
            limit = min(limit, deadline - time.time())
            if limit <= 0:
                raise MagiTransportError(f"{url}: no time was left before the deadline to send a request")
        with overall_deadline(limit) as watch:
            try:
                response = self.session.request(
                    method,
                    url,
                    data=body,
                    files=files,
                    headers=headers,
                    timeout=(min(settings.connect_timeout, limit), min(settings.read_timeout, limit)),
                    allow_redirects=False,
                    stream=True,
                )
                try:
                    raw: bytes | AnswerTooLarge = take_capped(
                        response.raw.stream(64 * 1024, decode_content=False)
                    )
                except AnswerTooLarge as error:
                    raw = error
                finally:
                    response.close()
            except requests.ConnectTimeout as error:
                raise ConnectFailure(
                    f"connect timeout after {min(settings.connect_timeout, limit):g}s"
                ) from error
            except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL) as error:
                # Raised while building the request: nothing left this machine.
                raise MagiError(f"the request could not be built: {type(error).__name__}") from None
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
                if watch.expired:
                    within = (
                        f"request_timeout ({settings.request_timeout:g}s)"
                        if limit == settings.request_timeout
                        else f"the {limit:.1f}s left before the deadline"
                    )
                    raise ExchangeFailure(f"no complete answer within {within}") from error
                if isinstance(error, requests.ConnectionError) and _never_sent(error):
                    raise ConnectFailure(error_text(error, settings.api_key)) from error
                raise ExchangeFailure(error_text(error, settings.api_key)) from error
        return answer_from(response.status_code, response.headers, raw, settings.api_key)

    # ---------------------------------------------------------------- async client (triggerer)

    async def aget_prediction(self, prediction_id: str, *, deadline: float | None = None) -> Prediction:
        """Same rules and parser as :meth:`get_prediction`, on a client shared across triggers."""
        settings = await self.aget_settings()
        what = f"Reading prediction {prediction_id}"
        url = settings.base_url + _result_path(prediction_id)
        shared = shared_async_client(settings)

        async def attempt() -> Mapping[str, Any]:
            # Inside the gate, so a poll is sent the moment the budget grants it: granted polls
            # queued behind the gate would all go out after a 429 had asked everyone to wait.
            async with shared.gate:
                await shared.budget.acquire()
                answer = await asend(shared, "GET", url, settings)
            count_poll(answer, settings.conn_id)
            rate_limited = False
            try:
                return raise_for_answer(
                    answer, what=what, conn_id=settings.conn_id, prediction_id=prediction_id
                )
            except MagiAPIError as error:
                rate_limited = error.http_status == 429
                if rate_limited:  # every trigger on this key holds off, not just this one
                    hold = error.retry_after
                    # A server asking for an hour would freeze every trigger on the key: the
                    # hold is capped like any other wait.
                    shared.budget.throttled(None if hold is None else min(hold, settings.max_retry_wait))
                raise
            finally:
                if not rate_limited:
                    shared.budget.accepted()

        policy = RetryPolicy(
            "GET",
            max_retries=settings.max_retries,
            max_wait=settings.max_retry_wait,
            log=self.log,
            deadline=deadline,
        )
        try:
            data: Mapping[str, Any] = await policy.acall(attempt)
        except (ConnectFailure, ExchangeFailure, MagiError) as error:
            raise settle("GET", error, what=what, base_url=settings.base_url) from None
        return parse_prediction(data)


def json_body(inputs: Mapping[str, Any]) -> bytes:
    """The submit's body, refused before sending if it is not strict JSON (NaN, infinity)."""
    try:
        return json.dumps(dict(inputs), allow_nan=False).encode()
    except (TypeError, ValueError) as error:
        raise MagiInputError(
            f"Invalid inputs: not strict JSON ({error}). Fix: use finite numbers, strings, lists "
            "and dicts only."
        ) from None


_async_settings: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Task[MagiSettings]]]
] = weakref.WeakKeyDictionary()


def model_path(model: Any) -> str:
    """The URL path of a model id (``owner/name`` or ``owner/name/variant``, as WaveSpeed's SDK
    names them); anything else is refused before sending."""
    text = model.strip().strip("/") if isinstance(model, str) else ""
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(parts) or any(part in (".", "..") for part in parts):
        raise MagiInputError(
            f"Invalid model: {model!r:.80} is not a WaveSpeed model id. Fix: use 'owner/name' "
            f"(or 'owner/name/variant'), for example {DEFAULT_MODEL!r}."
        )
    return "/".join(quote(part, safe="") for part in text.split("/"))


def _result_path(prediction_id: str) -> str:
    if not isinstance(prediction_id, str) or not prediction_id.strip():
        raise MagiError(f"prediction_id must be a non-empty string, got {prediction_id!r}")
    return f"/api/v3/predictions/{quote(prediction_id.strip(), safe='')}/result"


def _never_sent(error: requests.ConnectionError) -> bool:
    """True when no connection was made (to WaveSpeed, or to the proxy in front of it), so the
    request provably never left this machine and a POST may be sent again."""
    reason = error.args[0] if error.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    if isinstance(reason, ProxyError):  # a proxy that refused wraps the refusal
        reason = reason.original_error
    return isinstance(reason, (NewConnectionError, NameResolutionError))


def _refused(where: str, error: MagiAPIError) -> tuple[bool, str]:
    """The connection test's answer to an error status (a refused key says what to fix)."""
    if isinstance(error, MagiAuthError):
        if error.http_status is None:  # refused before sending: the message says why
            return False, str(error)
        fix = "check the API key" if error.http_status == 401 else "check the key's permissions and balance"
        return False, f"{where} refused the API key: {_api_detail(error)}. Fix: {fix}."
    return False, f"{where} answered {error.http_status}: {_api_detail(error)}."


def _api_detail(error: MagiAPIError) -> str:
    return f"{error.http_status} {error.api_message}".strip() if error.api_message else str(error.http_status)
