"""MagiHook: the facade of WaveSpeed's endpoints. The connection lives in ``hooks/settings.py``,
the worker's transport in ``hooks/sync_client.py``, the triggerer's in ``hooks/async_client.py``,
the history in ``hooks/history.py``, the account reads in ``hooks/account.py`` and the Test button
in ``hooks/connection_test.py``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from airflow_provider_magi import metrics
from airflow_provider_magi.api import (
    DEFAULT_MODEL,
    PREDICTION_ID_RULE,
    ConnectFailure,
    ExchangeFailure,
    Prediction,
    describe_id,
    is_valid_prediction_id,
    json_body,
    parse_prediction,
    parse_submitted,
    raise_for_answer,
)
from airflow_provider_magi.compat import BaseHook, mask_secret
from airflow_provider_magi.downloads import DownloadedFile, WritablePath, download
from airflow_provider_magi.exceptions import (
    MagiAPIError,
    MagiError,
    MagiInputError,
    MagiRejectedError,
    MagiResponseError,
    MagiSubmitUncertainError,
)
from airflow_provider_magi.hooks.account import MagiAccountMixin
from airflow_provider_magi.hooks.async_client import (
    asend,
    count_poll,
    shared_async_client,
)
from airflow_provider_magi.hooks.connection_test import MagiConnectionTestMixin
from airflow_provider_magi.retries import RetryPolicy, settle

if TYPE_CHECKING:
    from airflow_provider_magi.validation import ImageFile
from airflow_provider_magi.hooks.history import MagiHistoryMixin
from airflow_provider_magi.hooks.settings import (
    API_KEY_ENV,
    DEFAULT_CONN_ID,
    MagiConnectionMixin,
    MagiSettings,
    normalise_api_key,
)
from airflow_provider_magi.models import spec_of

__all__ = ["API_KEY_ENV", "MagiHook", "MagiSettings", "json_body", "model_path", "normalise_api_key"]


class MagiHook(MagiConnectionMixin, MagiHistoryMixin, MagiAccountMixin, MagiConnectionTestMixin, BaseHook):
    """Talks to WaveSpeed's prediction API for MAGI-1 24B (or any model path on the same API).

    :param magi_conn_id: Airflow connection of type ``magi``: API key as password, optional host
        to override ``https://api.wavespeed.ai``, extras ``connect_timeout``, ``read_timeout``,
        ``max_retries`` and ``max_retry_wait``.
    """

    conn_name_attr = "magi_conn_id"
    default_conn_name = DEFAULT_CONN_ID
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

    def result_url(self, prediction_id: str) -> str:
        return self.settings.base_url + _result_path(prediction_id)

    def create_prediction(
        self,
        inputs: Mapping[str, Any],
        model: str = DEFAULT_MODEL,
        *,
        webhook_url: str | None = None,
        check_guards: bool = True,
        before_resend: Callable[[], None] | None = None,
    ) -> Prediction:
        """Submit one generation. Sent once; resent only after a provable rejection (429, no connect).

        Once an HTTP 2xx names a valid prediction id, that id is returned whatever else in the
        answer is malformed, the envelope's ``code`` included: raising instead would let a retry
        pay for a second video. An id that is not valid (see ``api.is_valid_prediction_id``) is
        an uncertain submit, never resent.

        :param webhook_url: WaveSpeed calls it on ``completed`` and ``failed`` (``?webhook=``).
        :param check_guards: Check the connection's ``min_balance_usd`` and ``daily_budget_usd``
            first (:meth:`check_spending`), so a DAG calling the hook is guarded as the
            operators are. ``False`` only for a caller that has just checked them itself.
        :param before_resend: Called before each resend (after a 429 or a connection never
            made), so the caller can record when the submit was last sent.
        """
        if check_guards:
            spec = spec_of(model)
            price = spec.price_of(inputs) if spec is not None else None
            self.check_spending(model, prices=() if price is None else (price,))
        path = f"/api/v3/{model_path(model)}"
        if webhook_url:
            path += "?" + urlencode({"webhook": webhook_url})
        body = json_body(inputs)
        what = f"Submitting to {model}"
        submitted_at = datetime.now(UTC)
        try:
            data = self._call("POST", path, what=what, body=body, submit=True, before_resend=before_resend)
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
