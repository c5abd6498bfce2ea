"""A mapped batch's paid items, found across its map indexes.

Each map index of a mapped batch keeps its book under its own identity. When the mapped list
comes back in another order (a clear re-runs the upstream task), a map index is handed inputs
another map index paid for. So every map index also *shares* its book where all of them read it
(``batch-<map index>`` in the store the map indexes share; each map index writes only its own, at
its first entry and with every book write). A share says which predictions its map index
**holds** (the entries of its current items) and which it **released** (entries for inputs it no
longer has, kept past its last item).

At the first entry of a retry or clear a map index first shares what it released, then reads
every other share, and then Airflow's states of the other map indexes (read after the shares, so
a holder that shared since an earlier read is seen running):

- A prediction another map index holds stays that map index's unless that map index holds it
  only *on paper*: it is up for retry, cleared (no state), removed, skipped or upstream-failed,
  or scheduled or queued for a retry, so it passes a first entry before it could deliver
  anything, and there it finds that a map index took it and gives it up. Any other state keeps
  it: running, deferred, scheduled or queued to resume after a deferral (its share says it
  deferred: a resume has no first entry; the flag ends when the task finishes), up for
  reschedule, succeeded, failed.
- So a map index gives up what another map index holds for real, and takes for an input without
  a prediction one paid for these inputs that is released or held only on paper (a released one
  first). Only then is the input paid for.
- It then shares what it took (a share that cannot be written stops the task before anything is
  delivered) and reads the shares again: a prediction it holds that another map index's share,
  written since, holds too is given up. Of two map indexes deciding at once, the later writer
  always sees the earlier one, so both may give a prediction up (and pay again), never both keep it.
- A holder that is running under a share from before the run's start (a clear restarted the run)
  is deciding right now: its release is waited for, up to :data:`RELEASE_WAIT_SECONDS`. The share
  is stamped on WaveSpeed's clock and the run's start on Airflow's, so a skew can only cost a wait
  or a payment, never a second delivery.

A mapped single video or long video follows the same rules with a claim per prediction
(``claim-<id>``, :mod:`airflow_provider_magi.paying.item`).

Nothing but the shares is written (no record per prediction): a retry of 1,000 paid items writes
its share once or twice. When Airflow's states cannot be read, every holder counts for real: a
reordered list may then pay again, but no prediction is ever delivered twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_magi.batch_ledger import BatchBook, BatchEntry, short
from airflow_provider_magi.exceptions import MagiLedgerError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_magi.batch_inputs import BatchItem
    from airflow_provider_magi.ledger import Ledger

SHARE_VERSION = 2
# The states in which a map index holds its predictions only on paper: it passes a first entry
# (where it gives up what another map index took) before it could deliver anything. Airflow's
# state None (a cleared task instance) is listed as "none".
ON_PAPER_STATES = frozenset({"up_for_retry", "none", "removed", "skipped", "upstream_failed"})
# On the way to a worker: a retry (on paper) or a resume after a deferral (for real: it delivers
# without a first entry). The holder's share or claim says whether it is waiting on a trigger.
ON_THE_WAY_STATES = frozenset({"scheduled", "queued"})


# A running map index whose record predates this round of the run (the run's start: a clear
# restarts it) is deciding right now, at its first entry: what it releases is a moment away. A map
# index that wants what it holds waits this long for it at most, then pays (the safe side).
RELEASE_WAIT_SECONDS = 10.0
RELEASE_POLL_SECONDS = 0.5


def is_deciding(state: str, written_at: str | None, run_started: str | None) -> bool:
    """Whether a holder in ``state`` whose record was written at ``written_at`` is deciding now."""
    return state == "running" and None not in (written_at, run_started) and str(written_at) < str(run_started)


def wait_for_release(changed: Callable[[], bool]) -> bool:
    """Poll ``changed`` until it says the deciding holders wrote (True) or the wait is over."""
    deadline = time.monotonic() + RELEASE_WAIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(RELEASE_POLL_SECONDS)
        if changed():
            return True
    return False


class Holders:
    """Whether another map index holds a claim for real, by Airflow's state of it: called, with
    the states as they are at the call (read after the claim it judges); :meth:`now` judges many
    claims by one read. Unknown states: every claimant holds for real."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def now(self) -> Callable[[int, bool], bool]:
        states = sibling_states(self.context)
        return lambda index, waiting: states is None or holds_for_real(states.get(index, "none"), waiting)

    def __call__(self, map_index: int, waiting: bool) -> bool:
        return self.now()(map_index, waiting)


