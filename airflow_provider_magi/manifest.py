"""A batch's manifest: one JSON line per input, in input order, rewritten whole as items finish.

The manifest is the batch's own truth for what was made and what it cost, kept beside the
videos (``manifest.jsonl`` in the batch's folder). It is replaced atomically (a temporary name,
then a rename), so a reader, or a retry after a killed worker, sees the last whole version and
never half of one. A retry reads it back to skip items whose files are already whole.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MANIFEST_NAME = "manifest.jsonl"

# An item's status in the manifest.
COMPLETED = "completed"
FAILED = "failed"
NOT_SUBMITTED = "not_submitted"
RUNNING = "running"  # submitted, not finished yet (or still running when the batch gave up)
UNCERTAIN = "uncertain"  # a submit whose answer was lost: it may be paid; never sent again blindly
STATUSES = (COMPLETED, FAILED, NOT_SUBMITTED, RUNNING, UNCERTAIN)


@dataclass
class ManifestLine:
    """What one input became."""

    index: int
    status: str = NOT_SUBMITTED
    prediction_id: str | None = None
    cost_usd: float | None = None
    paths: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    error: str | None = None
    # Predictions an earlier try paid for this input that did not complete, replaced by a submit
    # of this try (oldest first): a resume within the try must not mistake them for this try's.
    replaced: list[str] = field(default_factory=list)
    key: str | None = None  # the item's own key and metadata, as its input gave them
    metadata: dict[str, Any] | None = None
    # What the item asked for and its price when the catalogue knows it before any bill (MAGI-2:
    # seconds of video at $0.08 each); left out of the line when not known.
    duration: int | None = None
    price_usd: float | None = None

    def paid_per_manifest(self) -> str | None:
        """The prediction this line says the input's last submit started: an id no earlier try
        replaced, on a line past ``not_submitted``; else None."""
        from airflow_provider_magi.api import is_valid_prediction_id

        paid = self.prediction_id
        if (
            self.status in (NOT_SUBMITTED, UNCERTAIN)
            or not is_valid_prediction_id(paid)
            or paid in self.replaced
        ):
            return None
        return paid

    def to_json(self) -> str:
        return json.dumps(
            {
                "index": self.index,
                "prediction_id": self.prediction_id,
                "status": self.status,
                "cost_usd": self.cost_usd,
                "paths": self.paths,
                "sizes": self.sizes,
                "error": self.error,
                "replaced": self.replaced,
                "key": self.key,
                "metadata": self.metadata,
                **({"duration": self.duration} if self.duration is not None else {}),
                **({"price_usd": self.price_usd} if self.price_usd is not None else {}),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ManifestLine | None:
        """A line read back, or None when it is not one of ours (a retry then treats the item as
        unknown and asks WaveSpeed, never trusting a damaged line)."""
        index, status = raw.get("index"), raw.get("status")
        if isinstance(index, bool) or not isinstance(index, int) or status not in STATUSES:
            return None
        paths, sizes = raw.get("paths") or [], raw.get("sizes") or []
        if not (isinstance(paths, list) and isinstance(sizes, list) and len(paths) == len(sizes)):
            return None
        if not all(isinstance(size, int) and not isinstance(size, bool) for size in sizes):
            return None  # kept, they would no longer pair with the paths
        cost = raw.get("cost_usd")
        return cls(
            index=index,
            status=str(status),
            prediction_id=raw.get("prediction_id") if isinstance(raw.get("prediction_id"), str) else None,
            cost_usd=float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
            paths=[str(p) for p in paths],
            sizes=[int(s) for s in sizes],
            error=raw.get("error") if isinstance(raw.get("error"), str) else None,
            replaced=[str(p) for p in raw.get("replaced") or [] if isinstance(p, str)]
            if isinstance(raw.get("replaced"), list)
            else [],
        )


def render(lines: Iterable[ManifestLine]) -> str:
    """The manifest's text: one line per input, sorted by index (input order)."""
    return "".join(line.to_json() + "\n" for line in sorted(lines, key=lambda line: line.index))


def parse(text: str) -> dict[int, ManifestLine]:
    """Lines by index; damaged lines are skipped (see :meth:`ManifestLine.from_mapping`)."""
    found: dict[int, ManifestLine] = {}
    for raw_line in text.splitlines():
        try:
            raw = json.loads(raw_line)
        except ValueError:
            continue
        if isinstance(raw, Mapping) and (line := ManifestLine.from_mapping(raw)) is not None:
            found[line.index] = line
    return found


def read_manifest(path: Any) -> dict[int, ManifestLine]:
    """The manifest at ``path`` (a ``pathlib.Path`` or ``ObjectStoragePath``); empty if none."""
    try:
        if not path.exists():
            return {}
        with path.open("r") as handle:
            return parse(handle.read())
    except (OSError, UnicodeDecodeError):
        return {}


def write_manifest(path: Any, lines: Iterable[ManifestLine]) -> None:
    """Replace the manifest whole: a temporary name beside it, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.part"
    with staged.open("w") as handle:
        handle.write(render(lines))
    staged.rename(path)


def summary(lines: Iterable[ManifestLine], manifest_path: str) -> dict[str, Any]:
    """The batch's XCom summary: counts by status, the total billed (known costs only) and how
    many completed videos' prices are not known yet (billing lags completion: the total is then
    short by their prices)."""
    counts = dict.fromkeys(STATUSES, 0)
    total = 0.0
    unknown = 0
    for line in lines:
        counts[line.status] += 1
        if line.cost_usd is not None:
            total += line.cost_usd
        elif line.status == COMPLETED:
            unknown += 1
    return {
        "manifest_path": manifest_path,
        "succeeded": counts[COMPLETED],
        "failed": counts[FAILED],
        "not_submitted": counts[NOT_SUBMITTED],
        "running": counts[RUNNING],
        "uncertain": counts[UNCERTAIN],
        "cost_usd": round(total, 6),
        "prices_unknown": unknown,
    }


def running_lines(lines: dict[int, ManifestLine]) -> list[ManifestLine]:
    """What may still be billed, in input order."""
    return sorted((line for line in lines.values() if line.status == RUNNING), key=lambda line: line.index)


def pending_lines(lines: dict[int, ManifestLine]) -> list[ManifestLine]:
    """What the next wave pays for, in input order."""
    return sorted(
        (line for line in lines.values() if line.status == NOT_SUBMITTED), key=lambda line: line.index
    )
