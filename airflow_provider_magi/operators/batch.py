"""MagiBatchOperator: N videos in one task: waves of submits, one wait, one manifest, each paid once.

A nightly table of 500 prompts as 500 mapped tasks pays Airflow's per-task cost 500 times (the
submits, a trigger each, a resume each) and cannot keep a budget exact across parallel tasks.
This task instead:

1. checks every input before the first payment (``batch_inputs``);
2. submits a wave of at most ``max_in_flight`` minus what is running, in input order, after the
   balance floor and daily budget say how many fit, recording the wave in the ledger before and
   after its POSTs (``batch_ledger``: two writes per wave, not two per video);
3. defers to one :class:`~airflow_provider_magi.triggers.batch.MagiBatchTrigger`, which reads
   status 100 predictions per history call and comes back when enough have ended;
4. downloads each completed item (the download operator's atomic code and NSFW policy), looks
   up its billed price, and rewrites ``manifest.jsonl`` (``manifest``) as items finish;
5. repeats until every item is final, then returns the summary (or fails naming what failed).

A retry or a clear resumes from the ledger and the manifest: running predictions are waited
for, whole files are kept, and only failed and never-submitted items are paid for again.
"""

from __future__ import annotations

import math
import string
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_magi.api import DEFAULT_MODEL
from airflow_provider_magi.compat import BaseOperator
from airflow_provider_magi.exceptions import MagiError, MagiInputError
from airflow_provider_magi.paying.batch import compact, indexes
from airflow_provider_magi.task_mixin import MagiTaskMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_magi.api import Prediction
    from airflow_provider_magi.manifest import ManifestLine

# WaveSpeed's entry account level runs 2-3 predictions at once (more queue on its side; its
# docs show two tables) and higher levels 300 to 10,000: a default that never trips the lowest
# level's rate limits by much, to be raised to your level's concurrency.
DEFAULT_MAX_IN_FLIGHT = 5
DEFAULT_BATCH_FILENAME = "{dag_id}/{run_id}/{task_id}/{index}.mp4"
DEFAULT_MAPPED_BATCH_FILENAME = "{dag_id}/{run_id}/{task_id}/{map_index}/{index}.mp4"
BATCH_FIELDS = ("dag_id", "task_id", "run_id", "map_index", "ds", "prediction_id", "index", "output")
# A wave is worth a resume once this share of max_in_flight is free: a resume costs a worker
# slot and, on Airflow 3.3 with LocalExecutor, meets a race that can fail the task
# (apache/airflow#66374), so a batch resumes per wave, not per finished video.
WAVE_SHARE = 0.5
# Predictions created this long before a wave started still count as its (clocks differ).
CLOCK_MARGIN = timedelta(seconds=60)
# The manifest is rewritten as items finish, but not more often than this while downloading.
MANIFEST_EVERY_SECONDS = 1.0
XCOM_PROGRESS = "batch_progress"
# The batch's end logs each failed input's reason, up to this many (all are in the manifest).
FAILURES_LOGGED = 20
NsfwPolicy = Literal["keep", "skip", "fail"]


def resume_after(running: int, pending: int, max_in_flight: int) -> int:
    """How many of the ``running`` predictions must end before the task resumes: a wave's worth
    of free slots (``WAVE_SHARE`` of ``max_in_flight``, or every ``pending`` input if fewer),
    counting slots already free; with nothing left to submit, all of them (one last resume
    downloads what is left)."""
    if pending <= 0:
        return max(1, running)
    free_now = max(0, max_in_flight - running)
    wave = min(pending, math.ceil(max_in_flight * WAVE_SHARE))
    return max(1, min(running, wave - free_now))


class MagiBatchIncompleteError(MagiError):
    """Every item is final, and some failed or were not submitted (``fail_on_partial_error``).

    Retried like any task failure: a retry pays only for the failed and never-submitted items.
    """


def _check_pattern(pattern: Any) -> None:
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


