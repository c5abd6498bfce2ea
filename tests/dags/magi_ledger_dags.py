"""DAGs for the ledger's second round (#26): stores switched between tries, re-rendered templates,
runs made again, Airflow 3.0's stale resume events. ``tests/test_ledger_round2.py`` runs them."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator

FAST = {"poll_interval": 0.1, "max_poll_interval": 0.2}
START = datetime(2026, 1, 1)
# The connection JSON a try switches to after try 1 dies (ledger_path added, removed or moved).
NEXT_CONN_ENV = "MAGI_TEST_CONN_AFTER_CRASH"


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, catchup=False)


class DiesAfterSubmit(MagiGenerateVideoOperator):
    """Try 1 pays, then dies (a killed worker); the next try may run against another store.

    ``switch_conn``: before dying, the connection is edited (``$MAGI_TEST_CONN_AFTER_CRASH``), as
    when ``ledger_path`` is added, removed or moved between tries. ``before_task_state_store``: try
    1 runs as Airflow 3.2 would (no task state store), try 2 as 3.3 does: an upgrade between tries.
    """

    def __init__(self, *, switch_conn: bool = False, before_task_state_store: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.switch_conn = switch_conn
        self.before_task_state_store = before_task_state_store

    def execute(self, context: Any) -> Any:
        if self.before_task_state_store and context["ti"].try_number == 1:
            context = {key: value for key, value in context.items() if key != "task_state_store"}
        return super().execute(context)

    def submit_job(self, context: Any, ledger: Any) -> Any:
        prediction_id = super().submit_job(context, ledger)
        if context["ti"].try_number == 1:
            if self.switch_conn:
                os.environ["AIRFLOW_CONN_MAGI_DEFAULT"] = os.environ[NEXT_CONN_ENV]
                self.__dict__.pop("hook", None)  # the next try reads the edited connection
            raise RuntimeError(f"simulated worker crash right after submitting {prediction_id}")
        return prediction_id


RETRY = {"retries": 1, "retry_delay": timedelta(seconds=0)}

with _dag("magi_ledger_conn_switched_between_tries"):
    DiesAfterSubmit(
        task_id="generate", prompt="a switch [[duration: 0.2]]", switch_conn=True, **RETRY, **FAST
    )

with _dag("magi_ledger_upgraded_between_tries"):
    DiesAfterSubmit(
        task_id="generate",
        prompt="an upgrade [[duration: 0.2]]",
        before_task_state_store=True,
        **RETRY,
        **FAST,
    )

# The seed renders to another number every time (the README's `range(0, 100000) | random`): a
# value that varies by itself, so the retry keeps try 1's (paying.rendering), the same task.
RANDOM_SEED = "{{ range(0, 100000) | random }}"
for deferrable in (True, False):
    with _dag(f"magi_ledger_rerendered_seed_{'deferrable' if deferrable else 'sync'}"):
        DiesAfterSubmit(
            task_id="generate",
            prompt="a re-rendered seed [[duration: 0.2]]",
            seed=RANDOM_SEED,
            deferrable=deferrable,
            **RETRY,
            **FAST,
        )

with _dag("magi_ledger_run_made_again"):
    MagiGenerateVideoOperator(task_id="generate", prompt="a run made again [[duration: 0.1]]", **FAST)

# Airflow 3.0 resumes a retry in execute_complete with the earlier try's timeout event
# (apache/airflow#56704): the prediction takes 3 s, each try's execution_timeout is 1.5 s.
with _dag("magi_ledger_retry_after_a_deferred_timeout"):
    MagiGenerateVideoOperator(
        task_id="generate",
        prompt="a slow one [[duration: 3]]",
        deferrable=True,
        execution_timeout=timedelta(seconds=1.5),
        retries=5,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

MAPPED_PROMPTS = ["a fox [[duration: 0.3]]", "a hare [[duration: 0.3]]", "an owl [[duration: 0.3]]"]


class ReorderedOnRetry(MagiGenerateVideoOperator):
    """Try 1 pays, then dies; on try 2 each map index gets the next one's prompt, as when an
    upstream list comes back in another order and the mapped task is cleared."""

    def execute(self, context: Any) -> Any:
        if context["ti"].try_number > 1:  # made from the reordered list, as Airflow would
            self.prompt = MAPPED_PROMPTS[(context["ti"].map_index + 1) % len(MAPPED_PROMPTS)]
            getattr(self, "_keep_template_source", lambda: None)()
            self._render_again = None  # set here, not rendered: no second rendering to compare
        return super().execute(context)

    def submit_job(self, context: Any, ledger: Any) -> Any:
        prediction_id = super().submit_job(context, ledger)
        if context["ti"].try_number == 1:
            raise RuntimeError(f"simulated worker crash right after submitting {prediction_id}")
        return prediction_id


with _dag("magi_ledger_mapped_list_reordered"):
    ReorderedOnRetry.partial(task_id="generate", deferrable=False, **RETRY, **FAST).expand(
        prompt=MAPPED_PROMPTS
    )

# A mapped task is rendered by its MappedOperator: its template source is taken when it is made.
with _dag("magi_ledger_mapped_rerendered_seed"):
    DiesAfterSubmit.partial(task_id="generate", seed=RANDOM_SEED, deferrable=False, **RETRY, **FAST).expand(
        prompt=["a mapped fox [[duration: 0.2]]", "a mapped owl [[duration: 0.2]]"]
    )
