"""Map indexes judged by what Airflow says *after* their records were read (paying/map_indexes.py,
paying/item.py, ledger.py claims).

Each case came from a third attacker's read and failed before the rule it pins. The switch between
map indexes happens at a fixed point (inside a store call, or right after the read of Airflow's
states), never by a clock: a holder that was queued at an earlier snapshot but has since kept its
prediction is seen running; a paid prediction whose claim could not be written is not listed for
the others; and a clear of *another* map index does not end a deferral that still waits (a
deferral ends when its task finishes, not when the run's clear_number rises)."""

from __future__ import annotations

import logging
from typing import Any

from airflow_provider_magi.api import Prediction
from airflow_provider_magi.ledger import Ledger, TaskIdentity
from airflow_provider_magi.paying.item import ItemPayer
from tests.test_map_indexes import Run
from tests.test_map_indexes_races import DeleteHookedStore, Task, two_tasks
from tests.test_paying_core import Store

LOG = logging.getLogger("test")
X, Y = "x" * 64, "y" * 64


# ---------------------------------------------------------------- stale states, single video


def test_video_a_holder_queued_at_the_state_read_that_keeps_before_the_look_is_not_taken() -> None:
    """[X, Y] paid, a clear brings [X, X]. Map index 1 (now X) reads Airflow's states first:
    map index 0 is queued (on paper). Map index 0 then starts, finds its own p0 for X, claims it
    (this round) and delivers it, all while map index 1 releases p1 (release-first). Map index 1
    then looks at p0's claim with its stale snapshot, judges map index 0 'queued, not waiting'
    and takes p0: both deliver p0."""
    shared = DeleteHookedStore()
    states: dict[int, str] = {0: "none", 1: "none"}
    own0, own1 = Store(), Store()
    Task(own0, shared, states, 0).paid(X, "p0")
    Task(own1, shared, states, 1).paid(Y, "p1")
    cleared = {}
    for index, own in ((0, own0), (1, own1)):
        task = Task(own, shared, states, index)
        identity = TaskIdentity("d", "t", "r", map_index=index, run_started="2026", run_clears=1)
        task.ledger = Ledger(own, identity, by_inputs=shared)
        task.try_number = 1
        cleared[index] = task
    states.update({0: "queued", 1: "running"})
    got: dict[int, str | None] = {}
    shared.before_delete["claim-p1"] = lambda: got.setdefault(0, cleared[0].find(X))
    got[1] = cleared[1].find(X)
    assert not (got[0] == "p0" and got[1] == "p0"), f"p0 delivered by map indexes 0 and 1: {got}"


# ---------------------------------------------------------------- stale states, batch


