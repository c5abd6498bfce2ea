"""One rendering per try: the inputs a try pays for are the ones it rendered at its first entry.

Airflow renders a task's templates every time the task process starts: at a try's first entry
and again at every resume after a deferral (``execute_complete`` runs in a new process). A
template such as ``"{{ range(0, 100000) | random }}"`` renders to a new value each time, so
without this rule every resume would see inputs it never paid for, and pay again.

The rule, used by every operator shape (one video, a long video's scenes, a batch's items):

1. **First entry of a try.** The input fields are rendered a second time from their unrendered
   values (the values the DAG holds, kept when Airflow rendered them; a mapped task's expanded
   values are not rendered, as Airflow does not render them). Every leaf (``seed``,
   ``scenes[1].seed``, ``inputs[0].prompt``...) whose two renderings differ *varies by itself*
   (random, ``now()``, a presigned URL). The record ``rendering`` in the task's ledger store keeps
   the try number, those leaves with their first rendering, and a short digest of every leaf.
2. **A resume within the same try** (same ``ti.try_number``) puts the recorded values back into
   the leaves that vary by themselves: the inputs are the first entry's again, and their
   fingerprints match what this try paid for. (A leaf that rendered the same twice at the first
   entry but differently now had its data change mid-try, or follows the clock: logged, and
   returned as rendered now in ``changed``; an entry that may pay stops on it, see
   ``MagiTaskMixin._one_rendering``.)
3. **A later try** (a retry, a clear) also puts back the earlier try's self-varying values, so a
   template that only renders differently by itself reattaches to what was paid. Any other leaf
   that renders differently now had its *data* change (an upstream XCom, ``params``, ``conf``,
   an edited DAG): its inputs fingerprint changes, the ledger pays for the new input, and a log
   line names the fields that changed.

Limit, by construction: a template that renders the same twice in a row at a try's first entry
but differently on a later try (a clock to the minute, ``ti.try_number``) counts as changed data.

The record holds the self-varying leaves' values (small: seeds, timestamps) and 6 hex characters
per leaf, never the API key; a batch's JSON Lines file is not templated inside, so only its path
is a leaf. A leaf whose value is not JSON (an ``ObjectStoragePath``) is not recorded: it renders
anew, and a log line says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from airflow_provider_magi.exceptions import MagiLedgerError

RENDERING_RECORD = "rendering"
RENDERING_VERSION = 1
DIGEST_CHARS = 6  # per leaf, only to name what changed: the payment decision uses full fingerprints

LeafPath = tuple[str | int, ...]


def leaves(value: Any, path: LeafPath) -> dict[LeafPath, Any]:
    """Every leaf of a rendered value (lists and mappings are walked), by its path."""
    if isinstance(value, Mapping) and value:
        found: dict[LeafPath, Any] = {}
        for key, item in value.items():
            found.update(leaves(item, (*path, str(key))))
        return found
    if isinstance(value, (list, tuple)) and value:
        found = {}
        for number, item in enumerate(value):
            found.update(leaves(item, (*path, number)))
        return found
    return {path: value}


def _order(path: LeafPath) -> list[tuple[int, Any]]:
    """Paths in a stable order, list indexes by number (``inputs[2]`` before ``inputs[10]``)."""
    return [(0, part) if isinstance(part, int) else (1, part) for part in path]


def path_text(path: Sequence[str | int]) -> str:
    """``("inputs", 0, "seed")`` -> ``inputs[0].seed``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=lambda o: f"{type(o).__qualname__}:{o}")
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


def _is_json(value: Any) -> bool:
    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False


