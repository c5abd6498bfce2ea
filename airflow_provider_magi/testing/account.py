"""The account side of the local server: the balance, billing records and usage stats.

Amounts are kept as :class:`~decimal.Decimal` so a balance goes down by exactly a model's price
(floats would drift after a few hundred videos) and turn into JSON numbers only on the way out.
What is billed, and when, is decided by the app (a completed prediction, ``billing_delay``
seconds after it completed); this module keeps the books and answers the three account routes.
Like the rest of the server, it shares no parsing with the client side.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

DEFAULT_BALANCE_USD = 100.0
# A stand-in only: the real price of each model is on WaveSpeed's pricing page.
DEFAULT_PRICE_USD = 0.30
USAGE_MAX_RANGE = timedelta(days=31)  # the docs' limit for one usage-stats query
_SORTS = {"created_at ASC": False, "created_at DESC": True}
_THOUSANDTH = Decimal("0.001")


def usd(value: float | str | Decimal) -> Decimal:
    """An amount as the books keep it (``0.3`` stays 0.3, not 0.299999...)."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


@dataclass(frozen=True)
class BillingRecord:
    """One deduction, as ``POST /api/v3/billings/search`` lists it."""

    uuid: str
    prediction_id: str
    model: str
    price: Decimal
    at: float  # Unix time it was billed

    @property
    def created_at(self) -> str:
        return _iso(self.at)

    def to_item(self) -> dict[str, Any]:
        price = float(self.price)
        return {
            "uuid": self.uuid,
            "billing_type": "deduct",
            "price": price,
            "created_at": self.created_at,
            "order": {"price": price, "origin_price": price, "state": "paid"},
            "prediction": {"uuid": self.prediction_id, "model_uuid": self.model, "status": "completed"},
        }


@dataclass(frozen=True)
class Submission:
    prediction_id: str
    model: str
    at: float  # Unix time of the submit