class StaleRun(Run):
    """Something happens right after one map index's read of Airflow's states returns."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.after_states: dict[int, Any] = {}

    def context(self, map_index: int) -> Any:
        context = super().context(map_index)
        inner = context["ti"].get_task_states

        def get_task_states(**kw: Any) -> Any:
            found = inner(**kw)  # the snapshot
            hook = self.after_states.pop(map_index, None)
            if hook is not None:
                hook()
            return found

        context["ti"].get_task_states = get_task_states
        return context


def test_batch_a_holder_queued_at_the_state_read_that_shares_before_the_read_is_not_taken() -> None:
    """[X, X]: map index 1's try 1 ended before paying; map index 0 paid p0 and is up for retry,
    then queued. Map index 1's retry reads the states (0: queued); map index 0 then starts, shares
    p0 at its first entry, reads map index 1's try-1 share (nothing held) and keeps p0. Map index
    1 now reads map index 0's new share, judges it by the stale 'queued' and takes p0; its
    give_up_conflicts sees no share written since its read: both deliver p0."""
    run = StaleRun(2)
    run.run(1, [X], then="up_for_retry")
    run.run(0, [X], pays=["p0"], then="up_for_retry")
    run.states[0] = "queued"
    got: dict[int, list[str | None]] = {}
    run.after_states[1] = lambda: got.setdefault(0, run.run(0, [X]))
    got[1] = run.run(1, [X])
    assert not (got[0] == ["p0"] and got[1] == ["p0"]), f"p0 delivered by map indexes 0 and 1: {got}"


# ---------------------------------------------------------------- a claim not written


class PayHook:
    settings = None

    def check_spending(self, *args: Any, **kwargs: Any) -> None:
        pass

    def create_prediction(self, body: Any, **kwargs: Any) -> Prediction:
        return Prediction("p0", "m", "created")

    def get_prediction(self, prediction_id: str) -> Prediction:
        return Prediction(prediction_id, "m", "processing")


def test_video_a_paid_prediction_whose_claim_was_not_written_is_not_taken_while_delivered() -> None:
    """[X, X]: map index 1's try 1 ended before paying. Map index 0 pays p0 with the real pay():
    the record by inputs is written, the claim write is refused (best effort: a warning). Map
    index 0 is running, polling p0. Map index 1's retry finds p0 by inputs, unclaimed, and takes
    it: both deliver p0 (the batch's share has no such split: an unshared prediction is unseen)."""
    t0, t1, shared, states = two_tasks()
    t1.find(X)
    states[1] = "up_for_retry"
    assert t0.find(X) is None
    payer = ItemPayer(PayHook(), "m", LOG, attach_to_single_candidate=False, settle_wait=lambda _: None)
    shared.refuse = "claim-"
    assert payer.pay(t0.ledger, t0.context(), X, {"prompt": "x"}) == "p0"  # delivered from here on
    shared.refuse = ""
    assert "claim-p0" not in shared.data
    states[0] = "running"
    got1 = t1.find(X)
    assert got1 != "p0", "map index 1 delivers p0, which running map index 0 delivers"


# ---------------------------------------------------------------- a clear of *another* map index


def test_batch_a_clear_of_another_map_index_does_not_end_a_deferral_still_waiting() -> None:
    """[X, X]: map index 1's try 1 fails before paying; map index 0 pays p0 and defers, and its
    trigger fires (scheduled to resume, no first entry). The user clears only the failed map index
    1 while the run still runs: Airflow raises the run's clear_number for any clear
    (clear_task_instances), but map index 0 was not cleared and still resumes with p0. Its share's
    'waiting' no longer counts (other round), so map index 1 takes p0: both deliver p0."""
    from tests.test_map_indexes_races import resume

    run = Run(2)
    run.run(1, [X], then="failed")
    assert run.run(0, [X], pays=["p0"], then="scheduled", defers=True) == ["p0"]
    run.clears = 1  # only map index 1 cleared
    run.states[1] = "none"
    got1 = run.run(1, [X])
    got0 = resume(run, 0, [X])
    assert not (got0 == ["p0"] and got1 == ["p0"]), "p0 delivered by map indexes 0 and 1"


def test_video_a_clear_of_another_map_index_does_not_end_a_deferral_still_waiting() -> None:
    """The single-video form: map index 0 (deferrable) paid p0, deferred, its trigger fired
    (scheduled); only map index 1 is cleared (clear_number 0 -> 1). Map index 1's claim check
    drops map index 0's 'waiting' (written in round 0) and takes p0, which map index 0 delivers
    when it resumes."""
    t0, t1, shared, states = two_tasks()
    t1.find(X)
    states[1] = "failed"
    assert t0.find(X) is None
    t0.paid(X, "p0", waiting=True)
    states[0] = "scheduled"  # its trigger fired: execute_complete comes next
    identity = TaskIdentity("d", "t", "r", map_index=1, run_started="2026", run_clears=1)
    t1.ledger = Ledger(t1.ledger.store, identity, by_inputs=shared)
    states[1] = "none"
    got1 = t1.find(X)
    assert got1 != "p0", "map index 1 delivers p0, which map index 0 delivers on resume"