def put_back(value: Any, path: Sequence[str | int], leaf: Any) -> tuple[Any, bool]:
    """``value`` with the leaf at ``path`` replaced (a new object along the path); False when the
    path is not there any more (the list got shorter, a key went)."""
    if not path:
        return leaf, True
    head, rest = path[0], path[1:]
    if isinstance(value, Mapping) and isinstance(head, str):
        for key in value:
            if str(key) == head:
                inner, done = put_back(value[key], rest, leaf)
                return ({**value, key: inner}, True) if done else (value, False)
        return value, False
    if isinstance(value, (list, tuple)) and isinstance(head, int) and 0 <= head < len(value):
        inner, done = put_back(value[head], rest, leaf)
        if not done:
            return value, False
        replaced = list(value)
        replaced[head] = inner
        return (type(value)(replaced) if isinstance(value, tuple) else replaced), True
    return value, False


@dataclass
class RenderingRecord:
    """What a try rendered at its first entry: enough to render the same inputs again."""

    try_number: int
    # Leaves that rendered differently twice in a row, with the first entry's value.
    varying: list[tuple[LeafPath, Any]] = field(default_factory=list)
    # Per field: a digest of its leaves' paths, and DIGEST_CHARS per leaf in that order.
    digests: dict[str, tuple[str, str]] = field(default_factory=dict)
    # When it was written (UTC, ISO 8601): what the ledger's pruning command reads its age from.
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": RENDERING_VERSION,
                "try": self.try_number,
                "varying": [[list(path), value] for path, value in self.varying],
                "digests": {name: list(pair) for name, pair in self.digests.items()},
                "at": self.at,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str, *, where: str) -> RenderingRecord:
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict) or raw.get("v") != RENDERING_VERSION:
                raise ValueError(f"expected a version {RENDERING_VERSION} rendering record")
            try_number = raw["try"]
            if isinstance(try_number, bool) or not isinstance(try_number, int):
                raise ValueError("try is not a number")
            varying = []
            for path, value in raw["varying"]:
                if not isinstance(path, list) or not all(isinstance(p, (str, int)) for p in path):
                    raise ValueError("a varying path is malformed")
                varying.append((tuple(path), value))
            digests = {}
            for name, pair in dict(raw["digests"]).items():
                shape, each = pair
                if not isinstance(shape, str) or not isinstance(each, str):
                    raise ValueError(f"the digests of {name} are malformed")
                digests[str(name)] = (shape, each)
        except (TypeError, ValueError, KeyError, RecursionError) as error:
            raise MagiLedgerError(
                f"The rendering record at {where} cannot be read ({error}), so which inputs this task "
                "paid for is unknown and nothing is submitted. Fix: check the task's earlier logs and "
                "your WaveSpeed predictions, then delete that record to submit afresh."
            ) from None
        return cls(try_number, varying, digests, str(raw.get("at") or ""))


