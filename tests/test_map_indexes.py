"""A mapped batch's map indexes hand each other what they paid for (paying.map_indexes).

The money suite runs reordered mapped lists end to end on every Airflow minor; these cases pin
the rules one at a time on in-memory stores, with Airflow's states of the map indexes as a run
would show them: every order the map indexes can run in, a prediction a map index holds for real,
a list flipped back within one round, a list that grew or shrank, an id learned from the
manifest, an unreadable share, a deleted run's share, and the writes a retry costs."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_magi.batch_inputs import BatchItem
from airflow_provider_magi.batch_ledger import BatchBook, read_book
from airflow_provider_magi.exceptions import MagiLedgerError
from airflow_provider_magi.ledger import Ledger, TaskIdentity
from airflow_provider_magi.ledger_prune import _written_at
from airflow_provider_magi.manifest import RUNNING, ManifestLine
from airflow_provider_magi.paying.batch import BatchPayer
from airflow_provider_magi.paying.map_indexes import read_shares, share_name
from tests.test_paying_core import Store

LOG = logging.getLogger("test")
X, Y, Z = "x" * 64, "y" * 64, "z" * 64
STARTED = "2026-12-07T00:00:00.000Z"


class CountingStore(Store):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, name: str, text: str) -> None:
        self.writes += 1
        super().write(name, text)


class Run:
    """One mapped batch task in one DAG run: a store per map index, one shared by all of them,
    and each map index's state as Airflow's task states show it."""

    def __init__(self, count: int, *, started: str = STARTED) -> None:
        self.started = started
        self.own = [Store() for _ in range(count)]
        self.shared = CountingStore()
        self.states: dict[int, str] = {index: "scheduled" for index in range(count)}
        self.tries = dict.fromkeys(range(count), 0)
        self.states_known = True
        self.clears = 0  # the run's clear_number

    def ledger(self, map_index: int) -> Ledger:
        identity = TaskIdentity(
            "d", "t", "r", map_index=map_index, run_started=self.started, run_clears=self.clears
        )
        return Ledger(self.own[map_index], identity, by_inputs=self.shared)

    def context(self, map_index: int) -> Any:
        def get_task_states(**_: Any) -> dict[str, dict[str, str]]:
            if not self.states_known:
                raise RuntimeError("no such API")
            return {"r": {f"t_{index}": state for index, state in self.states.items()}}

        ti = SimpleNamespace(
            dag_id="d",
            task_id="t",
            run_id="r",
            map_index=map_index,
            try_number=self.tries[map_index],
            get_task_states=get_task_states,
        )
        return {"ti": ti}

    def run(
        self,
        map_index: int,
        inputs: list[str],
        *,
        pays: Sequence[str] = (),
        then: str = "success",
        defers: bool = False,
    ) -> list[str | None]:
        """One try of one map index, as the operator runs it: match (and, from try 2, what other
        map indexes paid), then pay for the items still without a prediction with ``pays``'s ids.
        Returns each item's prediction."""
        self.tries[map_index] += 1
        self.states[map_index] = "running"
        ledger = self.ledger(map_index)
        items = [BatchItem(k, {"prompt": f[:1]}, f) for k, f in enumerate(inputs)]
        payer = BatchPayer(None, "m", LOG, ledger, items, self.context(map_index))
        payer.match(first_entry=True)
        unpaid = [item.index for item in items if payer.book.entry_for(item.index, item.fingerprint) is None]
        if unpaid and pays:
            wave = payer.book.start_wave(
                {k: inputs[k] for k in unpaid}, now=datetime(2026, 12, 7, 1, map_index, tzinfo=UTC)
            )
            payer.book.settle_wave(wave, dict(zip(unpaid, pays, strict=False)), set(), {})
            payer.save()
        if defers:
            payer.waiting(True)
        self.states[map_index] = then
        return [
            None if (e := payer.book.entry_for(item.index, item.fingerprint)) is None else e.prediction_id
            for item in items
        ]


def first_tries(run: Run, inputs: list[str]) -> None:
    """Try 1 of every map index pays p<index> for its one input, then ends failed (up for retry)."""
    for index, fingerprint in enumerate(inputs):
        assert run.run(index, [fingerprint], pays=[f"p{index}"], then="up_for_retry") == [f"p{index}"]