class MagiBatchOperator(MagiTaskMixin, BaseOperator):
    """Generate one video per input with MAGI-1 on WaveSpeed, in one task, each paid for once.

    :param inputs: The batch: a list whose items are a prompt or a dict with ``prompt`` and
        optional ``image``, ``seed``, ``extra_inputs``; or the JSON text of such a list; or a JSON
        Lines file (one item per line) as an absolute path, a URL or an ``ObjectStoragePath``, for
        batches too big for XCom. Templated. Every item is checked before anything is paid.
    :param destination: Directory for the videos and ``manifest.jsonl``: a local path, an
        object-storage URL or an ``ObjectStoragePath``. Templated.
    :param filename: Pattern below ``destination``; fields ``{dag_id}``, ``{task_id}``,
        ``{run_id}``, ``{map_index}``, ``{ds}``, ``{prediction_id}``, ``{index}`` (the item's
        place in ``inputs``) and ``{output}`` (an item's output number). Default
        ``{dag_id}/{run_id}/{task_id}/{index}.mp4`` (``.../{map_index}/{index}.mp4`` when
        mapped; a mapped batch's own pattern must put ``{map_index}`` in the folder). The
        manifest goes in the folder of item 0's first file. Refused before anything is paid: a
        pattern that sends two inputs to one path, and a folder another task or run claimed
        (:mod:`airflow_provider_magi.paying.claims`). Templated.
    :param max_in_flight: How many of the batch's predictions may be unfinished at once. Set it
        to your WaveSpeed account level's concurrency (the entry level runs 2-3 at once).
    :param fail_on_partial_error: Fail the task once every item is final if any failed or was
        not submitted (outputs and manifest kept; a retry or clear pays only for those). False:
        succeed, and the manifest and summary tell.
    :param nsfw_policy: What a flagged output does: ``keep`` (warn), ``skip`` (not written) or
        ``fail`` (the item fails).
    :param model: WaveSpeed model path. Templated.
    :param magi_conn_id: Airflow connection of type ``magi``. Templated.
    :param deferrable: Wait in the triggerer (one trigger for the whole batch).
    :param poll_interval: Seconds between status reads at first (each read covers 100 videos).
    :param max_poll_interval: The longest gap between two reads once waits grow long.
    :param timeout: Give up waiting after this long; the task fails, without retrying, naming
        what still runs. ``execution_timeout`` (a BaseOperator argument) counts from when the
        try's first ``execute`` began, bounds the deferred waits too, and raises Airflow's
        ``AirflowTaskTimeout``: retries apply, and a retry waits for the predictions already
        running (it never pays for them again) and submits only the rest.
    """

    template_fields: Sequence[str] = ("inputs", "destination", "filename", "model", "magi_conn_id")
    template_fields_renderers = {"inputs": "json"}
    rendered_inputs = ("inputs",)
    ui_color = "#efe3ff"

    def __init__(
        self,
        *,
        inputs: Any,
        destination: Any,
        filename: str | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        fail_on_partial_error: bool = True,
        nsfw_policy: NsfwPolicy = "keep",
        model: str = DEFAULT_MODEL,
        magi_conn_id: str = "magi_default",
        deferrable: bool = True,
        poll_interval: float = 10.0,
        max_poll_interval: float = 60.0,
        timeout: float | timedelta | None = timedelta(hours=6),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if filename is not None:
            _check_pattern(filename)
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise MagiInputError(
                f"Invalid max_in_flight: {max_in_flight!r}. Fix: a whole number >= 1 (your WaveSpeed "
                "account level's concurrency)"
            )
        if nsfw_policy not in ("keep", "skip", "fail"):
            raise MagiInputError(f"Invalid nsfw_policy: {nsfw_policy!r}. Fix: 'keep', 'skip' or 'fail'")
        if float(poll_interval) <= 0:
            raise MagiInputError(
                f"Invalid poll_interval: {poll_interval!r}. Fix: a positive number of seconds"
            )
        self.inputs = inputs
        self.destination = destination
        self.filename = filename
        self.max_in_flight = max_in_flight
        self.fail_on_partial_error = fail_on_partial_error
        self.nsfw_policy = nsfw_policy
        self.model = model
        self.magi_conn_id = magi_conn_id
        self.deferrable = deferrable
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = max(self.poll_interval, float(max_poll_interval))
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self._lineage_folder: Any = None

    # ------------------------------------------------------------ entry points

    def execute(self, context: Context) -> Any:
        return self._run(context, event=None)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        carry = (event or {}).get("carry") or {}
        if carry.get("try_number") != context["ti"].try_number:
            # Airflow 3.0 hands a retry the previous try's event (apache/airflow#56704): start
            # afresh from the ledger and the manifest, as execute would.
            self.log.info("Batch: the event is from an earlier try; resuming from the ledger.")
            return self._run(context, event=None)
        return self._run(context, event=event)

    # ------------------------------------------------------------ one pass

    def _run(self, context: Context, event: dict[str, Any] | None) -> Any:
        from airflow_provider_magi.batch_inputs import check_items, load_items
        from airflow_provider_magi.hooks.magi import model_path
        from airflow_provider_magi.ledger_stores import open_ledger
        from airflow_provider_magi.manifest import read_manifest
        from airflow_provider_magi.paying.batch import BatchPayer

        model_path(self.model)  # a bad model id is bad input, refused before any request
        # every item as this try first rendered it (paying.rendering)
        self._one_rendering(context, resuming=event is not None)
        items = check_items(load_items(self.inputs), self.model)
        self._context = context
        self._items = items
        self._prepare_paths(context)
        self._ledger = open_ledger(context, ledger_path=self.hook.settings.ledger_path)
        self._payer = BatchPayer(self.hook, self.model, self.log, self._ledger, items)
        self._book = self._payer.book
        self._claim_folder(context)  # before anything is paid or the manifest is read
        self._payer.match()
        self._lines = self._payer.reconcile(
            read_manifest(self._manifest_path), fresh=event is None, whole=self._whole
        )
        for item in items:  # the caller's key and metadata ride on the item's line
            self._lines[item.index].key, self._lines[item.index].metadata = item.key, item.metadata
        if event is None:
            self._warn_identical(items)
        self._last_write = 0.0
        self._running_span: list[str] | None = (event or {}).get("running_span")
        self._submitted_since = False
        self._carry: dict[str, Any]
        if event is None:
            from airflow_provider_magi.paying.deadline import task_deadline

            deadline, reason = task_deadline(self, context, self.timeout)
            self._carry = {
                "try_number": context["ti"].try_number,
                "deadline": deadline,
                "deadline_reason": reason,
                "stopped": None,
            }
            self._fresh_start()
        else:
            self._carry = dict(event["carry"])
            self._apply_event(event)
        return self._loop()

    def _loop(self) -> Any:
        from airflow_provider_magi.triggers.batch import MagiBatchTrigger

        while True:
            pause = self._submit_wave()
            running = self._running()
            waiting_to_submit = self._pending() and not self._carry.get("stopped")
            if not running and not waiting_to_submit:
                return self._finish()
            deadline = self._carry.get("deadline")
            if deadline is not None and time.time() >= deadline:
                return self._finish(timed_out=True)
            if self.deferrable:
                self._write(force=True)
                self.defer(
                    trigger=MagiBatchTrigger(
                        prediction_ids=[line.prediction_id for line in running if line.prediction_id],
                        model=self.model,
                        created_after=self._created_after(running).isoformat(),
                        created_before=self._created_before(),
                        magi_conn_id=self.magi_conn_id,
                        resume_after=resume_after(
                            len(running),
                            len(self._pending()) if waiting_to_submit else 0,
                            self.max_in_flight,
                        ),
                        poll_interval=self.poll_interval,
                        max_poll_interval=self.max_poll_interval,
                        deadline=deadline,
                        pause=max(pause, self.poll_interval),  # all was just read or submitted
                        carry=self._carry,
                    ),
                    method_name="execute_complete",
                    timeout=None
                    if deadline is None
                    else timedelta(seconds=max(0.0, deadline - time.time()) + 60),
                )
            time.sleep(max(pause, self.poll_interval))
            if running:
                self._refresh(running, fresh=False)

    def _refresh(self, running: list[ManifestLine], *, fresh: bool) -> None:
        """Read the running items' statuses from the history pages (in the worker) and apply them."""
        from airflow_provider_magi.triggers.batch import read_statuses

        found, _ = read_statuses(
            self.hook,
            [line.prediction_id or "" for line in running],
            self.model,
            self._created_after(running),
        )
        self._apply_statuses(found, fresh=fresh)

    # ------------------------------------------------------------ what is already known

    def _warn_identical(self, items: list[Any]) -> None:
        """Identical items without a key are each paid for: say so once per try."""
        from airflow_provider_magi.batch_inputs import identical_items

        groups = identical_items(items)
        if groups:
            self.log.warning(
                "Batch: %d group(s) of identical inputs without a key, each paid for as many times as "
                "it is listed: %s. Give them keys to tell them apart, or remove the copies.",
                len(groups),
                "; ".join(compact(group) for group in groups[:20]),
            )

    def _whole(self, line: ManifestLine) -> bool:
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

    def _fresh_start(self) -> None:
        """A new try (or a clear): how the paid items are now, and what lost answers became."""
        from airflow_provider_magi.manifest import UNCERTAIN

        running = self._running()
        if running:
            self._refresh(running, fresh=True)
        lost = [line for line in self._lines.values() if line.status == UNCERTAIN]
        if lost:
            self._payer.look_up_lost(lost)
        self._write(force=True)

    # ------------------------------------------------------------ items that ended

    def _apply_event(self, event: dict[str, Any]) -> None:
        from airflow_provider_magi.api import Prediction
        from airflow_provider_magi.triggers.batch import EVENT_ERROR, EVENT_TIMEOUT

        ended = {r["prediction_id"]: Prediction.from_result(r) for r in event.get("ended") or []}
        self._apply_statuses(ended, fresh=False)
        if event.get("status") == EVENT_TIMEOUT:
            self._carry["deadline"] = min(self._carry.get("deadline") or time.time(), time.time())
        elif event.get("status") == EVENT_ERROR and event.get("fatal"):
            self._write(force=True)
            raise MagiError(f"Batch: reading the batch's status was refused: {event.get('message')}")

    def _apply_statuses(self, found: dict[str, Prediction], *, fresh: bool) -> None:
        """Download what completed, record what failed; a fresh try pays again for failures."""
        from airflow_provider_magi.manifest import FAILED, NOT_SUBMITTED, RUNNING

        for line in list(self._lines.values()):
            prediction = found.get(line.prediction_id or "")
            if line.status != RUNNING or prediction is None or not prediction.is_terminal:
                continue
            if prediction.is_completed and not prediction.outputs:
                prediction = self._read_whole(prediction)  # a history page may leave them out
            if prediction.is_completed and prediction.outputs:
                self._complete(line, prediction)
            # A completed one is billed, and a deleted one (or a 404) may have been: never bought
            # again. Only a prediction that provably did not complete is submitted afresh.
            elif fresh and not prediction.is_completed and prediction.status != "deleted":
                self.log.info(
                    "Batch: input %d's prediction %s %s in an earlier try: submitting it again.",
                    line.index,
                    prediction.id,
                    prediction.status,
                )
                if prediction.id not in line.replaced:
                    line.replaced = [*line.replaced, prediction.id]
                line.status, line.prediction_id, line.error = NOT_SUBMITTED, None, None
            else:
                line.status = FAILED
                line.error = prediction.error or (
                    "completed without any outputs" if prediction.is_completed else prediction.status
                )
                if prediction.status == "deleted":
                    line.error += (
                        "; it may have completed and been billed, so it is not submitted again. Fix: "
                        "check your WaveSpeed predictions and billing for it"
                    )
            self._write()
        self._report_progress()

    def _read_whole(self, prediction: Prediction) -> Prediction:
        """The prediction's own answer (one GET), for a completed one listed without outputs."""
        try:
            return self.hook.get_prediction(prediction.id)
        except MagiError as error:
            self.log.warning("Batch: prediction %s cannot be read: %s", prediction.id, error)
            return prediction

    def _complete(self, line: ManifestLine, prediction: Prediction) -> None:
        """The download operator's rules: atomic files, the NSFW policy, no key to output hosts."""
        from airflow_provider_magi.manifest import COMPLETED, FAILED

        flags = prediction.has_nsfw_contents
        paths: list[str] = []
        sizes: list[int] = []
        try:
            for number, url in enumerate(prediction.outputs):
                if number < len(flags) and flags[number] and self.nsfw_policy != "keep":
                    if self.nsfw_policy == "fail":
                        raise _Refused(f"output {number} is flagged NSFW (nsfw_policy='fail')")
                    self.log.warning(
                        "Batch: input %d output %d flagged NSFW: not written.", line.index, number
                    )
                    continue
                if number < len(flags) and flags[number]:
                    self.log.warning(
                        "Batch: input %d output %d flagged NSFW: written anyway.", line.index, number
                    )
                written = self.hook.download_output(
                    url,
                    self._target(line.index, prediction.id, number),
                    allow_insecure_loopback=self.hook.is_local_server,
                    label=f"Input {line.index} (prediction {prediction.id}) output {number}",
                )
                paths.append(written.path)
                sizes.append(written.size)
        except (_Refused, MagiError) as error:  # paid and made: a retry downloads it, never pays again
            line.status, line.error = FAILED, str(error)
        else:
            line.status, line.error = COMPLETED, None
        line.paths, line.sizes = paths, sizes
        line.cost_usd = self._cost(prediction.id)

    def _cost(self, prediction_id: str) -> float | None:
        """The billed price, one lookup (billing can lag: None then, never a guess)."""
        seconds = self.hook.settings.cost_lookup_seconds
        if seconds <= 0:
            return None
        try:
            return self.hook.get_prediction_cost(prediction_id, deadline=time.time() + seconds)
        except Exception as error:  # the video is made and paid: its price never fails the batch
            self.log.warning("Batch: the billing of prediction %s cannot be read: %s", prediction_id, error)
            return None

    # ------------------------------------------------------------ submitting

    def _submit_wave(self) -> float:
        """Submit what fits, in input order (:class:`~airflow_provider_magi.paying.batch.BatchPayer`);
        returns seconds to pause (a 429's Retry-After, or a price still unknown)."""
        if self._carry.get("stopped"):
            return 0.0
        deadline = self._carry.get("deadline")
        if deadline is not None and time.time() >= deadline:
            return 0.0
        running = self._running()
        pending = self._pending()[: max(0, self.max_in_flight - len(running))]
        if not pending:
            return 0.0
        pause, paid = self._payer.pay_wave(
            pending,
            running,
            self._carry,
            min_pause=self.poll_interval,
            write_manifest=lambda: self._write(force=True),
        )
        if paid:
            self._submitted_since = True
        return pause

    # ------------------------------------------------------------ the end

    def _finish(self, *, timed_out: bool = False) -> dict[str, Any]:
        from airflow_provider_magi.exceptions import MagiBudgetError
        from airflow_provider_magi.manifest import (
            COMPLETED,
            FAILED,
            NOT_SUBMITTED,
            RUNNING,
            UNCERTAIN,
            summary,
        )
        from airflow_provider_magi.paying.deadline import (
            DEADLINE_EXECUTION_TIMEOUT,
            DEADLINE_TIMEOUT,
            expiry_error,
        )

        for line in self._lines.values():  # billing lags completion: one more look for unknown prices
            if line.status == COMPLETED and line.cost_usd is None and line.prediction_id:
                line.cost_usd = self._cost(line.prediction_id)
        reason = str(self._carry.get("deadline_reason") or DEADLINE_TIMEOUT)
        execution = reason == DEADLINE_EXECUTION_TIMEOUT
        limit = "the task's execution_timeout" if execution else "the batch's timeout"
        if timed_out:
            for line in self._lines.values():
                if line.status == RUNNING:
                    line.error = f"still running when {limit} passed (it may still be billed)"
        self._write(force=True)
        result = summary(self._lines.values(), str(self._manifest_path))
        self._report_progress(final=True)
        self._log_failures()
        self._emit_asset_events(result)
        by = {
            status: [line for line in self._lines.values() if line.status == status]
            for status in (FAILED, NOT_SUBMITTED, RUNNING, UNCERTAIN)
        }
        problems = "; ".join(f"{status}: inputs {indexes(lines)}" for status, lines in by.items() if lines)
        where = f"The manifest at {self._manifest_path} has a line per input."
        if timed_out:
            then = (
                "A retry (retries apply) waits for the running ones and pays only for the rest."
                if execution
                else "Not retried; a clear waits for the running ones and pays only for the rest."
            )
            raise expiry_error(reason, f"Batch: {limit} passed with {problems}. {then} {where}")
        stopped = self._carry.get("stopped")
        if stopped and by[NOT_SUBMITTED] and not self.fail_on_partial_error:
            # What was paid is delivered: the task succeeds with its manifest, and says what waits.
            self.log.warning(
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
        if problems and self.fail_on_partial_error:
            raise MagiBatchIncompleteError(
                f"Batch: {result['succeeded']} of {len(self._lines)} completed; {problems}. Outputs are "
                f"kept; a retry or clear submits only the failed and not-submitted inputs. {where}"
            )
        if problems:
            self.log.warning("Batch: %s (fail_on_partial_error=False). %s", problems, where)
        return result

    def _emit_asset_events(self, result: dict[str, Any]) -> None:
        outlets = getattr(self, "outlets", None) or []
        if not outlets:
            return
        events = self._context["outlet_events"]
        for outlet in outlets:
            if type(outlet).__name__ == "Asset":
                events[outlet].extra.update({**result, "model": self.model})

    # ------------------------------------------------------------ bookkeeping

    def _running(self) -> list[ManifestLine]:
        from airflow_provider_magi.manifest import RUNNING

        return [line for line in self._lines.values() if line.status == RUNNING]

    def _pending(self) -> list[ManifestLine]:
        from airflow_provider_magi.manifest import NOT_SUBMITTED

        return sorted(
            (line for line in self._lines.values() if line.status == NOT_SUBMITTED),
            key=lambda line: line.index,
        )

    def _created_after(self, running: list[ManifestLine]) -> datetime:
        """From the oldest running prediction's creation time when the last trigger told it (the
        trigger pads it), else from the oldest running wave's start, less a margin for clocks."""
        if self._running_span is not None:
            return datetime.fromisoformat(self._running_span[0])
        waves = [self._book.entries[line.index].wave for line in running if line.index in self._book.entries]
        since = min((self._book.waves[wave] for wave in waves), default=datetime.now(UTC))
        return since - CLOCK_MARGIN

    def _created_before(self) -> str | None:
        """The newest running prediction's creation time, when the last trigger told it and no
        wave went out since (a new wave's predictions are newer)."""
        span = self._running_span
        return None if span is None or self._submitted_since else span[1]

    def _prepare_paths(self, context: Context) -> None:
        """The batch's paths, claimed before anything is paid (:mod:`~airflow_provider_magi.paying.claims`):
        every input a path of its own, and the folder (through its manifest) this task instance's
        alone, so no other task or run overwrites its videos or its manifest."""
        from airflow_provider_magi.manifest import MANIFEST_NAME
        from airflow_provider_magi.operators.download import (
            destination_path,
            filename_values,
            render_filename,
        )
        from airflow_provider_magi.paying.claims import refuse_shared_batch_items, refuse_shared_mapped_folder

        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        mapped = map_index is not None and map_index >= 0
        self._pattern = self.filename or (DEFAULT_MAPPED_BATCH_FILENAME if mapped else DEFAULT_BATCH_FILENAME)
        _check_pattern(self._pattern)
        refuse_shared_mapped_folder(self._pattern, mapped)
        self._directory = destination_path(self.destination)
        self._values = filename_values(context, "", 0)
        refuse_shared_batch_items(
            self._pattern, len(self._items), lambda index, prediction_id: self._name(index, prediction_id, 0)
        )
        first = render_filename(
            self._pattern, {**self._values, "prediction_id": "x", "index": 0, "output": 0}
        )
        folder = first.rsplit("/", 1)[0] if "/" in first else ""
        self._folder = self._directory / folder if folder else self._directory
        self._manifest_path = self._folder / MANIFEST_NAME
        self._lineage_folder = self._folder

    def _claim_folder(self, context: Context) -> None:
        """The folder is this task instance's alone (:func:`~airflow_provider_magi.paying.claims.claim`);
        a manifest without a marker is adopted only when this task instance's ledger shows it paid
        before (written by a version without markers)."""
        from airflow_provider_magi.paying.claims import claim, writer_of

        claim(
            self._manifest_path,
            writer_of(context),
            what="the batch's manifest",
            fix="give each task and run a folder of its own: put {run_id} and {task_id} (and "
            "{map_index} when mapped) in filename's folder, e.g. '{dag_id}/{run_id}/{task_id}/{index}.mp4'",
            adopt_unmarked=bool(self._book.entries),
        )

    def _target(self, index: int, prediction_id: str, output: int) -> Any:
        return self._directory / self._name(index, prediction_id, output)

    def _name(self, index: int, prediction_id: str, output: int) -> str:
        from airflow_provider_magi.operators.download import render_filename

        name = render_filename(
            self._pattern, {**self._values, "prediction_id": prediction_id, "index": index, "output": output}
        )
        if output and "{output" not in self._pattern:  # keep an item's second output apart from its first
            stem, dot, suffix = name.rpartition(".")
            name = f"{stem}_{output}.{suffix}" if dot and "/" not in suffix else f"{name}_{output}"
        return name

    def _write(self, *, force: bool = False) -> None:
        """Rewrite the manifest (as items finish; at most once a second while downloading)."""
        from airflow_provider_magi.manifest import write_manifest

        now = time.monotonic()
        if not force and now - self._last_write < MANIFEST_EVERY_SECONDS:
            return
        write_manifest(self._manifest_path, self._lines.values())
        self._last_write = now

    def _report_progress(self, *, final: bool = False) -> None:
        """A log line per change of the batch's counts (never the same line twice in a row), the
        counts in XCom while it runs, and the final summary, said once at the end."""
        from airflow_provider_magi import costs
        from airflow_provider_magi.manifest import summary

        counts = summary(self._lines.values(), str(self._manifest_path))
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
            f"{counts['succeeded']}/{len(self._lines)} completed, {counts['failed']} failed, "
            f"{counts['running']} running, {counts['not_submitted']} not submitted, "
            f"{counts['uncertain']} uncertain"
        )
        if final:
            self.log.info(
                "Batch finished: %s; %s billed%s. Manifest: %s",
                tally,
                costs.usd_text(counts["cost_usd"]),
                prices,
                self._manifest_path,
            )
        elif key == self._carry.get("progress"):  # the carry: a resume does not say it again
            return
        else:
            self.log.info("Batch: %s, %s so far%s.", tally, costs.usd_text(counts["cost_usd"]), prices)
        self._carry["progress"] = key
        self._context["ti"].xcom_push(key=XCOM_PROGRESS, value=counts)

    def _log_failures(self) -> None:
        """Each failed (or uncertain) input's reason, the first :data:`FAILURES_LOGGED`; the rest
        are in the manifest."""
        from airflow_provider_magi.manifest import FAILED, UNCERTAIN

        failed = sorted(
            (line for line in self._lines.values() if line.status in (FAILED, UNCERTAIN)),
            key=lambda line: line.index,
        )
        for line in failed[:FAILURES_LOGGED]:
            self.log.warning(
                "Batch: input %d %s%s: %s",
                line.index,
                line.status,
                f" (prediction {line.prediction_id})" if line.prediction_id else "",
                line.error or "no reason given",
            )
        if len(failed) > FAILURES_LOGGED:
            self.log.warning(
                "Batch: %d more failed or uncertain input(s); their reasons are in the manifest at %s.",
                len(failed) - FAILURES_LOGGED,
                self._manifest_path,
            )

    # ------------------------------------------------------------ OpenLineage (provider optional)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        return self._lineage()

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return self._lineage()

    def _lineage(self) -> Any:
        from airflow_provider_magi.lineage import folder_lineage

        return folder_lineage(self._lineage_folder)

    def on_kill(self) -> None:
        self.log.warning(
            "Batch killed. WaveSpeed has no cancel endpoint: its running predictions keep running and "
            "are billed; a retry waits for them (the ledger holds their ids) and pays only for the rest."
        )


class _Refused(Exception):
    """An output the NSFW policy refuses: the item fails, the batch goes on."""
