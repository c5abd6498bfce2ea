"""What a batch says while it runs and when it ends: a progress line per change of its counts (never
the same line twice, across resumes too), the counts in XCom, the final summary once, and each
failed input's reason."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

XCOM_PROGRESS = "batch_progress"
# The batch's end logs each failed input's reason, up to this many (all are in the manifest).
FAILURES_LOGGED = 20


def report_progress(
    lines: Iterable[Any], manifest_path: Any, carry: dict[str, Any], ti: Any, log: Any, *, final: bool
) -> None:
    """Log the counts when they changed since the last line (``carry`` rides in the trigger, so a
    resume does not say them again), or the summary at the end; publish them in XCom."""
    from airflow_provider_magi import costs
    from airflow_provider_magi.manifest import summary

    lines = list(lines)
    counts = summary(lines, str(manifest_path))
    key = [
        counts["succeeded"],
        counts["failed"],
        counts["running"],
        counts["not_submitted"],
        counts["uncertain"],
        counts["prices_unknown"],
    ]
    unknown = counts["prices_unknown"]
    prices = f" ({unknown} price(s) not known yet: billing lags completion)" if unknown else ""
    tally = (
        f"{counts['succeeded']}/{len(lines)} completed, {counts['failed']} failed, "
        f"{counts['running']} running, {counts['not_submitted']} not submitted, "
        f"{counts['uncertain']} uncertain"
    )
    if final:
        log.info(
            "Batch finished: %s; %s billed%s. Manifest: %s",
            tally,
            costs.usd_text(counts["cost_usd"]),
            prices,
            manifest_path,
        )
    elif key == carry.get("progress"):
        return
    else:
        log.info("Batch: %s, %s so far%s.", tally, costs.usd_text(counts["cost_usd"]), prices)
    carry["progress"] = key
    ti.xcom_push(key=XCOM_PROGRESS, value=counts)


def log_failures(lines: Iterable[Any], manifest_path: Any, log: Any) -> None:
    """Each failed (or uncertain) input's reason, the first :data:`FAILURES_LOGGED`; the rest are
    in the manifest."""
    from airflow_provider_magi.manifest import FAILED, UNCERTAIN

    failed = sorted(
        (line for line in lines if line.status in (FAILED, UNCERTAIN)), key=lambda line: line.index
    )
    for line in failed[:FAILURES_LOGGED]:
        log.warning(
            "Batch: input %d %s%s: %s",
            line.index,
            line.status,
            f" (prediction {line.prediction_id})" if line.prediction_id else "",
            line.error or "no reason given",
        )
    if len(failed) > FAILURES_LOGGED:
        log.warning(
            "Batch: %d more failed or uncertain input(s); their reasons are in the manifest at %s.",
            len(failed) - FAILURES_LOGGED,
            manifest_path,
        )


def warn_identical(items: list[Any], log: Any) -> None:
    """Identical items without a key are each paid for: say so once per try."""
    from airflow_provider_magi.batch_inputs import identical_items

    groups = identical_items(items)
    if groups:
        log.warning(
            "Batch: %d group(s) of identical inputs without a key, each paid for as many times as it is "
            "listed: %s. Give them keys to tell them apart, or remove the copies.",
            len(groups),
            "; ".join(compact(group) for group in groups[:20]),
        )


def verdict(
    lines: Iterable[Any],
    result: dict[str, Any],
    manifest_path: Any,
    *,
    stopped: str | None,
    timed_out: bool,
    deadline_reason: str,
    fail_on_partial_error: bool,
    log: Any,
) -> dict[str, Any]:
    """How the batch ends once every item is final (or its time ran out): ``result``, or the
    error that names what failed, was not submitted or still runs, and what a retry pays for."""
    from airflow_provider_magi.exceptions import MagiBatchIncompleteError, MagiBudgetError
    from airflow_provider_magi.manifest import FAILED, NOT_SUBMITTED, RUNNING, UNCERTAIN
    from airflow_provider_magi.paying.deadline import DEADLINE_EXECUTION_TIMEOUT, expiry_error

    lines = list(lines)
    by = {
        status: [line for line in lines if line.status == status]
        for status in (FAILED, NOT_SUBMITTED, RUNNING, UNCERTAIN)
    }
    problems = "; ".join(f"{status}: inputs {indexes(found)}" for status, found in by.items() if found)
    where = f"The manifest at {manifest_path} has a line per input."
    if timed_out:
        execution = deadline_reason == DEADLINE_EXECUTION_TIMEOUT
        limit = "the task's execution_timeout" if execution else "the batch's timeout"
        then = (
            "A retry (retries apply) waits for the running ones and pays only for the rest."
            if execution
            else "Not retried; a clear waits for the running ones and pays only for the rest."
        )
        raise expiry_error(deadline_reason, f"Batch: {limit} passed with {problems}. {then} {where}")
    if stopped and by[NOT_SUBMITTED] and not fail_on_partial_error:
        # What was paid is delivered: the task succeeds with its manifest, and says what waits.
        log.warning(
            "Batch: %s. Not submitted: inputs %s (fail_on_partial_error=False: the task succeeds "
            "with what was paid). A clear after raising the budget (or topping up) pays only for "
            "those. %s",
            stopped,
            indexes(by[NOT_SUBMITTED]),
            where,
        )
        return result
    if stopped and by[NOT_SUBMITTED]:
        raise MagiBudgetError(
            f"Batch: {stopped}. Not submitted: inputs {indexes(by[NOT_SUBMITTED])}. Fix: raise the "
            f"budget (or top up) and clear this task: only those are paid for. {where}"
        )
    if problems and fail_on_partial_error:
        raise MagiBatchIncompleteError(
            f"Batch: {result['succeeded']} of {len(lines)} completed; {problems}. Outputs are "
            f"kept; a retry or clear submits only the failed and not-submitted inputs. {where}"
        )
    if problems:
        log.warning("Batch: %s (fail_on_partial_error=False). %s", problems, where)
    return result


def close_lines(lines: Iterable[Any], hook: Any, log: Any, *, timed_out: bool, deadline_reason: str) -> None:
    """Before the end: one more look for prices still unknown (billing lags completion), and on
    a timeout, each running item's line says it may still be billed."""
    from airflow_provider_magi.batch_outputs import billed_price
    from airflow_provider_magi.manifest import COMPLETED, RUNNING
    from airflow_provider_magi.paying.deadline import DEADLINE_EXECUTION_TIMEOUT

    execution = deadline_reason == DEADLINE_EXECUTION_TIMEOUT
    limit = "the task's execution_timeout" if execution else "the batch's timeout"
    for line in lines:
        if line.status == COMPLETED and line.cost_usd is None and line.prediction_id:
            line.cost_usd = billed_price(hook, line.prediction_id, log)
        if timed_out and line.status == RUNNING:
            line.error = f"still running when {limit} passed (it may still be billed)"


def indexes(lines: Iterable[Any]) -> str:
    """The input indexes of these manifest lines, compact."""
    return compact(sorted(line.index for line in lines))


def compact(numbers: list[int], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")
