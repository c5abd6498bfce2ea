"""The worker's transport: one requests session per hook, one retry policy, one deadline per request.

Every call goes through :meth:`MagiSyncClientMixin._call`: the policy decides what may be sent
again (a submit that may have been accepted never is), the watchdog bounds each request as a
whole, and the answer is read capped and scrubbed of the key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

import requests
import urllib3.exceptions
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError, ProxyError

from airflow_provider_magi.api import (
    ConnectFailure,
    ExchangeFailure,
    HTTPAnswer,
    error_text,
    raise_for_answer,
    read_submit_answer,
)
from airflow_provider_magi.bounded import (
    ACCEPT_ENCODING,
    AnswerTooLarge,
    take_capped,
)
from airflow_provider_magi.exceptions import MagiAuthError, MagiError, MagiRejectedError, MagiTransportError
from airflow_provider_magi.hooks.async_client import (
    answer_from,
    count_poll,
)
from airflow_provider_magi.retries import RetryPolicy, settle
from airflow_provider_magi.watchdog import DeadlineAdapter, overall_deadline

if TYPE_CHECKING:
    from airflow.sdk.types import Logger

    from airflow_provider_magi.api import Prediction
    from airflow_provider_magi.hooks.settings import MagiSettings
    from airflow_provider_magi.waiting import Waiter


class MagiSyncClientMixin:
    """``session``, ``_call`` and ``_send`` for :class:`~airflow_provider_magi.hooks.magi.MagiHook`."""

    if TYPE_CHECKING:  # provided by MagiHook

        @property
        def log(self) -> Logger: ...

        @property
        def settings(self) -> MagiSettings: ...

        def get_prediction(self, prediction_id: str, *, deadline: float | None = None) -> Prediction: ...

        async def aget_settings(self) -> MagiSettings: ...

    @cached_property
    def session(self) -> requests.Session:
        session = requests.Session()
        adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

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
        before_resend: Callable[[], None] | None = None,
    ) -> Mapping[str, Any]:
        """One exchange with its retries. ``deadline`` stops retries; with ``cap_by_deadline`` it
        also ends the request in flight. ``submit`` reads the answer as a submit's (an id in a
        2xx is kept whatever the envelope's code says). ``before_resend`` runs before every
        attempt but the first (the ledger records when a submit was last sent)."""
        settings = self.settings
        url = settings.base_url + path
        # The retry rules key on whether resending can start a second generation, not on the verb.
        rule = "GET" if method == "GET" or resend_safe else method
        attempts = 0

        def attempt() -> Mapping[str, Any]:
            nonlocal attempts
            attempts += 1
            if attempts > 1 and before_resend is not None:
                before_resend()
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
                # The read timeout is capped by the time left, so it and the watchdog race to the
                # same instant: whichever fires, a cap that came from the deadline is reported as
                # the deadline's cut, one message however busy the machine.
                if watch.expired or (limit < settings.read_timeout and _read_timed_out(error)):
                    raise ExchangeFailure(_cut_off(limit, settings.request_timeout)) from error
                if isinstance(error, requests.ConnectionError) and _never_sent(error):
                    raise ConnectFailure(error_text(error, settings.api_key)) from error
                raise ExchangeFailure(error_text(error, settings.api_key)) from error
        self._note_server_clock(response.headers.get("Date"))
        if watch.expired:
            # Cut while header lines trickled, http.client can read the cut as the end of the
            # headers: an empty "200" that is no answer at all.
            raise ExchangeFailure(_cut_off(limit, settings.request_timeout))
        return answer_from(response.status_code, response.headers, raw, settings.api_key)

    _server_offset: float | None = None  # WaveSpeed's clock minus this worker's, from ``Date``

    def _note_server_clock(self, date: str | None) -> None:
        """Keep how far WaveSpeed's clock is from this worker's, from an answer's ``Date``."""
        if not date:
            return
        import email.utils

        try:
            when = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError, IndexError):
            return
        if when.tzinfo is not None:
            self._server_offset = when.timestamp() - time.time()

    def server_now(self) -> float:
        """Now on WaveSpeed's clock (Unix time), as its last ``Date`` header put it (to the
        second); this worker's clock until an answer has arrived."""
        return time.time() + (self._server_offset or 0.0)

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


def _cut_off(limit: float, request_timeout: float) -> str:
    within = (
        f"request_timeout ({request_timeout:g}s)"
        if limit == request_timeout
        else f"the {limit:.1f}s left before the deadline"
    )
    return f"no complete answer within {within}"


def _read_timed_out(error: BaseException) -> bool:
    """True when a read timeout (requests', urllib3's or the socket's) is anywhere in the chain."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (requests.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError)):
            return True
        reason = current.args[0] if current.args else None
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        if isinstance(reason, BaseException) and id(reason) not in seen:
            current = reason
        else:
            current = current.__cause__ or current.__context__
    return False


def _never_sent(error: requests.ConnectionError) -> bool:
    """True when no connection was made (to WaveSpeed, or to the proxy in front of it), so the
    request provably never left this machine and a POST may be sent again."""
    reason = error.args[0] if error.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    if isinstance(reason, ProxyError):  # a proxy that refused wraps the refusal
        reason = reason.original_error
    return isinstance(reason, (NewConnectionError, NameResolutionError))
