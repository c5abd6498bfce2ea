"""The connection, read once: base URL, key, extras and the environment fallback.

Both clients (the worker's requests session and the triggerer's aiohttp client) import this
module, and it imports neither, so nothing imports back into the hook.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import math
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

from airflow_provider_magi.api import (
    DEFAULT_BASE_URL,
)
from airflow_provider_magi.compat import AirflowNotFoundException, mask_secret
from airflow_provider_magi.exceptions import (
    MagiAuthError,
    MagiError,
)

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from airflow.sdk.types import Logger


API_KEY_ENV = "WAVESPEED_API_KEY"
# The one connection id that may fall back to $WAVESPEED_API_KEY (MagiHook.default_conn_name).
DEFAULT_CONN_ID = "magi_default"


_USER_AGENT = "airflow-provider-magi"


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
        _check_extra_read(conn, conn_id, extra)
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


def _check_extra_read(conn: Connection, conn_id: str, extra: Any) -> None:
    """Refuse an extra field that did not read as a JSON object. Airflow's ``extra_dejson``
    logs a parse error and answers ``{}``, which would read as "no min_balance_usd, no
    daily_budget_usd": every task would pay unguarded. The text is not quoted (it may hold
    secrets)."""
    raw = getattr(conn, "extra", None)
    if isinstance(extra, Mapping) and (extra or not isinstance(raw, str) or not raw.strip()):
        return
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not isinstance(extra, Mapping):
        raise MagiError(
            f"Connection '{conn_id}': its extra field is not a JSON object, so none of its "
            "settings (the spending guards min_balance_usd and daily_budget_usd among them) can "
            "be read, and nothing is sent. Fix: correct the extra field's JSON (a trailing comma "
            "or single quotes are common causes)."
        )


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


_NUMERIC_EXTRAS = {
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
KNOWN_EXTRAS = frozenset({*_NUMERIC_EXTRAS, "ledger_path"})
# The extras that stop a payment: a typo in one of them must not leave the guard silently off.
GUARD_EXTRAS = ("min_balance_usd", "daily_budget_usd")
_GUARD_WORDS = ("balance", "budget")


def guard_typos(extra: Mapping[str, Any], conn_id: str) -> list[str]:
    """An error per unknown extra that looks like a spending guard (``min_balance``,
    ``daily_budget``, ``Daily_Budget_USD``): ignored, it would let every task pay unguarded
    while its author believes the guard holds, so it is refused, never merely warned about."""
    errors = []
    for name in sorted(extra):
        bare = name.removeprefix("extra__magi__")
        if bare in KNOWN_EXTRAS:
            continue
        folded = bare.strip().lower()
        close = difflib.get_close_matches(folded, sorted(KNOWN_EXTRAS), n=1)
        guard = close[0] if close and close[0] in GUARD_EXTRAS else None
        if guard is None and any(word in folded for word in _GUARD_WORDS):
            guard = GUARD_EXTRAS[0] if "balance" in folded else GUARD_EXTRAS[1]
        if guard is not None:
            errors.append(
                f"Connection '{conn_id}': extra '{name}' is not one this provider reads, and it "
                f"looks like the spending guard '{guard}'. Ignored, it would leave that guard off "
                f"and let tasks pay unguarded, so nothing is sent. Fix: rename it to '{guard}' "
                f"(the guards are {', '.join(GUARD_EXTRAS)}), or remove it."
            )
    return errors


def unknown_extras(extra: Mapping[str, Any]) -> list[str]:
    """A warning per extra this provider does not read, naming the close match: a typo
    (``max_retry``) is otherwise silently ignored and the default applies."""
    warnings = []
    for name in sorted(extra):
        bare = name.removeprefix("extra__magi__")
        if bare in KNOWN_EXTRAS:
            continue
        close = difflib.get_close_matches(bare, sorted(KNOWN_EXTRAS), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known extras: {', '.join(sorted(KNOWN_EXTRAS))}"
        warnings.append(f"extra '{name}' is not one this provider reads ({hint}); it is ignored")
    return warnings


def _extras(extra: Mapping[str, Any], conn_id: str) -> dict[str, Any]:
    typos = guard_typos(extra, conn_id)
    if typos:
        raise MagiError("\n".join(typos))
    values: dict[str, Any] = {}
    for name, cast in _NUMERIC_EXTRAS.items():
        raw = _given(extra, name, conn_id)
        if raw is None:
            continue
        if isinstance(raw, bool):  # float(True) is 1.0: `"daily_budget_usd": true` read as $1.00
            raise MagiError(_boolean_refusal(conn_id, name, raw))
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


def _boolean_refusal(conn_id: str, name: str, raw: bool) -> str:
    text = "true" if raw else "false"
    if name in GUARD_EXTRAS:
        return (
            f"Connection '{conn_id}': extra '{name}' must be an amount in USD, got {text} (a JSON "
            f"boolean, which would read as ${int(raw)}.00), so nothing is sent. Fix: set it to the "
            f'amount in USD, e.g. "{name}": 25, or remove it to have no such guard.'
        )
    return (
        f"Connection '{conn_id}': extra '{name}' must be a number, got {text} (a JSON boolean). "
        f"Fix: set it to a number, or remove it for the default."
    )


def _given(extra: Mapping[str, Any], name: str, conn_id: str) -> Any:
    """An extra's value, None when not set. Older connection forms stored fields as
    ``extra__<conn_type>__<name>``: an empty field of one form must not hide the other's value
    (a guard would be off), and two values that disagree are not guessed between."""
    given = [raw for raw in (extra.get(name), extra.get(f"extra__magi__{name}")) if raw not in (None, "")]
    if len(given) == 2 and given[0] != given[1]:
        raise MagiError(
            f"Connection '{conn_id}': extras '{name}' ({given[0]!r:.40}) and "
            f"'extra__magi__{name}' ({given[1]!r:.40}) disagree. Fix: keep one of them."
        )
    return given[0] if given else None


def _ledger_path(extra: Mapping[str, Any], conn_id: str) -> str | None:
    raw = _given(extra, "ledger_path", conn_id)
    if raw is None:
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
    default = DEFAULT_CONN_ID
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


_async_settings: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Task[MagiSettings]]]
] = weakref.WeakKeyDictionary()


class MagiConnectionMixin:
    """Turns ``magi_conn_id`` into :class:`MagiSettings`, for the hook (sync) and its triggers (async)."""

    magi_conn_id: str

    if TYPE_CHECKING:  # provided by BaseHook

        @property
        def log(self) -> Logger: ...

        @classmethod
        def get_connection(cls, conn_id: str) -> Connection: ...

    @cached_property
    def settings(self) -> MagiSettings:
        try:
            conn = self.get_connection(self.magi_conn_id)
        except AirflowNotFoundException:
            settings = _settings_without_connection(self.magi_conn_id, self.log)
        else:
            settings = MagiSettings.from_connection(conn, self.magi_conn_id, conn.extra_dejson)
            self._warn_unknown_extras(conn.extra_dejson)
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
            conn = await get_async_connection(self.magi_conn_id, self)  # type: ignore[arg-type]  # a BaseHook
        except AirflowNotFoundException:
            settings = _settings_without_connection(self.magi_conn_id, self.log)
        else:
            extra = await get_async_extra_dejson(conn)
            settings = MagiSettings.from_connection(conn, self.magi_conn_id, extra)
            self._warn_unknown_extras(extra)
        return self._checked(settings)

    def _warn_unknown_extras(self, extra: Mapping[str, Any]) -> None:
        warnings = unknown_extras(extra)
        self.__dict__["extra_warnings"] = warnings  # for the connection test, which reports them
        for warning in warnings:
            self.log.warning("Connection '%s': %s", self.magi_conn_id, warning)

    def _checked(self, settings: MagiSettings) -> MagiSettings:
        if not settings.api_key:
            raise MagiAuthError(
                f"Airflow connection '{self.magi_conn_id}' has no API key: put the WaveSpeed key "
                "in the connection's password field."
            )
        mask_secret(settings.api_key)
        return settings

    @property
    def is_local_server(self) -> bool:
        """True when the connection points at plain http on loopback, i.e. a local test server."""
        from airflow_provider_magi.downloads import is_loopback_http

        return is_loopback_http(self.settings.base_url)
