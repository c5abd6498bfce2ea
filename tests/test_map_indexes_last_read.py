"""Map indexes after a fourth attacker's read: a keep that needs no write writes nothing, and a
retry reads Airflow's states once for every candidate claim (both failed before their fix).

Four cases stay strict xfails, the limits this design has today (docs/reliability.md says so):
- a single video's claim is one record per prediction, so two map indexes deciding in the same
  instant (one keeping, one taking; or two taking) can both deliver one prediction: the batch's
  one-record-per-map-index shares do not have this, and the single video should move to them;
- a deferrable task that fails after it deferred keeps its "waiting" flag until its next first
  entry, so a clear's reorder in that window pays for its inputs again (a payment, never a
  second delivery)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_magi.exceptions import MagiLedgerError
from airflow_provider_magi.ledger import Ledger, TaskIdentity
from tests.test_map_indexes import Run
from tests.test_map_indexes_races import HookedStore, Task, two_tasks
from tests.test_paying_core import Store

LOG = logging.getLogger("test")
X, Y = "x" * 64, "y" * 64


class HookedTask(Task):
    """A map index whose next read of Airflow's states runs ``after_states`` once it returned."""

    after_states: Callable[[], Any] | None = None
    state_reads = 0

    def context(self) -> Any:
        context = super().context()
        inner = context["ti"].get_task_states

        def get_task_states(**kw: Any) -> Any:
            found = inner(**kw)  # the snapshot
            self.state_reads += 1
            hook, self.after_states = self.after_states, None
            if hook is not None:
                hook()
            return found

        context["ti"].get_task_states = get_task_states
        return context


def cleared(own: Store, shared: Store, states: dict[int, str], index: int, cls: type = Task) -> Task:
    task = cls(own, shared, states, index)
    identity = TaskIdentity("d", "t", "r", map_index=index, run_started="2026", run_clears=1)
    task.ledger = Ledger(own, identity, by_inputs=shared)
    task.try_number = 1
    return task


@pytest.mark.xfail(
    strict=True,
    reason="a single video's claim is one record: two map indexes deciding in one instant can both deliver",
)
def test_video_a_holder_that_keeps_between_the_taker_s_state_read_and_its_claim_is_not_taken() -> None:
    """[X, Y] paid, a clear brings [X, X]. Map index 1 (now X) reads p0's claim (map index 0),
    then Airflow's states, *after* the claim as 9920f4e asks: 0 is queued. Map index 0 then
    starts, finds p0 claimed by itself, rewrites its claim (no re-read after) and delivers p0.
    Map index 1 judges 0 by that snapshot (queued, not waiting), claims p0, re-reads its own
    claim and delivers p0 too. Reading states after the claim narrowed the window; the keep path
    has no check after its write, so it is still open."""
    shared = Store()
    states: dict[int, str] = {0: "none", 1: "none"}
    own0, own1 = Store(), Store()
    Task(own0, shared, states, 0).paid(X, "p0")
    Task(own1, shared, states, 1).paid(Y, "p1")
    holder = cleared(own0, shared, states, 0)
    taker = cleared(own1, shared, states, 1, HookedTask)
    states.update({0: "queued", 1: "running"})
    got: dict[int, str | None] = {}
    taker.after_states = lambda: got.setdefault(0, holder.find(X))
    got[1] = taker.find(X)
    assert not (got[0] == "p0" and got[1] == "p0"), f"p0 delivered by map indexes 0 and 1: {got}"


@pytest.mark.xfail(
    strict=True,
    reason="a failed deferral keeps its waiting flag until its next first entry: it pays again",
)
def test_video_a_deferral_that_failed_holds_nothing_once_scheduled_after_a_clear() -> None:
    """Regression of 9920f4e: mapped deferrable videos [X, Y]; map index 0 paid p0, deferred,
    and failed in execute_complete (timeout; p0 still completes and is billed), so its claim
    keeps waiting=true (only _mark_delivered ends it). A clear brings [Y, X]. Map index 1 (now
    X) runs while map index 0 is scheduled for its first entry: the stale flag counts it as a
    resume, so map index 1 pays for X again and p0 is wasted (before 9920f4e the clear ended the
    flag and p0 was taken)."""
    shared = Store()
    states: dict[int, str] = {0: "none", 1: "none"}
    own0, own1 = Store(), Store()
    Task(own0, shared, states, 0).paid(X, "p0", waiting=True)  # deferred, then failed
    t1 = Task(own1, shared, states, 1)
    t1.paid(Y, "p1", waiting=True)
    t1.ledger.write_claim("p1")  # succeeded: _mark_delivered ended its flag
    taker = cleared(own1, shared, states, 1)
    states.update({0: "scheduled", 1: "running"})  # after the clear: on its way to a first entry
    assert taker.find(X) == "p0", "X paid for again: a failed deferral's claim still says it waits"


