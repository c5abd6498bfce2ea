"""A batch item's outputs once its prediction ended: the download operator's rules (atomic files,
the NSFW policy, no key sent to output hosts), and its billed price."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_magi.exceptions import MagiError

if TYPE_CHECKING:
    from airflow_provider_magi.api import Prediction
    from airflow_provider_magi.manifest import ManifestLine

NsfwPolicy = Literal["keep", "skip", "fail"]


class _Refused(Exception):
    """An output the NSFW policy refuses: the item fails, the batch goes on."""


def is_whole(line: ManifestLine) -> bool:
    """Every file the line names is there at the size it was written with."""
    from airflow_provider_magi.operators.download import destination_path

    for path, size in zip(line.paths, line.sizes, strict=True):
        target = destination_path(path)
        try:
            if not target.exists() or target.stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def read_whole(hook: Any, prediction: Prediction, log: Any) -> Prediction:
    """The prediction's own answer (one GET), for a completed one a history page listed without
    outputs."""
    try:
        return hook.get_prediction(prediction.id)
    except MagiError as error:
        log.warning("Batch: prediction %s cannot be read: %s", prediction.id, error)
        return prediction


def deliver(
    hook: Any,
    line: ManifestLine,
    prediction: Prediction,
    *,
    target: Callable[[int, str, int], Any],
    nsfw_policy: NsfwPolicy,
    log: Any,
) -> None:
    """Write a completed item's outputs and note them, or why not, on its manifest line."""
    from airflow_provider_magi.manifest import COMPLETED, FAILED

    flags = prediction.has_nsfw_contents
    paths: list[str] = []
    sizes: list[int] = []
    try:
        for number, url in enumerate(prediction.outputs):
            flagged = number < len(flags) and flags[number]
            if flagged and nsfw_policy == "fail":
                raise _Refused(f"output {number} is flagged NSFW (nsfw_policy='fail')")
            if flagged and nsfw_policy == "skip":
                log.warning("Batch: input %d output %d flagged NSFW: not written.", line.index, number)
                continue
            if flagged:
                log.warning("Batch: input %d output %d flagged NSFW: written anyway.", line.index, number)
            written = hook.download_output(
                url,
                target(line.index, prediction.id, number),
                allow_insecure_loopback=hook.is_local_server,
                label=f"Input {line.index} (prediction {prediction.id}) output {number}",
            )
            paths.append(written.path)
            sizes.append(written.size)
    except (_Refused, MagiError) as error:  # paid and made: a retry downloads it, never pays again
        line.status, line.error = FAILED, str(error)
    else:
        line.status, line.error = COMPLETED, None
    line.paths, line.sizes = paths, sizes
    line.cost_usd = billed_price(hook, prediction.id, log)


def billed_price(hook: Any, prediction_id: str, log: Any) -> float | None:
    """The billed price, one lookup (billing can lag: None then, never a guess)."""
    seconds = hook.settings.cost_lookup_seconds
    if seconds <= 0:
        return None
    try:
        price: float | None = hook.get_prediction_cost(prediction_id, deadline=time.time() + seconds)
    except Exception as error:  # the video is made and paid: its price never fails the batch
        log.warning("Batch: the billing of prediction %s cannot be read: %s", prediction_id, error)
        return None
    return price
