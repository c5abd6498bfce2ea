"""Output path claims: every paid output has a path of its own, for every operator shape.

Two rules, each held here once:

* **Distinct within a task.** A filename pattern that renders two items (two outputs of one
  prediction, two inputs of a batch) to one path is refused before anything is paid or written:
  each would replace the last. :func:`refuse_shared_paths` names ``filename`` and the fix.
* **One writer per path across tasks and runs.** A path is claimed for the task instance that
  writes it, ``(dag_id, run_id, task_id, map_index)``, by a marker beside it
  (``<name>.magi-writer.json``), created exclusively on a local path: of two writers that both
  found the path free, the second is refused. A path another task instance claimed, or a file
  already there without a marker, is refused before this task pays (:func:`claim`). A retry or a
  clear of the same task instance is the same writer, and may write again. The long video claims
  its video; the batch claims its folder through its ``manifest.jsonl``.

Object storage offers no exclusive create through fsspec (fsspec#1693): there the marker is
checked, then written, and two writers that start in the same instant can both pass.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_magi.exceptions import MagiInputError

if TYPE_CHECKING:
    from airflow_provider_magi.downloads import WritablePath

# Beside a claimed path: which task instance writes it, so another one never replaces it.
WRITER_SUFFIX = ".magi-writer.json"


def writer_of(context: Mapping[str, Any]) -> dict[str, Any]:
    """The claiming task instance: never the try (a retry or clear is the same writer)."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    return {
        "dag_id": str(ti.dag_id),
        "task_id": str(ti.task_id),
        "run_id": str(ti.run_id),
        "map_index": -1 if map_index is None else int(map_index),
    }


def marker_of(target: WritablePath) -> WritablePath:
    return target.parent / f"{target.name}{WRITER_SUFFIX}"


def claim(
    target: WritablePath,
    writer: Mapping[str, Any],
    *,
    what: str,
    fix: str,
    note: str = "",
    adopt_unmarked: bool = False,
    paid: bool = False,
) -> None:
    """Claim ``target`` for ``writer``, or refuse (``MagiInputError``) when another task instance
    claimed it, or a file is there that no task instance claimed. Call it before paying.

    ``adopt_unmarked``: the writer's own ledger says it wrote there before (a file from a version
    that wrote no markers, met again by a retry or clear after an upgrade): claimed, not refused.
    ``paid``: the caller's prediction is paid already (a download): the refusal says it is kept.
    """
    marker = marker_of(target)
    me = dict(writer)
    owner: Any = None
    if marker.exists():
        owner = _read_marker(marker)
    elif target.exists() and not adopt_unmarked:
        owner = "unknown (no writer marker beside it)"
    else:
        marker.parent.mkdir(parents=True, exist_ok=True)
        if not _create_marker(marker, json.dumps(me)):  # another instance claimed it just now
            owner = _read_marker(marker)
    if owner is not None and owner != me:
        described = ", ".join(f"{k}={v}" for k, v in owner.items()) if isinstance(owner, dict) else owner
        kept = "its prediction is paid and kept" if paid else "nothing was paid for it"
        raise MagiInputError(
            f"Invalid filename: {what} {target} was written by another task instance ({described}); "
            f"this task never replaces it, and {kept}. Fix: {fix}, or delete that "
            f"file and its marker {marker.name} if it may go.{note}"
        )


def release(target: WritablePath, writer: Mapping[str, Any]) -> None:
    """Drop ``writer``'s claim of ``target`` (its marker), when nothing was written there."""
    marker = marker_of(target)
    with contextlib.suppress(OSError, ValueError):
        if marker.exists() and _read_marker(marker) == dict(writer):
            marker.unlink()


def refuse_shared_paths(
    names: Sequence[str],
    *,
    pattern: str,
    items: str,
    fix: str,
    prediction_id: str | None = None,
) -> None:
    """Refuse a pattern that renders two of ``names`` (one per item) to one path; ``items`` says
    what they are ("the 2 outputs of prediction p")."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise MagiInputError(
                f"Invalid filename: {pattern!r} writes {items} to the same path ({name}), so each "
                f"would replace the last; nothing was paid for or written. Fix: {fix}",
                prediction_id=prediction_id,
            )
        seen.add(name)


def refuse_shared_batch_items(pattern: str, count: int, render: Callable[[int, str], str]) -> None:
    """A batch's pattern must tell its items apart: rendered for two items (another index,
    another prediction id), it must give two paths. Checked before the first payment."""
    if count < 2:
        return
    refuse_shared_paths(
        [render(0, "prediction-a"), render(1, "prediction-b")],
        pattern=pattern,
        items=f"all {count} inputs of the batch",
        fix="put {index} (the input's place) or {prediction_id} in filename, e.g. "
        "'{dag_id}/{run_id}/{task_id}/{index}.mp4'",
    )


def refuse_shared_mapped_folder(pattern: str, mapped: bool) -> None:
    """A mapped batch keeps its files and manifest in a folder of its own: a pattern whose folder
    does not hold ``{map_index}`` sends every map index to one folder, each overwriting the
    others' manifest (every map index is refused, before any pays)."""
    if mapped and "{map_index" not in pattern.rpartition("/")[0]:
        raise MagiInputError(
            f"Invalid filename for a mapped batch: {pattern!r} puts every mapped batch's "
            "files and manifest.jsonl in one folder, so each would overwrite the others'. Fix: "
            "put {map_index} in the folder, e.g. '{dag_id}/{run_id}/{task_id}/{map_index}/{index}.mp4'"
        )


def _read_marker(marker: WritablePath) -> Any:
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return "unreadable"


def _create_marker(marker: WritablePath, text: str) -> bool:
    """Write a new marker; False when one exists already. Task instances start together, so on
    a local path (a plain path or a ``file://`` URL) the file is created exclusively: of two that
    both saw no marker, the second is refused before paying, instead of replacing the first's
    claim. Object storage has no exclusive create here: checked before."""
    local = _local_path(marker)
    if local is not None:
        try:
            file = local.open("x")
        except FileExistsError:
            return False
        try:
            with file:
                file.write(text)
        except BaseException:
            # An empty marker would read as another writer's, refusing this task's own retry.
            local.unlink(missing_ok=True)
            raise
        return True
    if marker.exists():
        return False
    marker.write_text(text)
    return True


def _local_path(marker: WritablePath) -> Path | None:
    """The marker as a local ``Path`` (a ``file://`` or ``local://`` ObjectStoragePath is one
    too), or None on object storage."""
    if isinstance(marker, Path):
        return marker
    protocol = getattr(marker, "protocol", None)
    scheme = protocol[0] if isinstance(protocol, (tuple, list)) and protocol else protocol
    if scheme in ("file", "local") and isinstance(getattr(marker, "path", None), str):
        return Path(str(marker.path))
    return None
