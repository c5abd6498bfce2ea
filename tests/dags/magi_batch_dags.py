"""DAGs the batch tests run with ``dag.test()``; each isolates one behaviour of MagiBatchOperator."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset

from airflow_provider_magi.operators.batch import MagiBatchOperator

OUTPUT_DIR = os.environ.get("MAGI_TEST_OUTPUT_DIR", "/tmp/magi-test-output")
FAST = {"poll_interval": 0.2, "max_poll_interval": 0.4}
START = datetime(2026, 1, 1)
BATCH_VIDEOS = Asset("magi_test_batch_videos")


class DiesMidWait(MagiBatchOperator):
    """Try 1's worker dies the first time the batch resumes from its wait; later tries run on."""

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        if context["ti"].try_number == 1:
            raise RuntimeError("simulated worker crash while the batch waits")
        return super().execute_complete(context, event)


def _dag(dag_id: str, **kwargs: Any) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, catchup=False, **kwargs)


with _dag("magi_batch_test_thirty"):
    MagiBatchOperator(
        task_id="batch",
        inputs=[f"video {i} [[duration: 0.6]]" for i in range(30)],
        destination=OUTPUT_DIR,
        max_in_flight=10,
        outlets=[BATCH_VIDEOS],
        **FAST,
    )

with _dag("magi_batch_test_dies_mid_wait"):
    DiesMidWait(
        task_id="batch",
        inputs=[{"prompt": f"survivor {i} [[duration: 1.0]]", "seed": i} for i in range(6)],
        destination=OUTPUT_DIR,
        max_in_flight=6,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

with _dag("magi_batch_test_budget"):
    MagiBatchOperator(
        task_id="batch",
        inputs=[f"budgeted {i} [[duration: 0.3]]" for i in range(10)],
        destination=OUTPUT_DIR,
        max_in_flight=10,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

with _dag("magi_batch_test_partial", params={"fail_on_partial_error": True}):
    MagiBatchOperator(
        task_id="batch",
        inputs=[
            f"item {i} [[duration: 0.3]]" + (" [[fail: safety filter]]" if i in (1, 4) else "")
            for i in range(6)
        ],
        destination=OUTPUT_DIR,
        max_in_flight=6,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

with _dag("magi_batch_test_tolerant"):
    MagiBatchOperator(
        task_id="batch",
        inputs='["fine [[duration: 0.2]]", {"prompt": "broken [[duration: 0.2]] [[fail: GPU lost]]"}]',
        destination=OUTPUT_DIR,
        fail_on_partial_error=False,
        **FAST,
    )

with _dag("magi_batch_test_lost_answer"):
    MagiBatchOperator(
        task_id="batch",
        inputs=[f"lost {i} [[duration: 0.3]]" for i in range(3)],
        destination=OUTPUT_DIR,
        max_in_flight=3,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

with _dag("magi_batch_test_table", params={"table": "", "destination": OUTPUT_DIR}):
    MagiBatchOperator(
        task_id="batch",
        inputs="{{ params.table }}",
        destination="{{ params.destination }}",
        filename="table/{run_id}/{index}_{prediction_id}.mp4",
        max_in_flight=2,
        deferrable=False,
        **FAST,
    )

with _dag("magi_batch_test_paced"):
    MagiBatchOperator(
        task_id="batch",
        inputs=[f"paced {i} [[duration: 0.2]]" for i in range(4)],
        destination=OUTPUT_DIR,
        max_in_flight=4,
        **FAST,
    )

with _dag("magi_batch_test_nsfw"):
    MagiBatchOperator(
        task_id="batch",
        inputs=["clean [[duration: 0.2]]", "flagged [[duration: 0.2]] [[nsfw]]"],
        destination=OUTPUT_DIR,
        nsfw_policy="fail",
        fail_on_partial_error=False,
        **FAST,
    )

with _dag("magi_batch_test_timeout"):
    MagiBatchOperator(
        task_id="batch",
        inputs=["quick [[duration: 0.2]]", "endless [[never]]"],
        destination=OUTPUT_DIR,
        timeout=3,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

with _dag("magi_batch_test_mapped"):
    MagiBatchOperator.partial(task_id="batch", destination=OUTPUT_DIR, max_in_flight=2, **FAST).expand(
        inputs=[[f"shelf {shelf} item {i} [[duration: 0.2]]" for i in range(2)] for shelf in range(2)]
    )


class DiesMidWave(MagiBatchOperator):
    """Try 1's worker dies while sending the third submit of its first wave (before it leaves)."""

    def execute(self, context: Any) -> Any:
        if context["ti"].try_number == 1:
            send = self.hook.create_prediction
            sent: list[str] = []

            def dies_on_the_third(*args: Any, **kwargs: Any) -> Any:
                if len(sent) == 2:
                    raise RuntimeError("simulated worker kill in the middle of a wave")
                prediction = send(*args, **kwargs)
                sent.append(prediction.id)
                return prediction

            self.hook.create_prediction = dies_on_the_third  # type: ignore[method-assign]
        return super().execute(context)


with _dag("magi_batch_test_dies_mid_wave"):
    DiesMidWave(
        task_id="batch",
        inputs=[f"wave {i} [[duration: 0.3]]" for i in range(5)],
        destination=OUTPUT_DIR,
        max_in_flight=5,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )


class InputsChangeOnRetry(DiesMidWait):
    """Try 1 runs two inputs and dies mid-wait; the retry's re-rendered list puts a new one first."""

    def _run(self, context: Any, event: dict[str, Any] | None) -> Any:
        if context["ti"].try_number > 1:
            self.inputs = [
                "inserted [[duration: 0.3]]",
                "kept a [[duration: 0.3]]",
                "kept b [[duration: 0.3]]",
            ]
        return super()._run(context, event)


with _dag("magi_batch_test_inputs_change"):
    InputsChangeOnRetry(
        task_id="batch",
        inputs=["kept a [[duration: 0.3]]", "kept b [[duration: 0.3]]"],
        destination=OUTPUT_DIR,
        max_in_flight=5,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

with _dag("magi_batch_test_no_outputs"):
    MagiBatchOperator(
        task_id="batch",
        inputs=["made [[duration: 0.2]]", "made, nothing to fetch [[duration: 0.2]] [[outputs: 0]]"],
        destination=OUTPUT_DIR,
        max_in_flight=2,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

with _dag("magi_batch_test_budget_two_at_a_time"):
    MagiBatchOperator(
        task_id="batch",
        inputs=[f"two at a time {i} [[duration: 0.3]]" for i in range(10)],
        destination=OUTPUT_DIR,
        max_in_flight=2,
        **FAST,
    )


class ForgottenMidWait(MagiBatchOperator):
    """Try 1 dies at its first resume, after the local server forgot (404s) what had ended then:
    billed predictions WaveSpeed no longer lists, as after its 7 days or behind a lying proxy."""

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        if context["ti"].try_number == 1:
            import urllib.request

            for result in (event or {}).get("ended") or []:
                url = f"{self.hook.settings.base_url}/_testing/forget?id={result['prediction_id']}"
                urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5).read()
            raise RuntimeError("simulated worker crash while the batch waits")
        return super().execute_complete(context, event)


with _dag("magi_batch_test_forgotten"):
    ForgottenMidWait(
        task_id="batch",
        inputs=[f"forgotten {i} [[duration: 0.2]]" for i in range(2)],
        destination=OUTPUT_DIR,
        max_in_flight=2,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

with _dag("magi_batch_test_mapped_shared_folder"):
    MagiBatchOperator.partial(
        task_id="batch",
        destination=OUTPUT_DIR,
        filename="shared/{run_id}/{index}_{prediction_id}.mp4",
        max_in_flight=2,
        **FAST,
    ).expand(inputs=[[f"shelf {shelf} item {i} [[duration: 0.2]]" for i in range(2)] for shelf in range(2)])


class SwitchesStoreMidWait(MagiBatchOperator):
    """Try 1 dies mid-wait after the connection is edited (``ledger_path`` added, removed or
    moved) for the next try: the retry must find what try 1 paid, wherever try 1 recorded it."""

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        if context["ti"].try_number == 1:
            os.environ["AIRFLOW_CONN_MAGI_DEFAULT"] = os.environ["MAGI_TEST_CONN_AFTER_CRASH"]
            self.__dict__.pop("hook", None)  # the next try reads the edited connection
            raise RuntimeError("simulated worker crash while the batch waits")
        return super().execute_complete(context, event)


with _dag("magi_batch_test_store_switched"):
    SwitchesStoreMidWait(
        task_id="batch",
        inputs=[f"switched {i} [[duration: 1.0]]" for i in range(3)],
        destination=OUTPUT_DIR,
        max_in_flight=3,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )


class RateLimitedOnTheRetry(MagiBatchOperator):
    """Try 2 (which submits the two failed inputs again) meets a 429 that outlasts the hook's
    retries on its first submit: the input held back must still be submitted in that try."""

    def _fresh_start(self) -> None:
        if self._context["ti"].try_number == 2:
            import httpx

            rate_limited = {
                "route": "submit",
                "kind": "status",
                "status": 429,
                "retry_after": 0.2,
                "times": 4,
            }
            httpx.post(f"{self.hook.settings.base_url}/_testing/faults", json=[rate_limited], timeout=10)
        super()._fresh_start()


with _dag("magi_batch_test_429_on_the_retry"):
    RateLimitedOnTheRetry(
        task_id="batch",
        inputs=[
            f"again {i} [[duration: 0.3]]" + (" [[fail: safety filter]]" if i in (1, 2) else "")
            for i in range(3)
        ],
        destination=OUTPUT_DIR,
        max_in_flight=3,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )


class LedgerRefusesTheIds(MagiBatchOperator):
    """Try 1's ledger takes the wave's intents, then refuses its ids (the second write fails):
    the task stops naming them, and the retry must find them in the manifest, not pay again."""

    def _submit_wave(self) -> float:
        if self._context["ti"].try_number == 1:
            takes = self._ledger.write_text
            writes: list[str] = []

            def intents_then_refused(name: str, text: str) -> None:
                writes.append(name)
                if len(writes) > 1:  # the wave's second write: its ids
                    raise OSError("the metadata database went away")
                takes(name, text)

            self._ledger.write_text = intents_then_refused  # type: ignore[method-assign]
        return super()._submit_wave()

    def execute(self, context: Any) -> Any:
        from airflow_provider_magi.exceptions import MagiLedgerError

        try:
            return super().execute(context)
        except MagiLedgerError as error:  # not retried by design: a retry stands in for the clear
            raise RuntimeError(f"cleared after: {error}") from None


with _dag("magi_batch_test_ledger_refuses_ids"):
    LedgerRefusesTheIds(
        task_id="batch",
        inputs=[f"recorded {i} [[duration: 0.5]]" for i in range(4)],
        destination=OUTPUT_DIR,
        max_in_flight=4,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

with _dag("magi_batch_test_keys"):
    MagiBatchOperator(
        task_id="batch",
        inputs=[
            {"prompt": "a teapot [[duration: 0.3]]", "key": "sku-11", "metadata": {"row": 11, "tags": ["a"]}},
            {"prompt": "a lamp [[duration: 0.3]]", "key": "sku-12"},
            "a lamp [[duration: 0.3]]",
            "a lamp [[duration: 0.3]]",
        ],
        destination=OUTPUT_DIR,
        max_in_flight=4,
        **FAST,
    )

with _dag("magi_batch_test_duplicate_keys"):
    MagiBatchOperator(
        task_id="batch",
        inputs=[{"prompt": "one", "key": "k"}, {"prompt": "two", "key": "k"}],
        destination=OUTPUT_DIR,
        **FAST,
    )

with _dag("magi_batch_test_budget_tolerated"):
    MagiBatchOperator(
        task_id="batch",
        inputs=[f"budgeted {i} [[duration: 0.3]]" for i in range(10)],
        destination=OUTPUT_DIR,
        max_in_flight=10,
        fail_on_partial_error=False,
        **FAST,
    )