def retries(run: Run, now: list[str], order: tuple[int, ...]) -> dict[int, str | None]:
    """Try 2 of each map index in ``order``, handed ``now``; what each delivers (None: it pays)."""
    return {index: run.run(index, [now[index]])[0] for index in order}


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_the_issue_s_list_reordered_takes_each_prediction_once_in_any_order(order: tuple[int, ...]) -> None:
    run = Run(3)
    first_tries(run, [X, X, Y])  # p0, p1: X; p2: Y
    got = retries(run, [Y, X, X], order)
    assert got[0] == "p2"
    assert {got[1], got[2]} == {"p0", "p1"}  # each X map index has an X of its own


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_a_map_index_whose_own_prediction_was_taken_takes_another(order: tuple[int, ...]) -> None:
    """[Y, X, X] back as [X, X, Y]: map index 1 keeps its X, unless map index 0, running first,
    took it (released ones go first, but map index 0 may find none yet); then map index 1 takes
    map index 2's X."""
    run = Run(3)
    first_tries(run, [Y, X, X])  # p0: Y; p1, p2: X
    got = retries(run, [X, X, Y], order)
    assert got[2] == "p0"
    assert {got[0], got[1]} == {"p1", "p2"}


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_duplicates_reordered_leave_nothing_to_pay(order: tuple[int, ...]) -> None:
    run = Run(4)
    first_tries(run, [X, X, Y, Y])
    got = retries(run, [Y, Y, X, X], order)
    assert sorted(str(got[i]) for i in (0, 1)) == ["p2", "p3"]
    assert sorted(str(got[i]) for i in (2, 3)) == ["p0", "p1"]


def test_an_input_no_map_index_paid_for_is_left_to_pay() -> None:
    run = Run(2)
    first_tries(run, [X, X])
    assert retries(run, [Y, X], (0, 1)) == {0: None, 1: "p1"}  # Y is new: paid, as it should be


def test_the_first_try_never_takes_another_map_index_s_prediction() -> None:
    """Try 1 pays for every map index's inputs, duplicates included, as listed."""
    run = Run(2)
    run.run(1, [X], pays=["p1"], then="up_for_retry")
    assert run.run(0, [X]) == [None]


def test_a_plain_retry_never_takes_what_another_map_index_delivered() -> None:
    """[[X], [X]], never reordered: map index 0's try 1 ends before paying (its budget was spent,
    a worker was lost), map index 1's try 1 pays p1 and succeeds. Map index 0's retry pays for an
    X of its own (found by an attacker's read: it took p1, delivered twice)."""
    run = Run(2)
    run.run(0, [X], then="up_for_retry")
    run.run(1, [X], pays=["p1"])
    assert run.run(0, [X]) == [None]


def test_a_new_input_listed_twice_is_paid_once_per_map_index() -> None:
    """[X, Y] back as [Z, Z]: the first to run pays for Z and holds it for real (running, then
    succeeded); the second pays for a Z of its own."""
    run = Run(2)
    first_tries(run, [X, Y])
    assert run.run(0, [Z], pays=["pz0"]) == ["pz0"]
    assert run.run(1, [Z]) == [None]


def test_a_list_flipped_back_in_the_same_round_pays_nothing_again() -> None:
    """[X, Y], then [Y, X] (each takes the other's), then [X, Y] again in the same round (a clear
    that keeps clear_number, or an upstream XCom re-rendered between retries): each map index
    gets its own back; nothing is paid again (an attacker's read: 4 paid for 2)."""
    run = Run(2)
    first_tries(run, [X, Y])
    assert retries(run, [Y, X], (0, 1)) == {0: "p1", 1: "p0"}
    run.states = dict.fromkeys(run.states, "up_for_retry")
    assert retries(run, [X, Y], (0, 1)) == {0: "p0", 1: "p1"}


def test_a_list_that_grows_never_hands_a_new_map_index_s_prediction_to_another() -> None:
    """[Y, X] paid; a clear re-renders it as [X, X, X]: map index 2 is new (its try 1 pays pX2 and
    succeeds). Map index 0 takes p1; map index 1 pays for an X of its own, never pX2."""
    run = Run(3)
    run.states.pop(2)
    first_tries(run, [Y, X])
    run.states[2] = "scheduled"
    assert run.run(2, [X], pays=["pX2"]) == ["pX2"]
    assert run.run(0, [X]) == ["p1"]
    assert run.run(1, [X]) == [None]