def holds_for_real(state: str, waiting: bool) -> bool:
    """Whether a map index in ``state`` holds what its share or claim lists (``waiting``: it
    deferred with it), or only on paper."""
    if state in ON_PAPER_STATES:
        return False
    if state in ON_THE_WAY_STATES:
        return waiting
    return True  # running, deferred, up for reschedule, succeeded, failed, restarting


def share_name(map_index: int) -> str:
    return f"batch-{map_index}"


@dataclass(frozen=True)
class Share:
    """Another map index's book as it last wrote it: its first ``items`` entries are held (its
    current inputs), the rest released. Stamped with its run (a deleted run of the same run id
    wrote a share its run's start tells apart)."""

    map_index: int
    book: BatchBook
    items: int
    run_started: str | None
    run_clears: int | None
    text: str  # as read: a share written since reads differently
    waiting: bool = False  # its map index deferred with what it holds
    at: str | None = None  # when it was written

    def held(self) -> set[str]:
        return {
            e.prediction_id for slot, e in self.book.entries.items() if slot < self.items and e.prediction_id
        }


def publish(
    ledger: Ledger, book: BatchBook, items: int, *, strict: bool = False, waiting: bool = False
) -> None:
    """This map index's book where every map index reads it. Best effort, unless ``strict``: once
    a map index took or gave up a prediction, a share that was not written could let another map
    index deliver it too, so the error stops the task before anything is delivered."""
    shared = ledger.by_inputs
    if shared is None:
        return
    identity = ledger.identity
    text = json.dumps(
        {
            "v": SHARE_VERSION,
            "at": ledger.now_text(),  # its write time, for ledger_prune
            "run_started": identity.run_started,
            "run_clears": identity.run_clears,
            "items": items,
            "waiting": waiting,
            "book": json.loads(book.to_json()),
        },
        separators=(",", ":"),
    )
    try:
        shared.write(share_name(identity.map_index), text)
    except Exception as error:
        if strict:
            raise MagiLedgerError(
                f"The batch took or gave up predictions of other map indexes, but sharing that at "
                f"{shared.where(share_name(identity.map_index))} failed: {type(error).__name__}: {error}. "
                "The task stops before delivering anything, so no prediction is delivered twice; a "
                "retry decides again."
            ) from error
        from airflow_provider_magi.ledger import log

        log.warning("The batch's book was not shared with the other map indexes: %s", error)


def read_shares(ledger: Ledger, map_indexes: Iterable[int] | None) -> list[Share]:
    """The other map indexes' shares, lowest map index first: those of ``map_indexes`` (every map
    index Airflow lists for this task and run, removed ones too), or, unknown, up to the first map
    index without one. A share that cannot be read stops the batch: what was paid is unknown."""
    shared = ledger.by_inputs
    if shared is None:
        return []
    shares = []
    for index in _indexes(map_indexes):
        name = share_name(index)
        text = shared.read(name)
        if text is None:
            if map_indexes is None:
                break
            continue
        if index == ledger.identity.map_index:
            continue
        share = _parse(index, text, shared.where(name))
        if not ledger.from_a_deleted_run(share, shared, name):
            shares.append(share)
    return shares


def _indexes(map_indexes: Iterable[int] | None) -> Iterable[int]:
    if map_indexes is not None:
        yield from sorted(map_indexes)
        return
    index = 0
    while True:
        yield index
        index += 1


