"""Fault injection for the local server: server-wide rules and per-prediction prompt directives.

Server-wide rules (``Fault``) apply to a route for the next N matching requests, or at random.
Per-prediction behaviour comes from directives in the prompt, e.g.
``"a red fox [[fail: GPU out of memory]]"``, so a DAG can ask for a failing video without any
server setup or access to the server process.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

Route = Literal[
    "submit",
    "result",
    "output",
    "upload",
    "upload_ticket",
    "upload_put",
    "history",
    "webhook",
    "balance",
    "billings",
    "usage",
    "any",
]
FaultKind = Literal[
    "status",  # answer with `status` (and Retry-After if set), envelope with the error
    "drop",  # close the connection without answering; a submit is NOT accepted
    "drop_after_accept",  # submit only: create the prediction, then close without answering
    "slow",  # wait `delay` seconds, then answer normally
    "malformed_json",  # HTTP 200 with a body that is not JSON
    "html",  # `status` with an HTML error page, as a proxy would send
    "envelope_error",  # HTTP 200 whose envelope has code `status`
    "truncate",  # output only: promise the full length, send half, close
    "rate_limit",  # 429 with Retry-After once more than `limit` requests arrive per `window` s
    "corrupt_signature",  # webhook only: deliver with a signature that does not match
]

# The same names as plain tuples, for checking what arrives as JSON: one list, two views.
ROUTES: tuple[str, ...] = get_args(Route)
KINDS: tuple[str, ...] = get_args(FaultKind)


# The numeric fields, checked when a fault arrives as JSON ("times": "3" must be a 400, not a
# TypeError that drops the connection at the first matching request).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "status": (int,),
    "retry_after": (int, float, type(None)),
    "delay": (int, float),
    "times": (int, type(None)),
    "probability": (int, float),
    "limit": (int,),
    "window": (int, float),
}


@dataclass
class Fault:
    route: Route
    kind: FaultKind
    status: int = 503
    retry_after: float | None = None
    delay: float = 0.0
    times: int | None = None  # apply to this many matching requests, then retire; None: forever
    probability: float = 1.0
    limit: int = 0  # rate_limit: requests allowed per window
    window: float = 1.0
    _hits: deque[float] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        for name, kinds in _FIELD_TYPES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, kinds):
                nullable = " or null" if type(None) in kinds else ""
                raise ValueError(f"fault field {name!r} must be a number{nullable}, got {value!r}")
        if self.times is not None and self.times < 0:
            raise ValueError(f"fault field 'times' must be >= 0 or null, got {self.times!r}")
        if not 0.0 <= self.probability <= 1.0:  # NaN fails this too
            raise ValueError(f"fault field 'probability' must be from 0 to 1, got {self.probability!r}")
        for name in ("delay", "window", "retry_after"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < float("inf"):  # NaN fails this too
                raise ValueError(f"fault field {name!r} must be a finite number >= 0, got {value!r}")
        if self.route not in ROUTES:
            raise ValueError(f"fault route must be one of {ROUTES}, got {self.route!r}")
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, got {self.kind!r}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Fault:
        allowed = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = set(raw) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


class FaultPlan:
    """The active server-wide faults; safe to change from another thread while serving."""

    def __init__(self, faults: list[Fault] | None = None, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = list(faults or [])
        self._random = random.Random(seed)

    def replace(self, faults: list[Fault]) -> None:
        with self._lock:
            self._faults = list(faults)

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [fault.to_dict() for fault in self._faults]

    def pick(self, route: Route) -> Fault | None:
        """The fault to apply to one request on ``route``, consuming one of its ``times``."""
        now = time.monotonic()
        with self._lock:
            for fault in self._faults:
                if fault.route not in (route, "any"):
                    continue
                if fault.kind == "rate_limit":
                    if _over_rate(fault, now):
                        return fault
                    continue
                if fault.probability < 1.0 and self._random.random() >= fault.probability:
                    continue
                if fault.times is not None:
                    if fault.times <= 0:
                        continue
                    fault.times -= 1
                return fault
        return None


def _over_rate(fault: Fault, now: float) -> bool:
    hits = fault._hits
    while hits and now - hits[0] >= fault.window:
        hits.popleft()
    if len(hits) >= fault.limit:
        fault.retry_after = max(0.05, round(fault.window - (now - hits[0]), 3)) if hits else fault.window
        return True
    hits.append(now)
    return False


@dataclass(frozen=True)
class Directives:
    """What a prompt asks of its prediction on the local server."""

    fail: str | None = None
    never_finish: bool = False
    nsfw: bool = False
    duration: float | None = None
    status: str | None = None  # report this (unknown) status forever
    expire: bool = False  # outputs answer 403 Expired
    truncate: bool = False  # outputs stop halfway
    outputs: int = 1
    size: int | None = None  # bytes per output video


_DIRECTIVE = re.compile(r"\[\[\s*([a-z_]+)\s*(?::\s*([^\]]*?))?\s*\]\]")


def parse_directives(prompt: str) -> Directives:
    values: dict[str, Any] = {}
    for name, arg in _DIRECTIVE.findall(prompt):
        if name == "fail":
            values["fail"] = arg or "The generation failed (local server, [[fail]] directive)."
        elif name == "never":
            values["never_finish"] = True
        elif name in ("nsfw", "expire", "truncate"):
            values[name] = True
        elif name == "duration":
            values["duration"] = float(arg)
        elif name == "status":
            values["status"] = arg or "mystery"
        elif name == "outputs":
            values["outputs"] = int(arg)
        elif name == "size":
            values["size"] = int(arg)
    return Directives(**values)