@pytest.mark.parametrize("known", [True, False], ids=["states-known", "states-unknown"])
def test_a_list_that_shrank_reads_every_share_airflow_lists(known: bool) -> None:
    """Try 1 over 4 map indexes, map index 2 paid nothing (its share is its first entry's, empty),
    map index 3 paid p3 for X. The list comes back as [X, A]: map index 0 takes p3 from the share
    past the gap (an attacker's read: read_shares stopped at the gap and paid X again)."""
    run = Run(4)
    first_tries(run, [Y, Y])
    run.run(2, [Z], then="up_for_retry")  # refused, nothing paid: its share is there, empty
    run.run(3, [X], pays=["p3"], then="up_for_retry")
    run.states[3] = "removed"  # the list shrank to two
    run.states_known = known
    assert run.run(0, [X]) == (["p3"] if known else [None])  # unknown states: every holder holds for real


def test_an_id_learned_from_the_manifest_is_held_before_another_map_index_reads_it() -> None:
    """Map index 0's try 1 paid p0 for X, but the book's second write failed (an intent without
    an id); the manifest names p0. Its retry learns p0 from the manifest and runs on with it;
    map index 1's retry, handed X, pays for its own (an attacker's read: it took p0)."""
    p0 = "0" * 31 + "a"
    run = Run(2)
    ledger = run.ledger(0)
    book = read_book(ledger)
    book.start_wave({0: X}, now=datetime(2026, 12, 7, 1, 0, tzinfo=UTC))  # its ids never written
    run.tries[0], run.states[0] = 1, "up_for_retry"
    payer = BatchPayer(None, "m", LOG, ledger, [BatchItem(0, {"prompt": "x"}, X)], run.context(0))
    payer.book = book
    payer.save()
    run.run(1, [Y], pays=["p1"], then="up_for_retry")
    run.tries[0], run.states[0] = 2, "running"
    payer = BatchPayer(None, "m", LOG, ledger, [BatchItem(0, {"prompt": "x"}, X)], run.context(0))
    payer.match(first_entry=True)
    lines = payer.reconcile({0: ManifestLine(0, RUNNING, prediction_id=p0)}, fresh=True, whole=lambda _: True)
    assert lines[0].prediction_id == p0
    assert run.run(1, [X]) == [None]


def test_a_retry_of_many_paid_items_writes_its_share_once() -> None:
    """No record per prediction: a mapped retry of 1,000 paid items, list unchanged, writes the
    book and its share once each (an attacker's read: 1,000 claim writes)."""
    run = Run(1)
    inputs = [f"{k:064d}" for k in range(1000)]
    run.run(0, inputs, pays=[f"p{k}" for k in range(1000)], then="up_for_retry")
    run.shared.writes = 0
    assert run.run(0, inputs) == [f"p{k}" for k in range(1000)]
    assert run.shared.writes == 1


def test_an_unreadable_share_stops_the_batch_naming_it() -> None:
    run = Run(2)
    first_tries(run, [X, Y])
    run.shared.data[share_name(1)] = "{not json"
    with pytest.raises(MagiLedgerError, match=r"memory:batch-1.*Fix: check the manifests"):
        run.run(0, [Y])


def test_a_deleted_run_s_share_is_not_taken() -> None:
    run = Run(2)
    first_tries(run, [X, Y])
    again = Run(2, started="2026-12-07T05:00:00.000Z")  # the run made again with the same run id
    again.shared = run.shared
    again.tries = {0: 1, 1: 1}
    assert again.run(0, [Y]) == [None]
    assert [share.map_index for share in read_shares(run.ledger(0), [0, 1])] == [1]


def test_a_non_mapped_batch_shares_nothing() -> None:
    own = Store()
    ledger = Ledger(own, TaskIdentity("d", "t", "r"))
    ti = SimpleNamespace(try_number=2)
    payer = BatchPayer(None, "m", LOG, ledger, [BatchItem(0, {"prompt": "x"}, X)], {"ti": ti})  # type: ignore[arg-type]
    payer.match(first_entry=True)
    assert own.data == {}  # nothing to match, nothing written


def test_a_share_and_the_book_are_dated_for_ledger_prune() -> None:
    run = Run(1)
    run.run(0, [X], pays=["p0"])
    key = "magi_ledger." + "0" * 40
    assert _written_at(key, run.shared.data[share_name(0)]) is not None
    (book,) = run.own[0].data.values()
    assert _written_at(key, book) is not None  # was: listed as unreadable and kept for ever
    assert BatchBook.from_json(book, where="memory").entries
