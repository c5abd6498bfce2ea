"""The connection's Test button (and ``airflow connections test``): the key proved for free."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from airflow_provider_magi.exceptions import MagiAPIError, MagiAuthError, MagiError, MagiResponseError

if TYPE_CHECKING:
    from airflow_provider_magi.api import Prediction
    from airflow_provider_magi.hooks.settings import MagiSettings

# Asking for a prediction that cannot exist proves the key without starting (and paying for) a
# generation.
_PROBE_PREDICTION_ID = "airflow-connection-test"


class MagiConnectionTestMixin:
    """``test_connection`` for :class:`~airflow_provider_magi.hooks.magi.MagiHook`."""

    if TYPE_CHECKING:

        @property
        def settings(self) -> MagiSettings: ...

        def get_balance(self, *, deadline: float | None = None) -> float: ...
        def connection_problems(self, balance: float) -> list[str]: ...
        def get_prediction(self, prediction_id: str, *, deadline: float | None = None) -> Prediction: ...

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
            settings = self.settings
        except MagiError as error:  # a bad extra (a mistyped guard, say) is the answer itself
            return False, str(error)
        try:
            where = f"WaveSpeed at {settings.base_url}"
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
        accepted = f"balance {usd_text(balance)}: {where} accepted the API key"
        problems = self.connection_problems(balance)
        if problems:  # a test that says OK while a setting is ignored or every submit would fail
            message = f"The key works ({accepted}), but: " + "; ".join(problems) + "."
            _tell_the_cli(message)
            return False, message
        message = f"Connection OK, {accepted}."
        _tell_the_cli(message)
        return True, message

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


def _tell_the_cli(message: str) -> None:
    """``airflow connections test`` prints "Connection success!" and never the hook's message
    (the UI's Test button shows it): the balance is worth seeing there too, so it is printed."""
    if sys.argv[1:3] == ["connections", "test"]:
        sys.stdout.write(f"{message}\n")


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
