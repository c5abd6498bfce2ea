"""MagiGenerateVideoOperator: validate, submit once, remember the id, then wait (deferred or not)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_magi.api import (
    DEFAULT_MODEL,
    Prediction,
    final_result,
)
from airflow_provider_magi.compat import BaseOperator, conf
from airflow_provider_magi.links import MagiPredictionLink, remember_prediction
from airflow_provider_magi.models import NAMED_INPUTS
from airflow_provider_magi.task_mixin import MagiTaskMixin
from airflow_provider_magi.waiting import DEFAULT_POLL_INTERVAL, MAX_POLL_INTERVAL, Waiter

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_magi.ledger import Ledger
    from airflow_provider_magi.paying.item import ItemPayer

# The ledger, costs and validation modules are imported where a task runs, never when a DAG file
# is parsed (tests/test_parse_imports.py holds what a parse may import).


def stored_job(external_id: Any) -> tuple[str, str | None]:
    """The prediction id (and inputs fingerprint, where one was stored with it) of a job handle."""
    if isinstance(external_id, dict):
        return str(external_id.get("id") or ""), external_id.get("fingerprint")
    return str(external_id), None


# Template fields that are not model inputs: left out of the template source's digest.
_NOT_INPUTS = frozenset({"magi_conn_id", "webhook_url", "regenerate_on_clear"})


def _seconds(value: float | timedelta | None, name: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return seconds


class MagiGenerateVideoOperator(MagiTaskMixin, BaseOperator):
    """Generate a video with MAGI-1 24B (or MAGI-2: ``model``, see ``models.py``) on WaveSpeed.

    Submits one prediction, records its id in the ledger and pushes it to XCom (key
    ``prediction_id``) at once, then waits for it in the triggerer (``deferrable=True``) or in the
    worker. A retry or a manual clear reattaches to the prediction already paid for, on every
    Airflow 3 (see ``airflow_provider_magi.ledger``); one that failed or expired, or was made for
    other inputs, is submitted afresh.

    :param prompt: What the video shows. Required. Templated.
    :param image: The first frame: an http(s) URL, or a local path / object-storage URL /
        ``ObjectStoragePath`` (up to 20 MiB), uploaded through WaveSpeed's media upload first.
        Templated.
    :param seed: -1 (random) to 2147483647; the text of an integer is accepted. Templated.
    :param duration: MAGI-2: the video's length, 4-30 whole seconds (priced per second).
        Templated; None (the default) sends nothing and the model's default (5 s) applies.
    :param aspect_ratio: MAGI-2: ``16:9``, ``9:16``, ``1:1``, ``4:3``, ``3:4`` or ``21:9``. Templated.
    :param last_image: MAGI-2 image-to-video: the last frame, as ``image`` takes it. Templated.
    :param extra_inputs: Further model inputs, passed through as they are. Templated.
    :param model: WaveSpeed model path, ``owner/name`` or ``owner/name/variant``; each input is
        checked against the catalogue's rules for it before anything is paid. Templated.
    :param magi_conn_id: Airflow connection of type ``magi``. Templated.
    :param wait_for_completion: Wait for the video (returns the result dict) or return the
        prediction id at once (wait later with ``MagiPredictionSensor``).
    :param deferrable: Wait in the triggerer, freeing the worker slot. Default from
        ``[operators] default_deferrable``.
    :param poll_interval: Seconds between polls at first; polls spread out for long jobs.
    :param webhook_url: https address WaveSpeed calls on ``completed``/``failed`` (your own
        receiver; verify calls with :func:`airflow_provider_magi.webhooks.verify_webhook`). Templated.
    :param attach_to_single_candidate: When a submit's answer is lost (``MagiSubmitUncertainError``)
        and WaveSpeed's history shows exactly one prediction of this model created around it,
        carry on with that one instead of failing. Off by default: another task, DAG or person
        using the same key may have submitted the same model in the same minute, and attaching to
        their prediction would hand this run someone else's video.
    :param regenerate_on_clear: When a clear re-runs this task after it succeeded, pay for a new
        video instead of handing back the one already delivered. Off by default (a clear then
        costs nothing). Retries of a try that failed never regenerate. Templated (a bool, or
        ``"true"``/``"false"`` from a template such as ``{{ params.regenerate }}``).
    :param timeout: Give up waiting after this long (seconds or timedelta). The prediction keeps
        running on WaveSpeed (there is no cancel endpoint); the task fails without retrying. A
        shorter ``execution_timeout`` also bounds a deferred wait, counted from when the try's
        first ``execute`` began (resumes keep that start), and fails as Airflow fails any task for
        it (``AirflowTaskTimeout``): retries apply, and a retry reattaches to the prediction.
    """

    template_fields: Sequence[str] = (
        *NAMED_INPUTS,
        "extra_inputs",
        "webhook_url",
        "model",
        "magi_conn_id",
        "regenerate_on_clear",
    )
    template_fields_renderers = {"extra_inputs": "json"}
    # A digest of the template fields before rendering (set by render_template_fields), and the
    # one this task's ledger matches on; None where unknown (then only rendered inputs match).
    _template_source: str | None = None
    _source_fingerprint: str | None = None
    _regenerate = False
    _resuming = False  # entered by a resume after a deferral within the try (paying.rendering)
    _item_model: str | None = None  # the model this item is made by, when not ``model`` (a scene)
    rendered_inputs: tuple[str, ...] = (*NAMED_INPUTS, "extra_inputs")
    operator_extra_links = (MagiPredictionLink(),)
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        prompt: str,
        image: str | os.PathLike[str] | None = None,
        seed: int | str | None = None,
        duration: int | str | None = None,
        aspect_ratio: str | None = None,
        last_image: str | os.PathLike[str] | None = None,
        extra_inputs: dict[str, Any] | None = None,
        model: str = DEFAULT_MODEL,
        magi_conn_id: str = "magi_default",
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = MAX_POLL_INTERVAL,
        timeout: float | timedelta | None = timedelta(hours=2),
        webhook_url: str | None = None,
        attach_to_single_candidate: bool = False,
        regenerate_on_clear: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.regenerate_on_clear = regenerate_on_clear
        self.prompt = prompt
        self.image = image
        self.seed = seed
        self.duration = duration
        self.aspect_ratio = aspect_ratio
        self.last_image = last_image
        self.extra_inputs = extra_inputs
        self.model = model
        self.magi_conn_id = magi_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = _seconds(poll_interval, "poll_interval") or DEFAULT_POLL_INTERVAL
        self.max_poll_interval = max(self.poll_interval, float(max_poll_interval))
        self.timeout = _seconds(timeout, "timeout")
        self.webhook_url = webhook_url
        self.attach_to_single_candidate = attach_to_single_candidate
        self._announced: str | None = None
        self._final: Prediction | None = None
        self._lineage_result: dict[str, Any] | None = None
        self._keep_template_source()

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Keep a digest of the fields as written in the DAG before they render (see ``decide``)."""
        self._keep_template_source()
        super().render_template_fields(context, jinja_env)

    def _keep_template_source(self) -> None:
        """The digest of the input fields as they are now, unrendered. Also taken when the
        operator is made: a mapped task is made (unmapped) from the DAG's values and rendered
        by its MappedOperator, which never calls this operator's render_template_fields."""
        from airflow_provider_magi.ledger import template_source

        self._template_source = template_source(
            {
                field: getattr(self, field, None)
                for field in self.template_fields
                if field not in _NOT_INPUTS  # these never change what a video is made of
            }
        )

    def _named_inputs(self) -> dict[str, Any]:
        return {name: getattr(self, name, None) for name in NAMED_INPUTS}

    def execute(self, context: Context) -> Any:
        from airflow_provider_magi.hooks.magi import model_path
        from airflow_provider_magi.model_inputs import model_inputs
        from airflow_provider_magi.paying.deadline import start_clock
        from airflow_provider_magi.paying.item import regenerate_flag
        from airflow_provider_magi.validation import check_webhook_url, inputs_fingerprint

        start_clock(self, context)  # execution_timeout counts from here (kept across this try's resumes)
        self._one_rendering(context, resuming=self._resuming)  # this try's first rendering, on every entry
        self._regenerate = regenerate_flag(self.regenerate_on_clear)
        model_path(self.model)  # a bad model id is bad input, refused before any request
        self._inputs = model_inputs(
            self.model, **self._named_inputs(), extra_inputs=self.extra_inputs, log=self.log
        )
        self._webhook_url = check_webhook_url(
            self.webhook_url, allow_insecure_loopback=bool(self.webhook_url) and self.hook.is_local_server
        )
        self._fingerprint = inputs_fingerprint(self.model, self._inputs)
        # The template-source rule (an unchanged source reattaches whatever it renders to) only
        # for a record the previous version wrote, before renderings were recorded: only such a
        # record holds a source (write_intent records none now). Not gated on this task having no
        # rendering record yet: the first try after an upgrade records one, and a later try must
        # still reattach to the old record by its source.
        self._source_fingerprint = self._template_source
        ledger = self._open_ledger(context)
        prediction_id = self._resume(ledger, context)
        if prediction_id is None:
            prediction_id = self.submit_job(context, ledger)
        elif self._final is not None and self._final.is_completed:
            return self.get_job_result(prediction_id, context)
        return self.poll_until_complete(prediction_id, context)

    # ------------------------------------------------------------ never pay twice (paying.item)

    def _open_ledger(self, context: Context) -> Ledger:
        from airflow_provider_magi.ledger_stores import open_ledger

        ledger = open_ledger(context, ledger_path=self.hook.settings.ledger_path)
        ledger.clock = self.hook.server_now  # WaveSpeed's clock, as its Date headers put it
        return ledger

    @property
    def _payer(self) -> ItemPayer:
        from airflow_provider_magi.paying.item import ItemPayer

        return ItemPayer(
            self.hook,
            self._item_model or self.model,
            self.log,
            attach_to_single_candidate=self.attach_to_single_candidate,
            settle_wait=self._settle_wait,
            waiting=bool(self.deferrable),
        )

    def _resume(self, ledger: Ledger, context: Context) -> str | None:
        """The prediction an earlier try (or a cleared run) already paid for, or None to submit."""
        found = self._payer.find_paid(
            ledger, context, self._fingerprint, self._source_fingerprint, regenerate=self._regenerate
        )
        if found.final is not None:
            self._final = found.final
        return found.prediction_id

    def _settle_wait(self, seconds: float) -> None:
        """Wait before an intent's look-up: in the triggerer when deferrable (no worker slot held)."""
        if self.deferrable:
            from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

            self.defer(
                trigger=TimeDeltaTrigger(timedelta(seconds=seconds)), method_name="resume_after_settle"
            )
        time.sleep(seconds)

    def submit_job(self, context: Context, ledger: Ledger) -> str:
        item = (ledger, context, self._fingerprint, self._inputs)
        prediction_id = self._payer.pay(*item, webhook_url=self._webhook_url, **self._still_to_pay())
        self._announce(context, prediction_id, "Submitted")
        return prediction_id

    def _still_to_pay(self) -> dict[str, Any]:
        """What the guards count: the predictions this task still pays for, this one included
        (``count``, and their ``prices`` when the catalogue knows them), and what it paid
        already (``paid``, ``own_prices``): one video here; a long video's remaining scenes."""
        from airflow_provider_magi.model_inputs import price_of

        price = price_of(self._item_model or self.model, self._inputs)
        return {"count": 1, "prices": () if price is None else (price,)}

    def poll_until_complete(self, external_id: Any, context: Context) -> Any:
        prediction_id, _ = stored_job(external_id)
        self._announce(context, prediction_id, "Reattached to")
        if not self.wait_for_completion:
            self._mark_delivered(context, prediction_id)  # the id is what this task delivers
            return prediction_id
        waiter = self._waiter(prediction_id)
        if self.deferrable:
            prediction = self.hook.get_prediction(prediction_id)
            waiter.observe(prediction, self.log)
            if not prediction.is_terminal:
                self.defer_to_trigger(waiter, context)
        else:
            prediction = self.hook.wait_for_prediction(waiter)
        self._final = prediction
        return self.get_job_result(prediction_id, context)

    def get_job_result(self, external_id: Any, context: Context) -> Any:
        prediction_id, _ = stored_job(external_id)
        self._announce(context, prediction_id, "Reusing completed")
        if not self.wait_for_completion:
            self._mark_delivered(context, prediction_id)  # the id is what this task delivers
            return prediction_id
        prediction = self._final or self.hook.get_prediction(prediction_id)
        result = self._result(final_result(prediction))
        self._mark_delivered(context, prediction_id)
        return result

    # ------------------------------------------------------------ deferral

    def _waiter(self, prediction_id: str) -> Waiter:
        deadline = time.time() + self.timeout if self.timeout else None
        return Waiter(
            prediction_id,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            deadline=deadline,
            conn_id=self.magi_conn_id,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        if self.event_from_an_earlier_try(event, context):
            return self.execute(context)  # the ledger reattaches: nothing is paid again
        try:  # the result names the inputs this try paid for, not a new rendering of them
            self._one_rendering(context, pays=False, resuming=True)
        except Exception as error:  # the video is done and paid: never fail the task for this
            self.log.warning("The rendering this try paid for could not be read: %s", error)
        result = self._result(self.result_from_trigger(event))
        self._mark_delivered(context, result["prediction_id"])
        return result

    def resume_after_settle(self, context: Context, event: Any = None) -> Any:
        """Back from the settle before a history look-up (deferred, so no worker slot waited)."""
        self._resuming = True
        return self.execute(context)

    def _mark_delivered(self, context: Context, prediction_id: str) -> None:
        """Note in the ledger that this task succeeded with ``prediction_id``, so that only a
        clear of a successful task (never a retry) can regenerate on purpose."""
        try:
            ledger = self._open_ledger(context)
            record = ledger.read()
        except Exception as error:  # the video is done and paid: never fail the task for this
            self.log.warning("The ledger could not note prediction %s as delivered: %s", prediction_id, error)
            return
        from airflow_provider_magi.paying.item import clear_number

        if record is not None and record.prediction_id == prediction_id and not record.delivered:
            ledger.write_delivered(record, clear_number(context))
        if ledger.by_inputs is not None:  # a mapped task: it waits on no trigger any more
            ledger.write_claim(prediction_id)

    def _result(self, result: dict[str, Any]) -> dict[str, Any]:
        """Add what was asked for, so downstream tasks and asset events can say what a video is."""
        from airflow_provider_magi.validation import inputs_summary

        result["inputs"] = inputs_summary(**self._named_inputs(), extra_inputs=self.extra_inputs)
        self.log.info(
            "Prediction %s completed: %d output(s)", result["prediction_id"], len(result["outputs"])
        )
        result["cost_usd"] = self._count_cost(result["prediction_id"], str(result.get("model") or self.model))
        self._lineage_result = result
        return result

    # ------------------------------------------------------------ bookkeeping

    def _announce(self, context: Context, prediction_id: str, verb: str) -> None:
        """Push the id to XCom before anything else can fail, so it is never lost (once per id)."""
        if self._announced == prediction_id:
            return
        self._announced = prediction_id
        url = remember_prediction(self, context, prediction_id, self.hook)
        self.log.info("%s prediction %s; result at %s", verb, prediction_id, url)

    def _lineage(self) -> Any:
        from airflow_provider_magi.lineage import generate_lineage

        return generate_lineage(
            prediction_id=self.magi_prediction_id,
            model=self.model,
            prompt=self.prompt,
            seed=self.seed,
            image=self.image,
            result=self._lineage_result,
        )

    def on_kill(self) -> None:
        if self._announced:
            self.log.warning(
                "Task killed. WaveSpeed has no cancel endpoint: prediction %s keeps running and is "
                "billed. A retry of this task reattaches to it (the ledger holds its id).",
                self._announced,
            )
