"""MagiBatchOperator: N videos in one task: waves of submits, one wait, one manifest, each paid once.

A nightly table of 500 prompts as 500 mapped tasks pays Airflow's per-task cost 500 times and
cannot keep a budget exact across parallel tasks. This task checks every input before the first
payment (``batch_inputs``), pays in waves of at most ``max_in_flight`` through the paying core
(``paying.batch``: the ledger, the spend view, intent -> POST -> id), defers to one
:class:`~airflow_provider_magi.triggers.batch.MagiBatchTrigger` that reads status 100 predictions
per call, delivers each completed item (``batch_outputs``) and keeps ``manifest.jsonl`` up to
date, until every item is final. A retry or a clear resumes from the ledger and the manifest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_magi.api import DEFAULT_MODEL
from airflow_provider_magi.batch_outputs import NsfwPolicy, deliver, is_whole, read_whole
from airflow_provider_magi.batch_paths import BatchPaths, check_pattern
from airflow_provider_magi.batch_report import (
    close_lines,
    log_failures,
    report_progress,
    verdict,
    warn_identical,
)
from airflow_provider_magi.compat import BaseOperator
from airflow_provider_magi.exceptions import MagiBatchIncompleteError, MagiError, MagiInputError
from airflow_provider_magi.task_mixin import MagiTaskMixin
from airflow_provider_magi.waiting import WAVE_SHARE, resume_after

__all__ = ["WAVE_SHARE", "MagiBatchIncompleteError", "MagiBatchOperator", "resume_after"]

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_magi.api import Prediction
    from airflow_provider_magi.manifest import ManifestLine

# WaveSpeed's entry account level runs 2-3 predictions at once (more queue on its side; its
# docs show two tables) and higher levels 300 to 10,000: a default that never trips the lowest
# level's rate limits by much, to be raised to your level's concurrency.
DEFAULT_MAX_IN_FLIGHT = 5
# The manifest is rewritten as items finish, but not more often than this while downloading.
MANIFEST_EVERY_SECONDS = 1.0


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
            check_pattern(filename)
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
        self._paths = BatchPaths.prepare(context, self.filename, self.destination, len(items))
        self._manifest_path, self._lineage_folder = self._paths.manifest_path, self._paths.folder
        self._ledger = open_ledger(context, ledger_path=self.hook.settings.ledger_path)
        self._payer = BatchPayer(self.hook, self.model, self.log, self._ledger, items, context)
        self._book = self._payer.book
        self._paths.claim(context, adopt_unmarked=bool(self._book.entries))  # before paying or reading it
        self._payer.match(first_entry=event is None)
        self._lines = self._payer.reconcile(
            read_manifest(self._manifest_path), fresh=event is None, whole=is_whole
        )
        for item in items:  # the caller's key and metadata, the length and price ride on its line
            line = self._lines[item.index]
            line.key, line.metadata, line.price_usd = item.key, item.metadata, item.price
            line.duration = item.seconds
        if event is None:
            warn_identical(items, self.log)
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
                self._payer.waiting(True)
                left = None if deadline is None else max(0.0, deadline - time.time()) + 60
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
                    timeout=None if left is None else timedelta(seconds=left),
                )
            time.sleep(max(pause, self.poll_interval))
            if running:
                self._refresh(running, fresh=False)

    def _refresh(self, running: list[ManifestLine], *, fresh: bool) -> None:
        """Read the running items' statuses from the history pages (in the worker) and apply them."""
        from airflow_provider_magi.triggers.batch import read_statuses

        ids = [line.prediction_id or "" for line in running]
        found, _ = read_statuses(self.hook, ids, self.model, self._created_after(running))
        self._apply_statuses(found, fresh=fresh)

    # ------------------------------------------------------------ what is already known

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
        """Deliver what completed, record what failed (``BatchPayer.ended``: what is paid again)."""
        self._payer.ended(
            self._lines.values(), found, fresh=fresh, deliver=self._deliver, after_each=self._write
        )
        self._report_progress()

    def _deliver(self, line: ManifestLine, prediction: Prediction) -> None:
        if prediction.is_completed and not prediction.outputs:
            prediction = read_whole(self.hook, prediction, self.log)  # a history page may leave them out
        if not prediction.outputs:
            return  # completed without any outputs: the line stays running, and ends failed
        deliver(
            self.hook, line, prediction, target=self._paths.target, nsfw_policy=self.nsfw_policy, log=self.log
        )

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
        from airflow_provider_magi.manifest import summary
        from airflow_provider_magi.paying.deadline import DEADLINE_TIMEOUT

        reason = str(self._carry.get("deadline_reason") or DEADLINE_TIMEOUT)
        close_lines(self._lines.values(), self.hook, self.log, timed_out=timed_out, deadline_reason=reason)
        self._write(force=True)
        self._payer.waiting(False)  # a mapped batch's share: it waits on no trigger any more
        result = summary(self._lines.values(), str(self._manifest_path))
        self._report_progress(final=True)
        log_failures(self._lines.values(), self._manifest_path, self.log)
        self._emit_asset_events(result)
        return verdict(
            self._lines.values(),
            result,
            self._manifest_path,
            stopped=self._carry.get("stopped"),
            timed_out=timed_out,
            deadline_reason=reason,
            fail_on_partial_error=self.fail_on_partial_error,
            log=self.log,
        )

    def _emit_asset_events(self, result: dict[str, Any]) -> None:
        self._add_asset_extra(self._context, {**result, "model": self.model})

    # ------------------------------------------------------------ bookkeeping

    def _running(self) -> list[ManifestLine]:
        from airflow_provider_magi.manifest import running_lines

        return running_lines(self._lines)

    def _pending(self) -> list[ManifestLine]:
        from airflow_provider_magi.manifest import pending_lines

        return pending_lines(self._lines)

    def _created_after(self, running: list[ManifestLine]) -> datetime:
        """From the oldest running prediction's creation time when the last trigger told it (the
        trigger pads it), else from the oldest running wave's start (the book knows)."""
        if self._running_span is not None:
            return datetime.fromisoformat(self._running_span[0])
        return self._payer.created_after(running)

    def _created_before(self) -> str | None:
        """The newest running prediction's creation time, when the last trigger told it and no
        wave went out since (a new wave's predictions are newer)."""
        span = self._running_span
        return None if span is None or self._submitted_since else span[1]

    def _write(self, *, force: bool = False) -> None:
        """Rewrite the manifest (as items finish; at most once a second while downloading)."""
        from airflow_provider_magi.manifest import write_manifest

        now = time.monotonic()
        if not force and now - self._last_write < MANIFEST_EVERY_SECONDS:
            return
        write_manifest(self._manifest_path, self._lines.values())
        self._last_write = now

    def _report_progress(self, *, final: bool = False) -> None:
        report_progress(
            self._lines.values(), self._manifest_path, self._carry, self._context["ti"], self.log, final=final
        )

    # ------------------------------------------------------------ OpenLineage (provider optional)

    def _lineage(self) -> Any:
        from airflow_provider_magi.lineage import folder_lineage

        return folder_lineage(self._lineage_folder)

    def on_kill(self) -> None:
        self.log.warning(
            "Batch killed. WaveSpeed has no cancel endpoint: its running predictions keep running and "
            "are billed; a retry waits for them (the ledger holds their ids) and pays only for the rest."
        )