class Account:
    """The books of the one account the server's key belongs to (thread-safe)."""

    def __init__(
        self,
        *,
        balance: float = DEFAULT_BALANCE_USD,
        prices: dict[str, float] | None = None,
        default_price: float = DEFAULT_PRICE_USD,
        billing_delay: float = 0.0,
        per_second_prices: dict[str, float] | None = None,
    ) -> None:
        for model, price in [*(prices or {}).items(), *(per_second_prices or {}).items()]:
            if not usd(price).is_finite() or usd(price) < 0:
                raise ValueError(f"the price of {model} must be a non-negative number, got {price!r}")
        if not usd(default_price).is_finite() or usd(default_price) < 0:
            raise ValueError(f"the default price must be a non-negative number, got {default_price!r}")
        if not usd(balance).is_finite():
            raise ValueError(f"the balance must be a finite number of USD, got {balance!r}")
        if billing_delay < 0:
            raise ValueError(f"billing_delay must be >= 0, got {billing_delay!r}")
        self.starting_balance = usd(balance)
        self.prices = {model: usd(price) for model, price in (prices or {}).items()}
        self.per_second_prices = {model: usd(price) for model, price in (per_second_prices or {}).items()}
        self.default_price = usd(default_price)
        self.billing_delay = float(billing_delay)
        # Usage stats lag billing on WaveSpeed: when set, they show only what was billed at or
        # before this Unix time (a test's stand-in for that lag; None: no lag).
        self.usage_until: float | None = None
        self._balance = self.starting_balance
        self._billings: list[BillingRecord] = []
        self._submissions: list[Submission] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------ the books

    def price_of(self, model: str, seconds: int | None = None) -> Decimal:
        """What one completed prediction of ``model`` costs: its flat price (``prices``, else
        the default), or, for a model priced per second and a length in ``seconds``, that many
        seconds at its per-second price."""
        if model not in self.prices and model in self.per_second_prices and seconds is not None:
            return self.per_second_prices[model] * seconds
        return self.prices.get(model, self.default_price)

    def unit_price(self, model: str) -> Decimal:
        """The usage stats' ``unit_price``: the per-second price of a model priced per second,
        else the flat price of one prediction."""
        if model not in self.prices and model in self.per_second_prices:
            return self.per_second_prices[model]
        return self.price_of(model)

    @property
    def balance(self) -> Decimal:
        with self._lock:
            return self._balance

    def set_balance(self, amount: float | str | Decimal) -> None:
        """A finite amount (negative is allowed: predictions in flight can take it below zero)."""
        if not usd(amount).is_finite():
            raise ValueError(f"the balance must be a finite number of USD, got {amount!r}")
        with self._lock:
            self._balance = usd(amount)

    def can_afford(self, price: Decimal) -> bool:
        """A submit is taken when the balance covers its price (predictions still running are
        not held against it, so several in flight can take it below zero)."""
        return self.balance >= price

    def submitted(self, prediction_id: str, model: str, at: float) -> None:
        with self._lock:
            self._submissions.append(Submission(prediction_id, model, at))

    def bill(self, prediction_id: str, model: str, price: Decimal, at: float) -> BillingRecord | None:
        """Deduct ``price`` for a prediction, once: a second call for the same id does nothing."""
        with self._lock:
            if any(record.prediction_id == prediction_id for record in self._billings):
                return None
            record = BillingRecord(uuid.uuid4().hex, prediction_id, model, price, at)
            self._billings.append(record)
            self._balance -= price
            return record

    def is_billed(self, prediction_id: str) -> bool:
        with self._lock:
            return any(record.prediction_id == prediction_id for record in self._billings)

    @property
    def billings(self) -> list[BillingRecord]:
        with self._lock:
            return list(self._billings)

    def reset(self) -> None:
        with self._lock:
            self._balance = self.starting_balance
            self._billings.clear()
            self._submissions.clear()

    # ------------------------------------------------------------ the routes (data or a 400 text)

    def balance_data(self) -> dict[str, Any]:
        return {"balance": float(self.balance)}

    def search(self, query: dict[str, Any]) -> dict[str, Any] | str:
        """``POST /api/v3/billings/search``: ``{page, page_size, billing_type?, prediction_uuids?,
        sort?, start_time?, end_time?}`` (times in milliseconds since the epoch, as strings)."""
        page, size = query.get("page", 1), query.get("page_size", 20)
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            return "page must be an integer >= 1"
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 100:
            return "page_size must be an integer from 1 to 100"
        billing_type = query.get("billing_type")
        if billing_type is not None and not isinstance(billing_type, str):
            return "billing_type must be a string"
        ids = query.get("prediction_uuids")
        if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
            return "prediction_uuids must be a list of strings"
        sort = query.get("sort", "created_at DESC")
        if sort not in _SORTS:
            return f"sort must be one of {sorted(_SORTS)}"
        bounds: dict[str, float] = {}
        for name in ("start_time", "end_time"):
            if query.get(name) is not None:
                millis = _millis(query[name])
                if millis is None:
                    return f"{name} must be milliseconds since the epoch (a string of digits)"
                bounds[name] = millis / 1000
        chosen = [
            record
            for record in self.billings
            if (billing_type is None or billing_type == "deduct")
            and (ids is None or record.prediction_id in ids)
            and record.at >= bounds.get("start_time", float("-inf"))
            and record.at <= bounds.get("end_time", float("inf"))
        ]
        chosen.sort(key=lambda record: record.at, reverse=_SORTS[sort])
        items = [record.to_item() for record in chosen[(page - 1) * size : page * size]]
        return {"page": page, "total": len(chosen), "items": items}

    def usage(self, query: dict[str, Any]) -> dict[str, Any] | str:
        """``POST /api/v3/user/usage_stats``: ``{start_time, end_time, model_uuid?}`` (ISO 8601,
        at most 31 days apart). Counts the billings and submits whose time is in the range."""
        bounds: dict[str, datetime] = {}
        for name in ("start_time", "end_time"):
            try:
                bounds[name] = _iso_time(query[name])
            except KeyError:
                return f"{name} is required (ISO 8601)"
            except (TypeError, ValueError):
                return f"{name} must be an ISO 8601 time"
        start, end = bounds["start_time"], bounds["end_time"]
        if end < start:
            return "end_time must not be before start_time"
        if end - start > USAGE_MAX_RANGE:
            return "the range from start_time to end_time must be at most 31 days"
        model = query.get("model_uuid")
        if model is not None and not isinstance(model, str):
            return "model_uuid must be a string"
        low, high = start.timestamp(), end.timestamp()
        if self.usage_until is not None:
            high = min(high, self.usage_until)
        with self._lock:
            billed = [
                r for r in self._billings if low <= r.at <= high and (model is None or r.model == model)
            ]
            submits = [
                s for s in self._submissions if low <= s.at <= high and (model is None or s.model == model)
            ]
        per_model: dict[str, list[BillingRecord]] = {}
        per_day: dict[str, list[BillingRecord]] = {}
        for record in billed:
            per_model.setdefault(record.model, []).append(record)
            per_day.setdefault(_iso(record.at)[:10], []).append(record)
        return {
            "per_model_usage": [
                {
                    "model_uuid": name,
                    "model_type": "video",
                    "unit_price": _rounded(self.unit_price(name)),
                    "total_cost": _rounded(sum((r.price for r in records), Decimal(0))),
                    "total_count": len(records),
                    "last_used_date": _iso(max(r.at for r in records))[:10],
                }
                for name, records in sorted(per_model.items())
            ],
            "daily_usage": [
                {
                    "date": day,
                    "amount": _rounded(sum((r.price for r in records), Decimal(0))),
                    "count": len(records),
                    "models": [
                        {
                            "model_uuid": name,
                            "amount": _rounded(
                                sum((r.price for r in records if r.model == name), Decimal(0))
                            ),
                            "count": sum(1 for r in records if r.model == name),
                        }
                        for name in sorted({r.model for r in records})
                    ],
                }
                for day, records in sorted(per_day.items())
            ],
            "summary": {
                "total_cost": _rounded(sum((r.price for r in billed), Decimal(0))),
                "total_requests": len(submits),
                "success_requests": len(billed),
            },
        }


def _rounded(amount: Decimal) -> float:
    """USD rounded to 3 decimals, as the docs say the usage stats are."""
    return float(amount.quantize(_THOUSANDTH))


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise TypeError("not a string")
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _millis(value: Any) -> int | None:
    """Milliseconds since the epoch: a string of digits as the docs show it (an int is taken too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        return int(value)
    return None
