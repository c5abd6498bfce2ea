"""A mapped batch's map indexes hand each other what they paid for (paying.map_indexes).

The money suite runs the reordered mapped list end to end on every Airflow minor; these cases
pin the rules one at a time, on in-memory stores: every order in which the map indexes can run,
a claim that moves a map index off its own prediction, a list that shrank, an unreadable share,
and a deleted run's share."""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_magi.batch_inputs import BatchItem
from airflow_provider_magi.batch_ledger import BatchBook, read_book, write_book
from airflow_provider_magi.exceptions import MagiLedgerError
from airflow_provider_magi.ledger import Ledger, TaskIdentity
from airflow_provider_magi.ledger_prune import _written_at
from airflow_provider_magi.paying.map_indexes import publish, read_shares, share_name, take_across_map_indexes
from tests.test_paying_core import Store

LOG = logging.getLogger("test")
X, Y = "x" * 64, "y" * 64
STARTED = "2026-12-07T00:00:00.000Z"


class Run:
    """One mapped batch task in one DAG run: a store per map index, one shared by all of them."""

    def __init__(self, count: int, *, started: str = STARTED) -> None:
        self.count = count
        self.started = started
        self.own = [Store() for _ in range(count)]
        self.shared = Store()

    def ledger(self, map_index: int, *, clears: int = 0) -> Ledger:
        identity = TaskIdentity(
            "d", "t", "r", map_index=map_index, run_started=self.started, run_clears=clears
        )
        return Ledger(self.own[map_index], identity, by_inputs=self.shared)

    def context(self, map_index: int, try_number: int, *, count: int | None = None) -> Any:
        known = self.count if count is None else count

        def get_ti_count(**_: Any) -> int:
            if count == -1:
                raise RuntimeError("no such API")
            return known

        ti = SimpleNamespace(
            dag_id="d",
            task_id="t",
            run_id="r",
            map_index=map_index,
            try_number=try_number,
            get_ti_count=get_ti_count,
        )
        return {"ti": ti}

    def pay_try_one(self, inputs: list[str]) -> list[str]:
        """Try 1: each map index pays for its one input; returns the ids, by map index."""
        ids = []
        for index, fingerprint in enumerate(inputs):
            ledger = self.ledger(index)
            book = read_book(ledger)
            wave = book.start_wave({0: fingerprint}, now=datetime(2026, 12, 7, 1, index, tzinfo=UTC))
            book.settle_wave(wave, {0: f"p{index}"}, set(), {})
            write_book(ledger, book)
            publish(ledger, book)
            ids.append(f"p{index}")
        return ids

    def retry(self, map_index: int, fingerprint: str, **context: Any) -> str | None:
        """A later try of one map index, now handed ``fingerprint``: the id its item ends with."""
        ledger = self.ledger(map_index)
        book = read_book(ledger)
        item = BatchItem(0, {"prompt": fingerprint[:1]}, fingerprint)
        # as BatchPayer.match leaves it: an entry for other inputs moves past the last item
        if 0 in book.entries and book.entries[0].fingerprint != fingerprint[:32]:
            book.entries[1] = book.entries.pop(0)
        if take_across_map_indexes(ledger, book, [item], self.context(map_index, 2, **context), LOG):
            write_book(ledger, book)
            publish(ledger, book)
        entry = book.entry_for(0, fingerprint)
        return None if entry is None else entry.prediction_id


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_the_issue_s_list_reordered_takes_each_prediction_once_in_any_order(
    order: tuple[int, ...],
) -> None:
    run = Run(3)
    run.pay_try_one([X, X, Y])  # p0, p1: X; p2: Y
    now = [Y, X, X]
    got = {index: run.retry(index, now[index]) for index in order}
    assert got[0] == "p2"
    assert {got[1], got[2]} == {"p0", "p1"}  # each X map index has an X of its own


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_a_map_index_whose_own_prediction_was_taken_takes_another(order: tuple[int, ...]) -> None:
    """[Y, X, X] back as [X, X, Y]: map index 1 keeps its X, but map index 0, running first, may
    take it (the lowest map index's first); map index 1 then takes map index 2's X."""
    run = Run(3)
    run.pay_try_one([Y, X, X])  # p0: Y; p1, p2: X
    now = [X, X, Y]
    got = {index: run.retry(index, now[index]) for index in order}
    assert got[2] == "p0"
    assert {got[0], got[1]} == {"p1", "p2"}


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2)])
def test_duplicates_reordered_leave_nothing_to_pay(order: tuple[int, ...]) -> None:
    run = Run(4)
    run.pay_try_one([X, X, Y, Y])
    now = [Y, Y, X, X]
    got = {index: run.retry(index, now[index]) for index in order}
    assert sorted(got[i] for i in (0, 1)) == ["p2", "p3"]
    assert sorted(got[i] for i in (2, 3)) == ["p0", "p1"]


def test_an_input_no_map_index_paid_for_is_left_to_pay() -> None:
    run = Run(2)
    run.pay_try_one([X, X])
    assert run.retry(0, Y) is None  # a new input: paid, as it should be
    assert run.retry(1, X) == "p1"  # its own


def test_the_first_try_never_takes_another_map_index_s_prediction() -> None:
    run = Run(2)
    run.pay_try_one([X, Y])
    ledger = run.ledger(0)
    book = BatchBook()
    item = BatchItem(0, {"prompt": "y"}, Y)
    assert not take_across_map_indexes(ledger, book, [item], run.context(0, 1), LOG)
    assert book.entries == {}  # try 1 pays for every map index's inputs, duplicates included


@pytest.mark.parametrize("count", [None, -1, 1], ids=["count-known", "api-missing", "list-shrank"])
def test_shares_are_read_past_the_count_and_without_it(count: int | None) -> None:
    run = Run(3)
    run.pay_try_one([X, Y, Y])
    # map index 0 now holds Y; map index 2's share lies past a count of 1 (the list shrank)
    assert run.retry(0, Y, count=count) == "p1"
    assert run.retry(1, X, count=count) == "p0"


def test_an_unreadable_share_stops_the_batch_naming_it() -> None:
    run = Run(2)
    run.pay_try_one([X, Y])
    run.shared.data[share_name(1)] = "{not json"
    with pytest.raises(MagiLedgerError, match=r"memory:batch-1.*Fix: check the manifests"):
        run.retry(0, Y)


def test_a_deleted_run_s_share_is_not_taken() -> None:
    run = Run(2)
    run.pay_try_one([X, Y])
    again = Run(2, started="2026-12-07T05:00:00.000Z")  # the run made again with the same run id
    again.shared = run.shared
    assert again.retry(0, Y) is None
    assert [share.map_index for share in read_shares(run.ledger(0), 2)] == [1]


def test_a_share_and_the_book_are_dated_for_ledger_prune() -> None:
    run = Run(1)
    run.pay_try_one([X])
    key = "magi_ledger." + "0" * 40
    assert _written_at(key, run.shared.data[share_name(0)]) is not None
    (book,) = run.own[0].data.values()
    assert _written_at(key, book) is not None  # was: listed as unreadable and kept for ever