def _parse(map_index: int, text: str, where: str) -> Share:
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("v") != SHARE_VERSION:
            raise ValueError(f"expected a version {SHARE_VERSION} share")
        book = BatchBook.from_json(json.dumps(raw["book"]), where=where)
        items, clears = raw["items"], raw.get("run_clears")
        if not isinstance(items, int) or isinstance(items, bool) or items < 0:
            raise ValueError("its item count is not a count")
        clears = clears if isinstance(clears, int) and not isinstance(clears, bool) else None
        at = raw.get("at") if isinstance(raw.get("at"), str) else None
        return Share(
            map_index, book, items, raw.get("run_started"), clears, text, raw.get("waiting") is True, at
        )
    except (TypeError, ValueError, KeyError, RecursionError, MagiLedgerError) as error:
        raise MagiLedgerError(
            f"Another map index's batch record at {where} cannot be read ({error}), so what the map "
            "indexes of this task already paid for is unknown and nothing is submitted. Fix: check "
            "the manifests and your WaveSpeed predictions, then delete that record."
        ) from None


def sibling_states(context: Context) -> dict[int, str] | None:
    """Airflow's state of every map index of this task in this run (None: the API did not say)."""
    ti = context["ti"]
    try:
        found = ti.get_task_states(dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id])
        by_key = dict(found.get(ti.run_id) or {})
    except Exception:
        return None
    prefix = f"{ti.task_id}_"
    states: dict[int, str] = {}
    for key, state in by_key.items():
        number = key[len(prefix) :] if key.startswith(prefix) else ""
        if number.isdigit():
            states[int(number)] = "none" if state is None else str(getattr(state, "value", state))
    return states


def takes_across(ledger: Ledger, context: Context) -> bool:
    """A mapped batch's retry or clear: a first try pays for every map index's inputs,
    duplicates included, as asked; a later one may be handed inputs another map index paid for."""
    return ledger.by_inputs is not None and getattr(context["ti"], "try_number", 1) > 1


def held_for_real(shares: list[Share], states: dict[int, str] | None) -> dict[str, int]:
    """The predictions other map indexes hold for real, and which map index holds each."""

    def real(share: Share) -> bool:
        return states is None or holds_for_real(states.get(share.map_index, "none"), share.waiting)

    return {pid: share.map_index for share in shares if real(share) for pid in share.held()}


def take_across_map_indexes(
    ledger: Ledger, book: BatchBook, items: list[BatchItem], context: Context, log: Any
) -> tuple[list[Share], list[int] | None] | None:
    """At a mapped retry's first entry (after this map index shared what it released): give up
    what another map index holds for real, and take for each input without a prediction one paid
    for these inputs that is released or held only on paper; when a holder of what it wants is
    deciding right now, wait a moment for its release and look again. Returns the shares as read
    (None: not a mapped retry) and the map indexes read; the caller shares the book strictly,
    then calls :func:`give_up_conflicts`."""
    if not takes_across(ledger, context):
        return None
    listed = sibling_states(context)
    indexes = None if listed is None else sorted(listed)
    shares = read_shares(ledger, indexes)
    # Judged by states read after the shares: a holder that shared since the first read is seen
    # running, never by a snapshot from before its share.
    states = sibling_states(context)
    wanted = _decide(ledger, book, items, shares, states, log)
    started = ledger.identity.run_started
    fingerprints = {short(item.fingerprint) for item in wanted}
    deciding = [
        share
        for share in shares
        if states is not None
        and is_deciding(states.get(share.map_index, "none"), share.at, started)
        and any(e.fingerprint in fingerprints for s, e in share.book.entries.items() if s < share.items)
    ]
    if deciding:
        log.info(
            "Batch: map index(es) %s hold what inputs %s need and are deciding now; waiting up to %.0fs "
            "for what they release.",
            [share.map_index for share in deciding],
            [item.index for item in wanted],
            RELEASE_WAIT_SECONDS,
        )
        if wait_for_release(lambda: _any_rewritten(ledger, deciding)):
            shares = read_shares(ledger, indexes)
            _decide(ledger, book, items, shares, sibling_states(context), log)
    return shares, indexes


