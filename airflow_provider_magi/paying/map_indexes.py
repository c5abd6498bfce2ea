"""A mapped batch's paid items, found across its map indexes.

Each map index of a mapped batch keeps its book under its own identity. When the mapped list
comes back in another order (a clear re-runs the upstream task), a map index is handed inputs
another map index paid for. So every map index also *shares* its book where all of them read it
(``batch-<map index>`` in the store the map indexes share; each map index writes only its own, at
its first entry and with every book write). A share says which predictions its map index
**holds** (the entries of its current items) and which it **released** (entries for inputs it no
longer has, kept past its last item).

At the first entry of a retry or clear, a map index reads every other share and Airflow's states
of the other map indexes:

- A prediction another map index holds is that map index's when it is *settled*: running,
  deferred or succeeded in this try of its own (its share says what it holds now). A map index
  that has not run since (up for retry, queued, failed) holds it only on paper: when it runs, it
  finds that a settled map index took it and gives it up.
- So a map index keeps what its own book holds for its inputs, unless a settled map index holds
  it too; and for an input without a prediction it takes one paid for these inputs that no
  settled map index holds (a released one first). Only then is the input paid for.

Nothing but the shares is written (no record per prediction): a retry of 1,000 paid items writes
its share once. When Airflow's states cannot be read, every holder counts as settled: a reordered
list may then pay again, but no prediction is ever delivered twice.

Known limit: a map index reads the shares, then writes its own; two map indexes deciding in the
same instant (both running, neither shared yet) can both take one released prediction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_magi.batch_ledger import BatchBook, BatchEntry, short
from airflow_provider_magi.exceptions import MagiLedgerError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_magi.batch_inputs import BatchItem
    from airflow_provider_magi.ledger import Ledger

SHARE_VERSION = 2
# The states of a map index whose share says what it holds in its current try.
SETTLED_STATES = frozenset({"running", "deferred", "success", "up_for_reschedule"})


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

    def held(self) -> set[str]:
        return {
            e.prediction_id for slot, e in self.book.entries.items() if slot < self.items and e.prediction_id
        }


def publish(ledger: Ledger, book: BatchBook, items: int) -> None:
    """This map index's book where every map index reads it (best effort: the book in the task's
    own store is the truth; a missing share can only mean paying again after a reorder)."""
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
            "book": json.loads(book.to_json()),
        },
        separators=(",", ":"),
    )
    try:
        shared.write(share_name(identity.map_index), text)
    except Exception as error:
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
        return Share(
            map_index, book, items, raw.get("run_started"), clears if isinstance(clears, int) else None
        )
    except (TypeError, ValueError, KeyError, RecursionError, MagiLedgerError) as error:
        raise MagiLedgerError(
            f"Another map index's batch record at {where} cannot be read ({error}), so what the map "
            "indexes of this task already paid for is unknown and nothing is submitted. Fix: check "
            "the manifests and your WaveSpeed predictions, then delete that record."
        ) from None


def sibling_states(context: Context) -> dict[int, str | None] | None:
    """Airflow's state of every map index of this task in this run (None: the API did not say)."""
    ti = context["ti"]
    try:
        found = ti.get_task_states(dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id])
        by_key = dict(found.get(ti.run_id) or {})
    except Exception:
        return None
    prefix = f"{ti.task_id}_"
    states: dict[int, str | None] = {}
    for key, state in by_key.items():
        number = key[len(prefix) :] if key.startswith(prefix) else ""
        if number.isdigit():
            states[int(number)] = None if state is None else str(getattr(state, "value", state))
    return states


def takes_across(ledger: Ledger, context: Context) -> bool:
    """A mapped batch's retry or clear: a first try pays for every map index's inputs,
    duplicates included, as asked; a later one may be handed inputs another map index paid for."""
    return ledger.by_inputs is not None and getattr(context["ti"], "try_number", 1) > 1


def take_across_map_indexes(
    ledger: Ledger, book: BatchBook, items: list[BatchItem], context: Context, log: Any
) -> bool:
    """At a mapped retry's first entry: give up what a settled map index holds, and take for each
    input without a prediction one paid for these inputs that no settled map index holds.
    Returns whether the book changed (the caller saves and shares it)."""
    if not takes_across(ledger, context):
        return False
    states = sibling_states(context)
    shares = read_shares(ledger, None if states is None else states.keys())
    settled = {s.map_index for s in shares if states is None or states.get(s.map_index) in SETTLED_STATES}
    kept_by = {pid: s.map_index for s in shares if s.map_index in settled for pid in s.held()}
    changed = False
    wanted: list[BatchItem] = []
    for item in items:
        entry = book.entry_for(item.index, item.fingerprint)
        if entry is None:
            wanted.append(item)
        elif entry.prediction_id in kept_by:
            log.info(
                "Batch: input %d's prediction %s is held by map index %d now; not delivered twice.",
                item.index,
                entry.prediction_id,
                kept_by[entry.prediction_id],
            )
            book.entries[_spare_slot(book, items)] = book.entries.pop(item.index)
            wanted.append(item)
            changed = True
    mine = book.known_ids()
    for item in wanted:
        found = _takeable(shares, short(item.fingerprint), mine | set(kept_by))
        if found is None:
            continue
        share, entry = found
        assert entry.prediction_id is not None
        wave = book.add_wave(share.book.waves[entry.wave])
        book.entries[item.index] = BatchEntry(entry.fingerprint, wave, entry.prediction_id)
        mine.add(entry.prediction_id)
        changed = True
        log.info(
            "Batch: input %d takes prediction %s, paid for these inputs under map index %d of this "
            "task and run (the mapped list came back in another order); not paid again.",
            item.index,
            entry.prediction_id,
            share.map_index,
        )
    return changed


def _takeable(shares: list[Share], fingerprint: str, taken: set[str]) -> tuple[Share, BatchEntry] | None:
    """A paid entry for these inputs nobody settled holds: a released one first, then one held
    only on paper by a map index that has not run since (it gives it up when it does)."""
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