@pytest.mark.xfail(
    strict=True,
    reason="a failed deferral keeps its waiting flag until its next first entry: it pays again",
)
def test_batch_a_deferral_that_failed_holds_nothing_once_scheduled_after_a_clear() -> None:
    """The batch form: map index 0 pays p0, defers (share waiting=true) and fails on resume
    (a fatal trigger event, a killed worker): _finish never runs, the flag stays. After a clear
    that brings [Y, X], map index 1 pays for X again while map index 0 is scheduled."""
    run = Run(2)
    run.run(0, [X], pays=["p0"], defers=True, then="failed")
    run.run(1, [Y], pays=["p1"])
    run.clears = 1
    run.states = {0: "scheduled", 1: "none"}
    assert run.run(1, [X]) == ["p0"], "X paid for again: a failed deferral's share still says it waits"


def test_video_keeping_an_own_claim_that_cannot_be_rewritten_does_not_fail_the_task() -> None:
    """[X, Y] mapped, no duplicates. Map index 0 paid p0 (claimed by map index 0) and is up for
    retry; the shared Variables refuse writes for a while. The retry's keep path rewrites a claim
    that already names it, strictly: MagiLedgerError ("was taken from another map index"), the
    retry fails though nothing could take p0 from it (9920f4e: it was best effort)."""
    t0, _, shared, states = two_tasks()
    t0.find(X)
    t0.paid(X, "p0")
    states[0] = "up_for_retry"
    shared.refuse = "claim-"
    try:
        got = t0.find(X)
    except MagiLedgerError as error:
        pytest.fail(f"the retry fails while keeping its own, already claimed p0: {error}")
    assert got == "p0"


def test_video_a_retry_reads_airflow_s_states_once_not_per_candidate() -> None:
    """Cost: a retry of map index 4 of [X]*5, whose try 1 ended before paying, looks at the four
    predictions of X the running map indexes hold: 9920f4e reads every map index's state once
    per claim (M rows each, per candidate: M^2 rows through the Execution API per retry)."""
    shared = Store()
    states: dict[int, str] = {}
    for index in range(4):
        Task(Store(), shared, states, index).paid(X, f"p{index}")
        states[index] = "running"
    t4 = HookedTask(Store(), shared, states, 4)
    t4.try_number = 1
    states[4] = "up_for_retry"
    assert t4.find(X) is None
    assert t4.state_reads <= 2, f"{t4.state_reads} reads of every map index's state for one retry"


@pytest.mark.xfail(
    strict=True,
    reason="a single video's claim is one record: two map indexes deciding in one instant can both deliver",
)
def test_video_two_takers_of_one_released_prediction_never_both_keep_it() -> None:
    """Pre-existing (not 9920f4e's): one claim record, last writer wins. Map index 0 released p0;
    map indexes 1 and 2, both now X, take it at once: 2 decides in full just before 1's claim
    write. Each writes, re-reads its own claim and delivers p0."""
    shared = HookedStore()
    states: dict[int, str] = {0: "none", 1: "none", 2: "none"}
    t = [Task(Store(), shared, states, index) for index in range(3)]
    t[0].paid(X, "p0")
    t[0].ledger.release_claim("p0")  # map index 0 moved off X
    for task in t[1:]:
        task.try_number = 1
    states.update({0: "success", 1: "running", 2: "running"})
    got: dict[int, str | None] = {}
    shared.before["claim-p0"] = lambda: got.setdefault(2, t[2].find(X))
    got[1] = t[1].find(X)
    assert not (got[1] == "p0" and got[2] == "p0"), f"p0 delivered by map indexes 1 and 2: {got}"
