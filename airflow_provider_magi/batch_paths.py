"""Where a batch writes: each item's files and the folder's manifest, claimed before anything is
paid (:mod:`~airflow_provider_magi.paying.claims`), so no two items, tasks or runs share a path."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_magi.exceptions import MagiInputError

if TYPE_CHECKING:
    from airflow.sdk import Context

DEFAULT_BATCH_FILENAME = "{dag_id}/{run_id}/{task_id}/{index}.mp4"
DEFAULT_MAPPED_BATCH_FILENAME = "{dag_id}/{run_id}/{task_id}/{map_index}/{index}.mp4"
BATCH_FIELDS = ("dag_id", "task_id", "run_id", "map_index", "ds", "prediction_id", "index", "output")


def check_pattern(pattern: Any) -> None:
    """Refuse unknown ``{fields}`` when the DAG is parsed, not after the batch paid."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise MagiInputError(f"Invalid filename: {pattern!r}. Fix: pass a string pattern")
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError as error:
        raise MagiInputError(f"Invalid filename: {pattern!r} ({error})") from None
    for name in names:
        if name.split(".")[0].split("[")[0] not in BATCH_FIELDS:
            raise MagiInputError(
                f"Invalid filename: {pattern!r} uses an unknown field {{{name}}}. Fix: use only "
                f"{{{'}, {'.join(BATCH_FIELDS)}}}; {{index}} is the item's place in inputs"
            )


@dataclass
class BatchPaths:
    """The batch's filename pattern rendered for this task instance, and its manifest's place."""

    pattern: str
    directory: Any
    values: dict[str, Any]
    folder: Any
    manifest_path: Any

    @classmethod
    def prepare(cls, context: Context, filename: str | None, destination: Any, count: int) -> BatchPaths:
        """Every input a path of its own, and the folder (through its manifest) one task
        instance's alone; refused before anything is paid."""
        from airflow_provider_magi.manifest import MANIFEST_NAME
        from airflow_provider_magi.operators.download import (
            destination_path,
            filename_values,
            render_filename,
        )
        from airflow_provider_magi.paying.claims import refuse_shared_batch_items, refuse_shared_mapped_folder

        map_index = getattr(context["ti"], "map_index", -1)
        mapped = map_index is not None and map_index >= 0
        pattern = filename or (DEFAULT_MAPPED_BATCH_FILENAME if mapped else DEFAULT_BATCH_FILENAME)
        check_pattern(pattern)
        refuse_shared_mapped_folder(pattern, mapped)
        directory = destination_path(destination)
        values = filename_values(context, "", 0)
        first = render_filename(pattern, {**values, "prediction_id": "x", "index": 0, "output": 0})
        folder_name = first.rsplit("/", 1)[0] if "/" in first else ""
        folder = directory / folder_name if folder_name else directory
        paths = cls(pattern, directory, values, folder, folder / MANIFEST_NAME)
        refuse_shared_batch_items(
            pattern, count, lambda index, prediction_id: paths.name(index, prediction_id, 0)
        )
        return paths

    def claim(self, context: Context, *, adopt_unmarked: bool) -> None:
        """The folder is this task instance's alone (:func:`~airflow_provider_magi.paying.claims.claim`);
        a manifest without a marker is adopted only when this task instance's ledger shows it paid
        before (written by a version without markers)."""
        from airflow_provider_magi.paying.claims import claim, writer_of

        claim(
            self.manifest_path,
            writer_of(context),
            what="the batch's manifest",
            fix="give each task and run a folder of its own: put {run_id} and {task_id} (and "
            "{map_index} when mapped) in filename's folder, e.g. '{dag_id}/{run_id}/{task_id}/{index}.mp4'",
            adopt_unmarked=adopt_unmarked,
        )

    def target(self, index: int, prediction_id: str, output: int) -> Any:
        return self.directory / self.name(index, prediction_id, output)

    def name(self, index: int, prediction_id: str, output: int) -> str:
        from airflow_provider_magi.operators.download import render_filename

        name = render_filename(
            self.pattern, {**self.values, "prediction_id": prediction_id, "index": index, "output": output}
        )
        if output and "{output" not in self.pattern:  # keep an item's second output apart from its first
            stem, dot, suffix = name.rpartition(".")
            name = f"{stem}_{output}.{suffix}" if dot and "/" not in suffix else f"{name}_{output}"
        return name
