"""Map indexes deciding with the states Airflow really shows, and at the same time
(paying/map_indexes.py, paying/item.py).

Each case came from an attacker's read as a way to deliver one paid prediction from two map
indexes (or to pay again) and failed before the rules it pins: a map index back from its trigger
is scheduled, not on paper; a take is shared (or claimed) strictly before anything is delivered;
a later writer gives up what an earlier one holds; a map index shares what it released before it
reads the others. Two map indexes deciding at once may both pay again, never both deliver."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_magi.api import Prediction
from airflow_provider_magi.batch_inputs import BatchItem
from airflow_provider_magi.exceptions import MagiLedgerError
from airflow_provider_magi.ledger import Ledger, TaskIdentity
from airflow_provider_magi.paying.batch import BatchPayer
from airflow_provider_magi.paying.item import ItemPayer
from airflow_provider_magi.paying.map_indexes import share_name
from tests.test_map_indexes import CountingStore, Run
from tests.test_paying_core import Store

LOG = logging.getLogger("test")
X, Y, Z = "x" * 64, "y" * 64, "z" * 64


class HookedStore(CountingStore):
    """The shared store, with something that happens just before (or instead of) one write."""

    def __init__(self) -> None:
        super().__init__()
        self.before: dict[str, Callable[[], None]] = {}
        self.failing: set[str] = set()

    def write(self, name: str, text: str) -> None:
        if name in self.failing:
            raise OSError("Variable write refused (API server restarting)")
        hook = self.before.pop(name, None)
        if hook is not None:
            hook()
        super().write(name, text)


def hooked_run(count: int) -> tuple[Run, HookedStore]:
    run = Run(count)
    run.shared = HookedStore()
    return run, run.shared


def resume(run: Run, map_index: int, inputs: list[str]) -> list[str | None]:
    """A deferrable batch back from its trigger in the same try (execute_complete with this
    try's event): match(first_entry=False), as operators/batch.py calls it."""
    run.states[map_index] = "running"
    items = [BatchItem(k, {"prompt": f[:1]}, f) for k, f in enumerate(inputs)]
    payer = BatchPayer(None, "m", LOG, run.ledger(map_index), items, run.context(map_index))
    payer.match(first_entry=False)
    return [
        None if (e := payer.book.entry_for(i.index, i.fingerprint)) is None else e.prediction_id
        for i in items
    ]


# ---------------------------------------------------------------- batch


def test_a_retry_scheduled_after_a_failure_holds_only_on_paper() -> None:
    """Map index 0 paid p0 without deferring and failed; it is scheduled for its retry (its share
    does not say it waits on a trigger), so map index 1, whose input is now X, takes p0, and map
    index 0's retry gives it up at its first entry."""
    run = Run(2)
    run.run(0, [X], pays=["p0"], then="scheduled")
    run.run(1, [Y], pays=["p1"], then="up_for_retry")
    assert run.run(1, [X]) == ["p0"]
    assert run.run(0, [X]) == [None]


def test_batch_a_map_index_scheduled_to_resume_after_its_trigger_keeps_what_it_holds() -> None:
    """[X, X]. Map index 1's try 1 ends before paying. Map index 0 pays p0 and defers; its
    trigger fires, so Airflow sets it to *scheduled* (models/trigger.py handle_event_submit) until
    a worker slot resumes it. Map index 1's retry runs in that window and must leave p0 alone:
    the share says map index 0 deferred with it (was, found by an attacker's read: taken as held
    only on paper, and delivered by both once map index 0 resumed without a first entry)."""
    run = Run(2)
    run.run(1, [X], then="up_for_retry")
    assert run.run(0, [X], pays=["p0"], then="scheduled", defers=True) == ["p0"]  # its event fired
    got1 = run.run(1, [X])
    got0 = resume(run, 0, [X])
    assert not (got0 == ["p0"] and got1 == ["p0"]), "p0 delivered by map indexes 0 and 1"


def test_batch_a_share_that_failed_to_publish_stops_the_taker_before_it_delivers() -> None:
    """[X, X]: map index 0 paid p0 and is up for retry; map index 1's retry takes p0, but its
    share cannot be written: it stops before delivering (was: a warning, and both delivered p0).
    Map index 0's retry keeps p0; map index 1's next retry gives it up and pays its own."""
    run, shared = hooked_run(2)
    run.run(1, [X], then="up_for_retry")
    run.run(0, [X], pays=["p0"], then="up_for_retry")
    shared.failing.add(share_name(1))
    with pytest.raises(MagiLedgerError, match="stops before delivering anything"):
        run.run(1, [X])
    run.states[1] = "up_for_retry"
    shared.failing.clear()
    assert run.run(0, [X]) == ["p0"]
    assert run.run(1, [X]) == [None]


def test_batch_parallel_retries_keep_and_take_one_prediction() -> None:
    """The plain retry of [X, X] when both map indexes retry at once (real Airflow, not
    dag.test): map index 1 reads map index 0 as queued and takes p0; before it shares that, map
    index 0 starts running, reads map index 1's try-1 share (nothing held) and keeps p0."""
    run, shared = hooked_run(2)
    run.run(1, [X], then="up_for_retry")
    run.run(0, [X], pays=["p0"], then="up_for_retry")
    run.states[0] = "queued"
    got: dict[int, list[str | None]] = {}
    shared.before[share_name(1)] = lambda: got.setdefault(0, run.run(0, [X]))
    got[1] = run.run(1, [X])
    assert not (got[0] == ["p0"] and got[1] == ["p0"]), "p0 delivered by map indexes 0 and 1"


def test_batch_the_issue_s_reorder_in_parallel_takes_at_least_once_and_never_twice() -> None:
    """[X, Y] paid, cleared as [Y, X], both map indexes running at once: map index 1 decides in
    full before map index 0's first share is written. Each shares what it released before it
    reads, so the later one finds the earlier one's release and takes it; the earlier one, which
    saw a running map index still holding what it wanted, pays again (was: both paid again)."""
    run, shared = hooked_run(2)
    run.run(0, [X], pays=["p0"])
    run.run(1, [Y], pays=["p1"])
    run.states = {0: "running", 1: "running"}  # the clear's tries start together
    got: dict[int, list[str | None]] = {}
    shared.before[share_name(0)] = lambda: got.setdefault(1, run.run(1, [X]))
    got[0] = run.run(0, [Y])
    assert got == {0: ["p1"], 1: [None]}


def test_a_running_map_index_that_has_not_shared_yet_keeps_what_it_held() -> None:
    """A known limit, pinned: map index 1 is running but has not shared its release yet, so map
    index 0 cannot tell it moved off p1 and pays for Y again; map index 1 then takes p0."""
    run = Run(2)
    run.run(0, [X], pays=["p0"])
    run.run(1, [Y], pays=["p1"])
    run.states[1] = "running"
    assert run.run(0, [Y]) == [None]
    assert run.run(1, [X]) == ["p0"]


def test_two_takers_of_one_released_prediction_never_both_keep_it() -> None:
    """[X, Y, Y]: map index 0 released p0 (X) and is done; map indexes 1 and 2, both now X,
    decide at once: 2 decides in full while 1 is between its take and its share. The later writer
    sees the earlier's share and gives p0 up."""
    run, shared = hooked_run(3)
    first_tries = [(0, X, "p0"), (1, Y, "p1"), (2, Y, "p2")]
    for index, fingerprint, pid in first_tries:
        run.run(index, [fingerprint], pays=[pid], then="up_for_retry")
    assert run.run(0, [Z]) == [None]  # releases p0
    run.states.update({1: "running", 2: "running"})
    got: dict[int, list[str | None]] = {}
    writes = {"n": 0}

    def second_write_of_1() -> None:  # 1's release, then its take: 2 decides in between
        writes["n"] += 1
        if writes["n"] == 2:
            got.setdefault(2, run.run(2, [X]))
        else:
            shared.before[share_name(1)] = second_write_of_1

    shared.before[share_name(1)] = second_write_of_1
    got[1] = run.run(1, [X])
    assert [got[1], got[2]].count(["p0"]) <= 1, got


# ---------------------------------------------------------------- single video


class Hook:
    def get_prediction(self, prediction_id: str) -> Prediction:
        return Prediction(prediction_id, "m", "processing")


class Task:
    """One map index of a mapped single-video task, as find_paid sees it."""

    def __init__(self, own: Store, shared: Store, states: dict[int, str], map_index: int) -> None:
        self.map_index = map_index
        identity = TaskIdentity("d", "t", "r", map_index=map_index, run_started="2026", run_clears=0)
        self.ledger = Ledger(own, identity, by_inputs=shared)
        self.states = states
        self.try_number = 0

    def context(self) -> Any:
        states = self.states

        def get_task_states(**_: Any) -> dict[str, dict[str, str]]:
            return {"r": {f"t_{k}": v for k, v in states.items()}}

        ti = SimpleNamespace(
            dag_id="d",
            task_id="t",
            run_id="r",
            map_index=self.map_index,
            try_number=self.try_number,
            get_task_states=get_task_states,
            xcom_push=lambda **_: None,
        )
        return {"ti": ti, "dag_run": SimpleNamespace(clear_number=0)}

    def find(self, fingerprint: str) -> str | None:
        self.try_number += 1
        self.states[self.map_index] = "running"
        payer = ItemPayer(Hook(), "m", LOG, attach_to_single_candidate=False, settle_wait=lambda _: None)
        return payer.find_paid(self.ledger, self.context(), fingerprint, None, regenerate=False).prediction_id

    def paid(self, fingerprint: str, prediction_id: str, *, waiting: bool = False) -> None:
        """What pay() leaves: the record, the record by inputs, the claim (``waiting``: a
        deferrable task's, which defers with it)."""
        record = self.ledger.write_intent(fingerprint, "m")
        record = self.ledger.write_paid(record, prediction_id)
        self.ledger.write_by_inputs(record)
        self.ledger.write_claim(prediction_id, waiting=waiting)


class FailingShared(Store):
    def __init__(self) -> None:
        super().__init__()
        self.refuse = ""

    def write(self, name: str, text: str) -> None:
        if self.refuse and name.startswith(self.refuse):
            raise OSError("Variable write refused")
        super().write(name, text)


def two_tasks() -> tuple[Task, Task, FailingShared, dict[int, str]]:
    shared = FailingShared()
    states: dict[int, str] = {0: "scheduled", 1: "scheduled"}
    return Task(Store(), shared, states, 0), Task(Store(), shared, states, 1), shared, states


def test_video_a_map_index_scheduled_to_resume_after_its_trigger_keeps_its_prediction() -> None:
    """Mapped MagiGenerateVideoOperator(deferrable=True) over [X, X]: map index 0 paid p0 and
    deferred; its trigger fired (scheduled). Map index 1's retry (try 1 ended before paying) must
    leave p0 alone: its claim says map index 0 waits on it (was: taken, and delivered by both)."""
    t0, t1, _, states = two_tasks()
    t1.find(X)
    states[1] = "up_for_retry"  # try 1 ended before paying
    assert t0.find(X) is None
    t0.paid(X, "p0", waiting=True)
    states[0] = "scheduled"  # deferred, then the trigger's event: execute_complete comes next
    got1 = t1.find(X)
    assert got1 != "p0", "map index 1 delivers p0, which map index 0 delivers on resume"


def test_video_a_claim_that_failed_to_write_stops_the_taker_before_it_delivers() -> None:
    """[X, X]: map index 0 paid p0, up for retry; map index 1's retry takes p0 but its claim
    cannot be written: it stops before delivering (was: a warning, and both delivered p0)."""
    t0, t1, shared, states = two_tasks()
    t1.find(X)
    states[1] = "up_for_retry"
    t0.find(X)
    t0.paid(X, "p0")
    states[0] = "up_for_retry"
    shared.refuse = "claim-"
    with pytest.raises(MagiLedgerError, match="stops before delivering it"):
        t1.find(X)
    shared.refuse = ""
    states[1] = "up_for_retry"
    assert t0.find(X) == "p0"


def test_video_a_mapped_first_try_asks_airflow_for_no_states() -> None:
    """Performance: a first try never takes across map indexes (_mapped_retry), yet find_paid
    asks get_task_states on every try: M map indexes' first tries fetch M states each (M^2 rows
    through the Execution API, per scene of a long video too) for nothing."""
    t0, _, _, _ = two_tasks()
    calls = []
    context = t0.context()
    inner = context["ti"].get_task_states
    context["ti"].try_number = 1
    context["ti"].get_task_states = lambda **kw: calls.append(kw) or inner(**kw)
    payer = ItemPayer(Hook(), "m", LOG, attach_to_single_candidate=False, settle_wait=lambda _: None)
    assert payer.find_paid(t0.ledger, context, X, None, regenerate=False).prediction_id is None
    assert calls == []


class DeleteHookedStore(Store):
    """The shared store, with something that happens just before one record is deleted."""

    def __init__(self) -> None:
        super().__init__()
        self.before_delete: dict[str, Callable[[], None]] = {}

    def delete(self, name: str) -> None:
        hook = self.before_delete.pop(name, None)
        if hook is not None:
            hook()
        super().delete(name)


def test_video_a_swap_decided_at_once_takes_at_least_once_and_never_twice() -> None:
    """Mapped single videos [X, Y] paid, cleared as [Y, X], both running at once: map index 1
    decides in full while map index 0 is releasing its claim. Each releases before it looks at the
    others, so map index 0, the later, takes map index 1's released p1; map index 1, which still
    saw p0 held by a running map index, pays again (was: both paid again, releasing after)."""
    shared = DeleteHookedStore()
    states: dict[int, str] = {0: "none", 1: "none"}
    t0, t1 = Task(Store(), shared, states, 0), Task(Store(), shared, states, 1)
    t0.try_number = t1.try_number = 1
    t0.paid(X, "p0")
    t1.paid(Y, "p1")
    states.update({0: "running", 1: "running"})
    got: dict[int, str | None] = {}
    shared.before_delete["claim-p0"] = lambda: got.setdefault(1, t1.find(X))
    got[0] = t0.find(Y)
    assert got == {0: "p1", 1: None}


def test_a_deferral_that_finished_holds_nothing_once_scheduled_again() -> None:
    """A deferrable batch's share said it waited on its trigger; it then finished (its share now
    says it waits on nothing), and a clear schedules it again: on its way to a first entry, not
    to a resume, so its prediction may be taken (in a full-stack run a stale flag paid again)."""
    run = Run(2)
    run.run(0, [X], pays=["p0"], defers=True)
    ledger = run.ledger(0)
    items = [BatchItem(0, {"prompt": "x"}, X)]
    BatchPayer(None, "m", LOG, ledger, items, run.context(0)).waiting(False)  # as _finish does
    run.run(1, [Y], pays=["p1"])
    run.states = {0: "scheduled", 1: "none"}
    assert run.run(1, [X]) == ["p0"]


def test_a_clear_s_swap_waits_for_a_holder_deciding_now_and_pays_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """[X, Y] paid, a clear brings [Y, X], both map indexes running at once. Map index 0 finds
    p1 (Y) held by map index 1, running with a share from before this round: it is deciding right
    now, so map index 0 waits for its release instead of paying (map index 1 decides during that
    wait: it releases p1 and takes p0). Nothing is paid again (was: one of the two paid again)."""
    import airflow_provider_magi.paying.map_indexes as map_indexes

    run = Run(2)
    run.run(0, [X], pays=["p0"])
    run.run(1, [Y], pays=["p1"])
    cleared = Run(2, started="2099-01-01T00:00:00.000Z")  # the clear restarted the run
    cleared.own, cleared.shared, cleared.tries, cleared.clears = run.own, run.shared, run.tries, 1
    cleared.states = {0: "running", 1: "running"}
    got: dict[int, list[str | None]] = {}
    monkeypatch.setattr(map_indexes.time, "sleep", lambda _: got.setdefault(1, cleared.run(1, [X])))
    got[0] = cleared.run(0, [Y])
    assert got == {0: ["p1"], 1: ["p0"]}


def test_video_a_clear_s_swap_waits_for_a_holder_deciding_now_and_pays_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mapped single videos [X, Y] paid, a clear brings [Y, X], both running at once: map index 0
    finds p1 claimed by map index 1, running with a claim from before this round, and waits for
    its release (map index 1 decides meanwhile, releasing p1 and taking p0). Nothing is paid again."""
    import airflow_provider_magi.paying.map_indexes as map_indexes

    shared, own0, own1 = Store(), Store(), Store()
    states: dict[int, str] = {0: "none", 1: "none"}
    t0, t1 = Task(own0, shared, states, 0), Task(own1, shared, states, 1)
    t0.paid(X, "p0")
    t1.paid(Y, "p1")
    cleared = {}
    for index, own in ((0, own0), (1, own1)):
        task = Task(own, shared, states, index)
        identity = TaskIdentity(
            "d", "t", "r", map_index=index, run_started="2099-01-01T00:00:00.000Z", run_clears=1
        )
        task.ledger = Ledger(own, identity, by_inputs=shared)
        task.try_number = 1
        cleared[index] = task
    states.update({0: "running", 1: "running"})
    got: dict[int, str | None] = {}
    monkeypatch.setattr(map_indexes.time, "sleep", lambda _: got.setdefault(1, cleared[1].find(X)))
    got[0] = cleared[0].find(Y)
    assert got == {0: "p1", 1: "p0"}