def _field_digests(values: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    digests = {}
    for name, value in values.items():
        found = leaves(value, (name,))
        order = sorted(found, key=_order)
        digests[name] = (_digest([list(p) for p in order]), "".join(_digest(found[p]) for p in order))
    return digests


def changed_leaves(
    record: RenderingRecord, values: Mapping[str, Any], leave_out: Iterable[LeafPath] = ()
) -> list[str]:
    """The leaves that render differently from the record (by digest), self-varying ones left
    out; a field whose shape changed (items added or removed) is named whole."""
    skip = set(leave_out) | {path for path, _ in record.varying}
    now = _field_digests(values)
    changed: list[str] = []
    for name, (shape, each) in now.items():
        was = record.digests.get(name)
        if was is None:
            continue
        if was[0] != shape:
            changed.append(f"{name} (its items or keys changed)")
            continue
        found = leaves(values[name], (name,))
        order = sorted(found, key=_order)
        for number, path in enumerate(order):
            window = slice(number * DIGEST_CHARS, (number + 1) * DIGEST_CHARS)
            if path not in skip and was[1][window] != each[window]:
                changed.append(path_text(path))
    return changed


@dataclass(frozen=True)
class Rendering:
    """What :func:`one_rendering` did: the values to use, and what an earlier try recorded."""

    values: dict[str, Any]
    earlier: RenderingRecord | None  # the record found on entry (this try's or an earlier one's)
    changed: list[str]  # leaves whose data changed since that record (none on a clean resume)


def one_rendering(
    *,
    rendered: Mapping[str, Any],
    render_again: Callable[[Sequence[str]], Mapping[str, Any]] | None,
    try_number: int,
    read: Callable[[str], str | None],
    write: Callable[[str, str], None],
    where: str,
    log: logging.Logger | Any,
    resuming: bool = True,
) -> Rendering:
    """The inputs this entry uses (see the module's rule); records a try's first entry.

    ``resuming``: whether this entry is a resume after a deferral (the caller knows). A record of
    this very try number met at a try's first entry was written by an earlier DAG run with the
    same run id (deleted and created again, as ``airflow dags test`` does for a date, where the
    store is keyed by the run id): it is not this try's, and is ignored.
    """
    text = read(RENDERING_RECORD)
    record = None if text is None else RenderingRecord.from_json(text, where=where)
    if record is not None and record.try_number == try_number and not resuming:
        log.info(
            "Rendering: the record at %s is of try %d of an earlier DAG run with this run id: ignored.",
            where,
            try_number,
        )
        record = None
    values = dict(rendered)
    restored: list[LeafPath] = []
    if record is not None:
        for path, leaf in record.varying:
            if path and path[0] in values:
                values[str(path[0])], done = put_back(values[str(path[0])], path[1:], leaf)
                if done:
                    restored.append(path)
    if record is not None and record.try_number == try_number:  # a resume within the try
        drift = changed_leaves(record, values)
        if restored:
            log.info(
                "Rendering: resuming try %d with the inputs it rendered at its first entry (%s kept).",
                try_number,
                _names(restored),
            )
        if drift:
            log.warning(
                "Rendering: %s render differently than at this try's first entry and did not vary "
                "by themselves then (their data changed mid-try): used as rendered now.",
                ", ".join(drift),
            )
        return Rendering(values, record, drift)
    # The first entry of this try: which leaves vary by themselves?
    varying_now: set[LeafPath] = set()
    unrecorded: list[LeafPath] = []
    if render_again is not None:
        again = render_again(list(rendered))
        for name, value in rendered.items():
            if name not in again:
                continue
            first, second = leaves(value, (name,)), leaves(again[name], (name,))
            if set(first) != set(second):  # a different shape: the whole field varies
                varying_now.add((name,))
            else:
                varying_now |= {path for path in first if _digest(first[path]) != _digest(second[path])}
    changed: list[str] = []
    if record is not None:
        changed = changed_leaves(record, values, leave_out=varying_now)
        if restored:
            log.info(
                "Rendering: %s vary by themselves: kept as try %d rendered them (no new payment for them).",
                _names(restored),
                record.try_number,
            )
        if changed:
            log.warning(
                "Rendering: the data behind %s changed since try %d: those inputs are new and paid for.",
                ", ".join(changed),
                record.try_number,
            )
    kept: list[tuple[LeafPath, Any]] = []
    for path in sorted(varying_now | set(restored), key=_order):
        leaf = leaves(values[str(path[0])], (path[0],)).get(path) if len(path) > 1 else values[str(path[0])]
        if _is_json(leaf):
            kept.append((path, leaf))
        else:
            unrecorded.append(path)
    if unrecorded:
        log.warning(
            "Rendering: %s render differently each time and are not JSON, so they are not recorded: "
            "a resume or retry renders them anew (and pays for the new inputs).",
            _names(unrecorded),
        )
    if varying_now - set(restored):
        log.info(
            "Rendering: %s render differently each time: this try pays for this rendering, and its "
            "resumes and later tries keep it.",
            _names(sorted(varying_now - set(restored), key=_order)),
        )
    write(RENDERING_RECORD, RenderingRecord(try_number, kept, _field_digests(values)).to_json())
    return Rendering(values, record, changed)


def _names(paths: Iterable[LeafPath], limit: int = 10) -> str:
    named = [path_text(p) for p in paths]
    return ", ".join(named[:limit]) + (f" and {len(named) - limit} more" if len(named) > limit else "")
