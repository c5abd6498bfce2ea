"""What the operators and the sensor share: a lazy hook, waiting in the triggerer, and what a
prediction cost (looked up, and counted in the metrics once)."""

from __future__ import annotations

import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_magi.hooks.magi import MagiHook
    from airflow_provider_magi.waiting import Waiter

# A finished task reads its price at most this many times within the connection's
# cost_lookup_seconds (billing can lag completion), then says "cost unknown" and ends.
COST_LOOKUP_READS = 3
# Airflow's own deferral timeout is a backstop behind the trigger's deadline (for a triggerer
# that is down when it passes); the trigger's own timeout event, with its clearer message, comes
# first.
DEFER_TIMEOUT_GRACE = timedelta(seconds=60)


class MagiTaskMixin:
    """Mixed into operators: ``self.hook`` is built on first use, so DAG files import no HTTP client."""

    magi_conn_id: str
    magi_prediction_id: str | None = None  # read by MagiPredictionLink when the task ends

    if TYPE_CHECKING:  # provided by BaseOperator

        @property
        def log(self) -> Any: ...

    # The template fields that are a video's inputs: rendered once per try (``paying.rendering``).
    rendered_inputs: tuple[str, ...] = ()
    # Renders the input fields again from their unrendered values (set when Airflow renders them).
    _render_again: Any = None

    def _do_render_template_fields(
        self, parent: Any, template_fields: Any, context: Any, jinja_env: Any, seen_oids: set[int]
    ) -> None:
        """Airflow's rendering, keeping the unrendered input fields so that a try's first entry
        can render them a second time (:mod:`airflow_provider_magi.paying.rendering`). A mapped
        task is rendered by its MappedOperator through this very method of the unmapped operator,
        whose expanded values (``seen_oids``) are left unrendered here too."""
        fields = tuple(template_fields)
        if parent is self:  # not a nested object's fields
            raw = {name: getattr(self, name, None) for name in self.rendered_inputs if name in fields}
            seen = set(seen_oids)

            def render_again(names: Any) -> dict[str, Any]:
                render = self.render_template
                return {
                    name: render(raw[name], context, jinja_env, set(seen)) for name in names if name in raw
                }

            self._render_again = render_again
        super()._do_render_template_fields(  # type: ignore[misc]  # BaseOperator's
            parent, fields, context, jinja_env, seen_oids
        )

    def _one_rendering(self, context: Context, *, pays: bool = True, resuming: bool = False) -> Any:
        """Put this try's first rendering of the input fields back (see ``paying.rendering``);
        the :class:`~airflow_provider_magi.paying.rendering.Rendering` it used.

        ``pays``: this entry may pay (every entry but the single video's resume with its result).
        Then a resume within the try whose inputs render differently than at the try's first
        entry, without having varied by themselves then (a clock to the second or minute, data
        changed mid-try), stops: paid for as rendered now, such inputs would be paid again at
        every resume (a batch's items, a long video's scenes), without end. ``resuming``: this
        entry is a resume after a deferral within the try (else a try's first entry).
        """
        from airflow_provider_magi.exceptions import MagiInputError
        from airflow_provider_magi.ledger_stores import open_ledger
        from airflow_provider_magi.paying.rendering import RENDERING_RECORD, one_rendering

        ledger = open_ledger(context, ledger_path=self.hook.settings.ledger_path)
        try_number = int(getattr(context["ti"], "try_number", 1) or 1)
        rendering = one_rendering(
            rendered={name: getattr(self, name, None) for name in self.rendered_inputs},
            render_again=self._render_again,
            try_number=try_number,
            read=ledger.read_text,
            write=ledger.write_text,
            where=ledger.where(RENDERING_RECORD),
            log=self.log,
            resuming=resuming,
        )
        earlier = rendering.earlier
        if (
            resuming
            and pays
            and rendering.changed
            and earlier is not None
            and earlier.try_number == try_number
        ):
            raise MagiInputError(
                f"Rendering: {', '.join(rendering.changed[:10])} rendered differently at this resume "
                f"than at try {try_number}'s first entry, and did not vary by themselves then (a "
                "template that follows the clock, such as now() to the second or minute, or data "
                "that changed mid-try). Paid for as rendered now, inputs this try already paid for "
                "would be paid again at every resume, so nothing more is submitted in this try; "
                "what was paid is kept in the ledger. Fix: make the template render one value for "
                "the whole run (e.g. {{ ts }} or {{ run_id }} instead of now()), then clear the task."
            )
        for name, value in rendering.values.items():
            setattr(self, name, value)
        return rendering

    # ------------------------------------------------------------ OpenLineage (provider optional)

    def _lineage(self) -> Any:
        """This task's OpenLineage facets (each operator says what it read and wrote)."""
        return None

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        return self._lineage()

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return self._lineage()  # the OpenLineage listener adds the error itself

    def _add_asset_extra(self, context: Context, extra: dict[str, Any]) -> None:
        """Put ``extra`` on the events of this task's Asset outlets (what downstream DAGs read)."""
        outlets = getattr(self, "outlets", None) or []
        if not outlets:
            return
        outlet_events = context["outlet_events"]
        for outlet in outlets:
            if type(outlet).__name__ == "Asset":
                outlet_events[outlet].extra.update(extra)

    @cached_property
    def hook(self) -> MagiHook:
        from airflow_provider_magi.hooks.magi import MagiHook

        return MagiHook(magi_conn_id=self.magi_conn_id)

    def defer_to_trigger(self, waiter: Waiter, context: Context) -> None:
        """Hand the wait to the triggerer (raises TaskDeferred), keeping pace, deadline and start.

        The deadline is the sooner of the wait's own and what is left of ``execution_timeout``,
        counted from when the try's first ``execute`` began (:mod:`~airflow_provider_magi.paying.deadline`).
        """
        from airflow_provider_magi.paying.deadline import DEADLINE_EXECUTION_TIMEOUT, try_deadline
        from airflow_provider_magi.triggers.magi import MagiPredictionTrigger

        waiter.cap_deadline(try_deadline(self, context), DEADLINE_EXECUTION_TIMEOUT)
        timeout = None
        if waiter.deadline is not None:
            timeout = timedelta(seconds=max(0.0, waiter.deadline - time.time())) + DEFER_TIMEOUT_GRACE
        try_number = getattr(context.get("ti"), "try_number", None)
        self.defer(  # type: ignore[attr-defined]  # BaseOperator.defer, on the class this mixes into
            trigger=MagiPredictionTrigger.for_waiter(waiter, self.magi_conn_id, try_number=try_number),
            method_name="execute_complete",
            timeout=timeout,
        )

    def event_from_an_earlier_try(self, event: Any, context: Context) -> bool:
        """True for an event a trigger fired for an earlier try of this task.

        Airflow 3.0 keeps a deferred task's ``next_method`` across retries (apache/airflow#56704):
        a retry resumes with the old try's event instead of running ``execute``. Such an event is
        not this try's outcome: the caller starts the try afresh (the ledger reattaches).
        """
        sent = event.get("try_number") if isinstance(event, dict) else None
        current = getattr(context.get("ti"), "try_number", None)
        if not isinstance(sent, int) or not isinstance(current, int) or sent == current:
            return False
        self.log.warning(
            "The trigger's event (%s) is from try %d; this is try %d (Airflow 3.0 resumes a retry "
            "with an earlier try's event): starting this try afresh.",
            event.get("status"),
            sent,
            current,
        )
        return True

    def result_from_trigger(self, event: dict[str, Any] | None) -> dict[str, Any]:
        """The result the trigger's event carries, or the error that fails the task."""
        from airflow_provider_magi.triggers.magi import result_from_event

        if isinstance(event, dict):  # a resumed task is a fresh instance: the link needs the id
            self.magi_prediction_id = event.get("prediction_id")
        return result_from_event(event)

    # ------------------------------------------------------------ what it cost

    def _look_up_cost(self, prediction_id: str) -> float | None:
        """The price of a finished prediction from its billing records, looked up at most
        :data:`COST_LOOKUP_READS` times within ``cost_lookup_seconds``; None when it is not
        billed by then, or billing cannot be read. Never raises: the video is done and paid.
        """
        from airflow_provider_magi.exceptions import MagiAuthError, MagiRejectedError

        try:
            seconds = self.hook.settings.cost_lookup_seconds
        except Exception as error:  # the connection was read before; be safe all the same
            self.log.warning("Prediction %s: cost unknown (%s)", prediction_id, error)
            return None
        if seconds <= 0:
            self.log.info("Prediction %s: cost not looked up (cost_lookup_seconds=0).", prediction_id)
            return None
        deadline = time.time() + seconds
        for read in range(1, COST_LOOKUP_READS + 1):
            try:
                cost = self.hook.get_prediction_cost(prediction_id, deadline=deadline)
            except Exception as error:  # a failing billing endpoint never fails a finished, paid task
                self.log.warning(
                    "Prediction %s: reading its billing failed (read %d of %d): %s",
                    prediction_id,
                    read,
                    COST_LOOKUP_READS,
                    error,
                )
                if isinstance(error, (MagiRejectedError, MagiAuthError)):
                    break  # refused (no billing endpoint, no permission): asking again cannot help
                cost = None
            if cost is not None:
                return cost
            left = deadline - time.time()
            if read == COST_LOOKUP_READS or left <= 0:
                break
            time.sleep(min(left, seconds / COST_LOOKUP_READS))
        self.log.warning(
            "Prediction %s: cost unknown: WaveSpeed showed no readable billing record within "
            "%gs (billing can lag completion; raise the connection's cost_lookup_seconds to wait "
            "longer). The task goes on; cost_usd is None.",
            prediction_id,
            seconds,
        )
        return None

    def _count_cost(
        self, prediction_id: str, model: str | None, *, counted_only: bool = False
    ) -> float | None:
        """The prediction's price, sent to the cost metrics by the first task that sees it billed
        (:mod:`airflow_provider_magi.counted`): never twice for one prediction, whichever task
        (a retry, the sensor, the download) sees it again. ``counted_only`` first asks whether
        it was counted already, and takes that price without reading the billing.
        """
        from airflow_provider_magi import costs
        from airflow_provider_magi.counted import count_once, counted_cost

        if counted_only:
            known = counted_cost(prediction_id, self.log)
            if known is not None:
                return known
        cost = self._look_up_cost(prediction_id)
        if cost is not None:
            self.log.info("Prediction %s cost %s.", prediction_id, costs.usd_text(cost))
            dag_id = getattr(self, "dag_id", None)
            count_once(
                prediction_id,
                cost,
                model=model,
                conn_id=self.magi_conn_id,
                dag_id=dag_id,
                by=f"{dag_id}.{getattr(self, 'task_id', '?')}",
                log=self.log,
            )
        return cost
