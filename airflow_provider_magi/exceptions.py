"""Errors the provider raises, each carrying the prediction id and the API's own message.

Errors that a task retry cannot fix (bad input, a refused key, a failed generation, a submit that
may already be billed) derive from ``AirflowFailException`` so Airflow does not retry them.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_magi.compat import AirflowException, AirflowFailException, AirflowTaskTimeout


class MagiError(AirflowException):
    """Base of every error this provider raises."""

    def __init__(self, message: str, *, prediction_id: str | None = None) -> None:
        super().__init__(message)
        self.prediction_id = prediction_id


class MagiAPIError(MagiError):
    """WaveSpeed answered with an error status, in the HTTP status line or the envelope's ``code``."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        api_message: str = "",
        prediction_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, prediction_id=prediction_id)
        self.http_status = status_code
        self.api_message = api_message
        self.retry_after = retry_after


class MagiRejectedError(MagiAPIError, AirflowFailException):
    """400/404/413/422: the request itself is wrong; sending it again cannot help."""


class MagiAuthError(MagiAPIError, AirflowFailException):
    """401/403: the key is wrong or lacks permission or balance."""


class MagiResponseError(MagiError):
    """The server's answer was not the JSON envelope the contract promises."""

    def __init__(
        self, message: str, *, status_code: int | None = None, prediction_id: str | None = None
    ) -> None:
        super().__init__(message, prediction_id=prediction_id)
        self.http_status = status_code


class MagiTransportError(MagiError):
    """The server could not be reached, or stopped answering, after the allowed retries."""


class MagiHistoryIncompleteError(MagiError):
    """The prediction history could not be read whole (a page failed, too many pages, time ran
    out): what it lists is not "all there is", so nothing may be concluded from its absence."""


class MagiSubmitUncertainError(MagiError, AirflowFailException):
    """A submit may have been accepted but no prediction id came back; resending could pay twice.

    ``candidates`` lists the predictions of the same model that WaveSpeed's history shows created
    around the submit (``prediction_id``, ``status``, ``created_at``), newest first, so a person
    can tell in seconds whether it started.
    """

    def __init__(
        self,
        message: str,
        *,
        prediction_id: str | None = None,
        candidates: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message, prediction_id=prediction_id)
        self.candidates = list(candidates or [])


class MagiInputError(MagiError, AirflowFailException, ValueError):
    """An operator argument is invalid; raised before any request is sent."""


class MagiPredictionFailedError(MagiError, AirflowFailException):
    """The prediction reached a failed terminal status; its error text is in the message."""


class MagiTimeoutError(MagiError, AirflowFailException):
    """The prediction did not finish within the task's ``timeout``; it may still be running (and billed)."""


class MagiExecutionTimeoutError(MagiError, AirflowTaskTimeout):
    """The task's ``execution_timeout`` ran out while it waited; Airflow's retries apply, as they do to
    any task that exceeds ``execution_timeout`` (a retry reattaches to the prediction)."""


class MagiDownloadError(MagiError):
    """An output could not be downloaded whole; nothing was left at the destination."""


class MagiLedgerError(MagiError, AirflowFailException):
    """The ledger could not be read or written, so what was paid is unknown.

    Never read as "nothing was paid": that would submit (and bill) again. Not retried either:
    a record that cannot be read reads the same way next try.
    """


class MagiLedgerUnavailableError(MagiError):
    """The ledger's store did not answer (API server down, object store unreachable).

    Retried like any transient failure: nothing was sent to WaveSpeed because of it.
    """


class MagiMissingDependencyError(MagiError, AirflowFailException):
    """An optional extra the task needs is not installed; raised before any request is sent.

    Not retried: the next try runs on the same image without it.
    """


class MagiVideoError(MagiError, AirflowFailException):
    """A clip could not be decoded or joined (a corrupt or unexpected video); not retried, since
    the same bytes fail the same way. Paid scenes stay in the ledger: nothing is paid again."""


class MagiBudgetError(MagiError, AirflowFailException):
    """A spending guard refused the submit: the balance is below the connection's
    ``min_balance_usd``, or the day's spend plus this prediction's price exceeds its
    ``daily_budget_usd``. Nothing was uploaded or submitted. Not retried: a retry a moment later
    reads the same balance and the same spend.
    """


class MagiBudgetCheckError(MagiError):
    """A spending guard could not read what it guards (the balance, or the day's usage stats), so
    it fails safe: nothing was uploaded or submitted. Retried like any transient failure, since
    an endpoint that is down now may answer on the next try.
    """


class MagiBatchIncompleteError(MagiError):
    """Every item of a batch is final, and some failed or were not submitted
    (``fail_on_partial_error``). Retried like any task failure: a retry pays only for the failed
    and never-submitted items."""