def _any_rewritten(ledger: Ledger, shares: list[Share]) -> bool:
    shared = ledger.by_inputs
    return shared is not None and any(shared.read(share_name(s.map_index)) != s.text for s in shares)


def _decide(
    ledger: Ledger,
    book: BatchBook,
    items: list[BatchItem],
    shares: list[Share],
    states: dict[int, str] | None,
    log: Any,
) -> list[BatchItem]:
    """Give up what another map index holds for real; take what is free. Returns the inputs
    still without a prediction."""
    kept_by = held_for_real(shares, states)
    wanted: list[BatchItem] = []
    for item in items:
        entry = book.entry_for(item.index, item.fingerprint)
        if entry is None:
            wanted.append(item)
        elif entry.prediction_id in kept_by:
            _give_up(book, items, item, f"is held by map index {kept_by[entry.prediction_id]}", log)
            wanted.append(item)
    mine = book.known_ids()
    unpaid = []
    for item in wanted:
        found = _takeable(shares, short(item.fingerprint), mine | set(kept_by))
        if found is None:
            unpaid.append(item)
            continue
        share, entry = found
        assert entry.prediction_id is not None
        wave = book.add_wave(share.book.waves[entry.wave])
        book.entries[item.index] = BatchEntry(entry.fingerprint, wave, entry.prediction_id)
        mine.add(entry.prediction_id)
        log.info(
            "Batch: input %d takes prediction %s, paid for these inputs under map index %d of this "
            "task and run (the mapped list came back in another order); not paid again.",
            item.index,
            entry.prediction_id,
            share.map_index,
        )
    return unpaid


def give_up_conflicts(
    ledger: Ledger,
    book: BatchBook,
    items: list[BatchItem],
    read: tuple[list[Share], list[int] | None],
    log: Any,
) -> bool:
    """After sharing: a prediction this map index holds that a share written since holds too is
    given up (the later writer always sees the earlier). Returns whether the book changed."""
    shares, indexes = read
    before = {share.map_index: share.text for share in shares}
    since = [s for s in read_shares(ledger, indexes) if s.text != before.get(s.map_index)]
    theirs = {pid: share.map_index for share in since for pid in share.held()}
    changed = False
    for item in items:
        entry = book.entry_for(item.index, item.fingerprint)
        if entry is not None and entry.prediction_id in theirs:
            _give_up(
                book, items, item, f"was taken by map index {theirs[entry.prediction_id]} meanwhile", log
            )
            changed = True
    return changed


def _give_up(book: BatchBook, items: list[BatchItem], item: BatchItem, why: str, log: Any) -> None:
    """The item's prediction goes to another map index: kept past the last item (released)."""
    entry = book.entries.pop(item.index)
    book.entries[_spare_slot(book, items)] = entry
    log.info("Batch: input %d's prediction %s %s; not delivered twice.", item.index, entry.prediction_id, why)


def _takeable(shares: list[Share], fingerprint: str, taken: set[str]) -> tuple[Share, BatchEntry] | None:
    """A paid entry for these inputs that no map index holds for real: a released one first, then
    one held only on paper (its map index gives it up at its next first entry)."""
    found: list[tuple[int, int, Share, BatchEntry]] = []
    for share in shares:
        for slot, entry in share.book.entries.items():
            if entry.fingerprint == fingerprint and entry.prediction_id and entry.prediction_id not in taken:
                found.append((0 if slot >= share.items else 1, share.map_index, share, entry))
    if not found:
        return None
    _, _, share, entry = min(found, key=lambda one: one[:2])
    return share, entry


def _spare_slot(book: BatchBook, items: list[BatchItem]) -> int:
    """Past the last item and every kept entry: an entry no item holds is kept, never dropped."""
    return max([len(items) - 1, *book.entries]) + 1
