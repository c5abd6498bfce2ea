"""DAGs the operator tests run with ``dag.test()``; each isolates one behaviour."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

import fsspec
import requests
from airflow.sdk import DAG, Asset
from airflow.sdk.io import attach

from airflow_provider_magi.operators.download import MagiDownloadOutputsOperator
from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator, stored_job
from airflow_provider_magi.sensors.magi import MagiPredictionSensor

OUTPUT_DIR = os.environ.get("MAGI_TEST_OUTPUT_DIR", "/tmp/magi-test-output")
FAST = {"poll_interval": 0.1, "max_poll_interval": 0.2}
START = datetime(2026, 1, 1)
VIDEOS = Asset("magi_test_videos")
# An offline object store for the download tests: fsspec's in-memory filesystem as memory://.
attach(protocol="memory", fs=fsspec.filesystem("memory"))


class CrashOnceAfter(MagiGenerateVideoOperator):
    """Dies on its first try at a chosen step, as a killed worker would; later tries run normally."""

    def __init__(self, *, crash_in: str, forget_first: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crash_in = crash_in
        self.forget_first = forget_first

    def _crash(self, step: str, context: Any, prediction_id: str) -> None:
        if step == self.crash_in and context["ti"].try_number == 1:
            if self.forget_first:  # the API deletes it (as after 7 days) before the retry
                base = self.hook.settings.base_url
                requests.post(f"{base}/_testing/forget", params={"id": prediction_id}, timeout=5)
            raise RuntimeError(f"simulated worker crash in {step}")

    def poll_until_complete(self, external_id: Any, context: Any) -> Any:
        self._crash("poll", context, stored_job(external_id)[0])
        return super().poll_until_complete(external_id, context)

    def get_job_result(self, external_id: Any, context: Any) -> Any:
        self._crash("result", context, stored_job(external_id)[0])
        return super().get_job_result(external_id, context)


def _dag(dag_id: str, **kwargs: Any) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, catchup=False, **kwargs)


for deferrable in (True, False):
    with _dag(f"magi_test_generate_{'deferrable' if deferrable else 'sync'}"):
        generate = MagiGenerateVideoOperator(
            task_id="generate",
            prompt="a kite [[duration: 0.5]]",
            seed="{{ 40 + 2 }}",
            deferrable=deferrable,
            **FAST,
        )
        MagiDownloadOutputsOperator(
            task_id="download",
            prediction=generate.output,
            destination=OUTPUT_DIR,
            outlets=[VIDEOS],
            checksum=True,
        )

with _dag(
    "magi_test_params",
    params={"prompt": "x", "seed": None, "image": None, "extra_inputs": None},
    render_template_as_native_obj=True,
):
    MagiGenerateVideoOperator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        seed="{{ params.seed if params.seed is not none else '' }}",
        image="{{ params.image or '' }}",
        extra_inputs="{{ params.extra_inputs }}",
        retries=2,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

for crash_in in ("poll", "result"):
    with _dag(f"magi_test_crash_in_{crash_in}"):
        CrashOnceAfter(
            task_id="generate",
            # "poll": still running when the retry starts (dag.test may take ~10 s to retry).
            prompt=f"a crane [[duration: {20 if crash_in == 'poll' else 0.3}]]",
            crash_in=crash_in,
            retries=1,
            retry_delay=timedelta(seconds=0),
            # "result" waits in the worker, so try 1 always reaches get_job_result before crashing.
            deferrable=crash_in == "poll",
            **FAST,
        )

with _dag("magi_test_failed_then_resubmitted"):
    CrashOnceAfter(
        task_id="generate",
        prompt="x [[duration: 0.1]] [[fail: safety filter]]",
        crash_in="result",
        retries=1,
        retry_delay=timedelta(seconds=0),
        deferrable=False,
        **FAST,
    )

with _dag("magi_test_forgotten_then_resubmitted"):
    CrashOnceAfter(
        task_id="generate",
        prompt="a moth [[duration: 0.2]]",
        crash_in="poll",
        forget_first=True,
        retries=1,
        retry_delay=timedelta(seconds=0),
        deferrable=True,
        **FAST,
    )

for name, prompt, timeout in (
    ("failed", "x [[duration: 0.1]] [[fail: GPU out of memory]]", 60),
    ("never", "x [[never]]", 1),
):
    with _dag(f"magi_test_{name}"):
        MagiGenerateVideoOperator(
            task_id="generate",
            prompt=prompt,
            timeout=timeout,
            retries=2,
            retry_delay=timedelta(seconds=0),
            **FAST,
        )

with _dag("magi_test_no_wait_then_sensor"):
    submit = MagiGenerateVideoOperator(
        task_id="submit", prompt="a bee [[duration: 0.4]]", wait_for_completion=False
    )
    wait_deferred = MagiPredictionSensor(
        task_id="wait_deferred", prediction_id=submit.output, deferrable=True, **FAST
    )
    wait_poke = MagiPredictionSensor(
        task_id="wait_poke",
        prediction_id="{{ ti.xcom_pull(task_ids='submit', key='prediction_id') }}",
        **FAST,
    )
    submit >> [wait_deferred, wait_poke]

with _dag("magi_test_sensor_failed"):
    submit = MagiGenerateVideoOperator(
        task_id="submit", prompt="x [[duration: 0.1]] [[fail: bad frame]]", wait_for_completion=False
    )
    MagiPredictionSensor(task_id="wait", prediction_id=submit.output, deferrable=True, retries=2, **FAST)

for policy in ("keep", "skip", "fail"):
    with _dag(f"magi_test_nsfw_{policy}"):
        generate = MagiGenerateVideoOperator(
            task_id="generate", prompt="x [[duration: 0.1]] [[nsfw]] [[outputs: 2]]", **FAST
        )
        MagiDownloadOutputsOperator(
            task_id="download",
            prediction=generate.output,
            destination=OUTPUT_DIR,
            nsfw_policy=policy,
            retries=1,
        )

with _dag("magi_test_expired_outputs"):
    generate = MagiGenerateVideoOperator(task_id="generate", prompt="x [[duration: 0.1]] [[expire]]", **FAST)
    MagiDownloadOutputsOperator(task_id="download", prediction=generate.output, destination=OUTPUT_DIR)

with _dag("magi_test_download_to_memory"):
    generate = MagiGenerateVideoOperator(
        task_id="generate", prompt="x [[duration: 0.1]] [[outputs: 2]]", **FAST
    )
    MagiDownloadOutputsOperator(
        task_id="download",
        prediction=generate.output,
        destination="memory://magi-videos/{{ ds }}",
        filename="{prediction_id}/{index}.mp4",
        outlets=[VIDEOS],
    )

# ---------------------------------------------------------------- hostile and edge cases (#13)

# 6 s, not less: the timeout also covers the submit before the deferral, which a loaded machine
# can stretch past a second or two (it must be the deferred wait that runs out, not the submit).
for name in ("generate", "sensor"):
    with _dag(f"magi_test_execution_timeout_{name}"):
        if name == "generate":
            MagiGenerateVideoOperator(
                task_id="wait",
                prompt="x [[never]]",
                timeout=600,
                execution_timeout=timedelta(seconds=6),
                deferrable=True,
                **FAST,
            )
        else:
            submit = MagiGenerateVideoOperator(
                task_id="submit", prompt="x [[never]]", wait_for_completion=False
            )
            MagiPredictionSensor(
                task_id="wait",
                prediction_id=submit.output,
                deferrable=True,
                timeout=600,
                execution_timeout=timedelta(seconds=6),
                **FAST,
            )

for outcome, prompt in (("failed", "x [[duration: 0.1]] [[fail: bad frame]]"), ("timeout", "x [[never]]")):
    for mode in ("deferrable", "poke"):
        with _dag(f"magi_test_sensor_soft_fail_{outcome}_{mode}"):
            submit = MagiGenerateVideoOperator(task_id="submit", prompt=prompt, wait_for_completion=False)
            MagiPredictionSensor(
                task_id="wait",
                prediction_id=submit.output,
                deferrable=mode == "deferrable",
                soft_fail=True,
                timeout=1,
                **FAST,
            )


class EditedBetweenTries(MagiGenerateVideoOperator):
    """Try 1 dies while waiting; try 2 runs edited DAG code (another prompt source), as after an
    edit and a clear. (A template that merely renders differently is not an edit: see #26.)"""

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        if context["ti"].try_number > 1:
            self.prompt = "{{ 'second' }} take [[duration: 0.3]]"
        super().render_template_fields(context, jinja_env)

    def poll_until_complete(self, external_id: Any, context: Any) -> Any:
        if context["ti"].try_number == 1:
            raise RuntimeError("simulated worker crash in poll")
        return super().poll_until_complete(external_id, context)


with _dag("magi_test_prompt_edited_before_retry"):
    EditedBetweenTries(
        task_id="generate",
        prompt="{{ 'first' }} take [[duration: 0.3]]",
        retries=1,
        retry_delay=timedelta(seconds=0),
        deferrable=False,
        **FAST,
    )


class DeletesItsFrame(MagiGenerateVideoOperator):
    """The local first frame is removed right after the submit (a cleanup job, a tmp reaper)."""

    def submit_job(self, context: Any, ledger: Any) -> Any:
        job = super().submit_job(context, ledger)
        os.remove(str(self.image))
        if context["ti"].try_number == 1 and self.crash_after_submit:
            raise RuntimeError("simulated worker crash after submit")
        return job

    def __init__(self, *, crash_after_submit: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crash_after_submit = crash_after_submit


for crash in (False, True):
    with _dag(
        f"magi_test_frame_deleted_after_submit{'_then_retry' if crash else ''}",
        params={"image": ""},
    ):
        DeletesItsFrame(
            task_id="generate",
            prompt="a door opens [[duration: 0.3]]",
            image="{{ params.image }}",
            crash_after_submit=crash,
            retries=1,
            retry_delay=timedelta(seconds=0),
            deferrable=True,
            **FAST,
        )

with _dag(
    "magi_test_templated_connection_and_model",
    params={"conn": "magi_default", "model": "wavespeed-ai/magi-1-24b"},
):
    generate = MagiGenerateVideoOperator(
        task_id="generate",
        prompt="x [[duration: 0.1]]",
        magi_conn_id="{{ params.conn }}",
        model="{{ params.model }}",
        wait_for_completion=False,
    )
    wait = MagiPredictionSensor(
        task_id="wait", prediction_id=generate.output, magi_conn_id="{{ params.conn }}", **FAST
    )
    MagiDownloadOutputsOperator(
        task_id="download",
        prediction=wait.output,
        destination=OUTPUT_DIR,
        magi_conn_id="{{ params.conn }}",
    )

for attach_to_candidate in (False, True):
    with _dag(f"magi_test_uncertain_submit{'_attach' if attach_to_candidate else ''}"):
        MagiGenerateVideoOperator(
            task_id="generate",
            prompt="a lost answer [[duration: 0.3]]",
            attach_to_single_candidate=attach_to_candidate,
            retries=1,
            retry_delay=timedelta(seconds=0),
            **FAST,
        )

with _dag("magi_test_webhook", params={"receiver": "", "prompt": "a bell rings [[duration: 0.2]]"}):
    MagiGenerateVideoOperator(
        task_id="generate", prompt="{{ params.prompt }}", webhook_url="{{ params.receiver }}", **FAST
    )

# ---------------------------------------------------------------- never pay twice (#20)


class DiesOnFirstTry(MagiGenerateVideoOperator):
    """Try 1 dies at one step of the submit, as a killed worker or a crashing store would.

    ``die_at``: ``after_submit`` (paid and recorded), ``before_ledger_id`` (paid, id not yet
    recorded), ``before_post`` (intent recorded, nothing sent), ``corrupt_record`` (paid, then the
    record is mangled), ``paid_write_fails`` (the store refuses the id, on every try).
    """

    def __init__(self, *, die_at: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.die_at = die_at

    def submit_job(self, context: Any, ledger: Any) -> Any:
        first_try = context["ti"].try_number == 1
        if self.die_at == "before_ledger_id" and first_try:

            def killed(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("simulated worker kill between the POST and the ledger write")

            ledger.write_paid = killed
        if self.die_at == "before_post" and first_try:

            def killed_before_sending(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("simulated worker kill before the POST left")

            self.hook.create_prediction = killed_before_sending  # type: ignore[method-assign]
        if self.die_at == "paid_write_fails":
            write = ledger.store.write

            def refuses_ids(name: str, text: str) -> None:
                if '"prediction_id":null' not in text:
                    raise OSError("disk full")
                write(name, text)

            ledger.store.write = refuses_ids
        prediction_id = super().submit_job(context, ledger)
        if first_try and self.die_at == "corrupt_record":
            ledger.store.write("prediction", "{not a record")
        if first_try and self.die_at in ("after_submit", "corrupt_record"):
            raise RuntimeError(f"simulated worker crash right after submitting {prediction_id}")
        return prediction_id


for die_at in ("after_submit", "before_ledger_id", "before_post", "corrupt_record", "paid_write_fails"):
    for deferrable in (True, False):
        for attaches in (False, True) if die_at == "before_ledger_id" else (False,):
            mode = "deferrable" if deferrable else "sync"
            with _dag(f"magi_test_dies_{die_at}_{mode}{'_attach' if attaches else ''}"):
                DiesOnFirstTry(
                    task_id="generate",
                    prompt="a paid video [[duration: 0.3]]",
                    die_at=die_at,
                    deferrable=deferrable,
                    attach_to_single_candidate=attaches,
                    retries=2,
                    retry_delay=timedelta(seconds=0),
                    **FAST,
                )

with _dag("magi_test_transient_poll_failure"):
    MagiGenerateVideoOperator(
        task_id="generate",
        prompt="a paid video [[duration: 0.3]]",
        deferrable=True,
        retries=2,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

with _dag("magi_test_two_outputs_one_path"):
    generate = MagiGenerateVideoOperator(
        task_id="generate", prompt="x [[duration: 0.1]] [[outputs: 2]]", **FAST
    )
    MagiDownloadOutputsOperator(
        task_id="download",
        prediction=generate.output,
        destination=OUTPUT_DIR,
        filename="daily/{ds}.mp4",  # no {index}: both outputs would land on one path
    )

# ---------------------------------------------------------------- know and cap what you pay

COSTED_VIDEOS = Asset("magi_test_costed_videos")

for deferrable in (True, False):
    mode = "deferrable" if deferrable else "sync"
    with _dag(f"magi_test_cost_{mode}"):
        generate = MagiGenerateVideoOperator(
            task_id="generate",
            prompt=f"a priced video ({mode}) [[duration: 0.2]]",
            deferrable=deferrable,
            **FAST,
        )
        MagiDownloadOutputsOperator(
            task_id="download",
            prediction=generate.output,
            destination=OUTPUT_DIR,
            outlets=[COSTED_VIDEOS],
        )

    # A local first frame: the guard must stop the upload too, not only the submit. One retry,
    # so a refusal (not retried) and a fail-safe (retried) tell themselves apart by try_number.
    with _dag(f"magi_test_guarded_{mode}", params={"image": ""}):
        MagiGenerateVideoOperator(
            task_id="generate",
            prompt="a guarded video [[duration: 0.2]]",
            image="{{ params.image }}",
            deferrable=deferrable,
            retries=1,
            retry_delay=timedelta(seconds=0),
            **FAST,
        )
