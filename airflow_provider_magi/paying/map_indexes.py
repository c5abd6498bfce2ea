"""A mapped batch's paid items, found across its map indexes.

Each map index of a mapped batch keeps its book under its own identity. When the mapped list
comes back in another order (a retry or clear re-renders the upstream XCom), a map index is
handed inputs another map index paid for. So every map index also publishes its book where all
of them can read it (``batch-<map index>`` in the store shared by the map indexes, one write per
book write, each map index writing only its own: no two writers of one record), and on a retry or
clear a map index takes, for an input its own book has no prediction for, one that another map
index paid for these inputs and that no map index took in this round (the ledger's claims, as
the single video's duplicates use them). Only then is an input paid for.

Known limit (as for the single video's claims): a claim is read, then written, so two map
indexes deciding in the same instant can both take one prediction; the second is then a
duplicate delivery, not a second payment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_magi.batch_ledger import BatchBook, BatchEntry, short
from airflow_provider_magi.exceptions import MagiLedgerError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_magi.batch_inputs import BatchItem
    from airflow_provider_magi.ledger import Ledger

SHARE_VERSION = 1


def share_name(map_index: int) -> str:
    return f"batch-{map_index}"


@dataclass(frozen=True)
class Share:
    """Another map index's book, as it last wrote it, with its run's stamps (a deleted run of the
    same run id wrote a share its run's start tells apart)."""

    map_index: int
    book: BatchBook
    run_started: str | None
    run_clears: int | None


def publish(ledger: Ledger, book: BatchBook) -> None:
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
            "book": json.loads(book.to_json()),
        },
        separators=(",", ":"),
    )
    try:
        shared.write(share_name(identity.map_index), text)
    except Exception as error:
        from airflow_provider_magi.ledger import log

        log.warning("The batch's book was not shared with the other map indexes: %s", error)


def read_shares(ledger: Ledger, count: int | None) -> Iterator[Share]:
    """The other map indexes' shares, lowest map index first: every index below ``count`` (the
    task's map indexes in this run), then on while shares are found (a list that shrank leaves
    shares past its end). A share that cannot be read stops the batch: what was paid is unknown."""
    shared = ledger.by_inputs
    if shared is None:
        return
    index = 0
    while True:
        name = share_name(index)
        text = shared.read(name)
        if text is None and (count is None or index >= count):
            return
        if text is not None and index != ledger.identity.map_index:
            share = _parse(index, text, shared.where(name))
            if not ledger.from_a_deleted_run(share, shared, name):
                yield share
        index += 1


def _parse(map_index: int, text: str, where: str) -> Share:
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("v") != SHARE_VERSION:
            raise ValueError(f"expected a version {SHARE_VERSION} share")
        book = BatchBook.from_json(json.dumps(raw["book"]), where=where)
        clears = raw.get("run_clears")
        return Share(map_index, book, raw.get("run_started"), clears if isinstance(clears, int) else None)
    except (TypeError, ValueError, KeyError, RecursionError) as error:
        raise MagiLedgerError(
            f"Another map index's batch record at {where} cannot be read ({error}), so what the map "
            "indexes of this task already paid for is unknown and nothing is submitted. Fix: check "
            "the manifests and your WaveSpeed predictions, then delete that record."
        ) from None


def map_count(context: Context) -> int | None:
    """How many map indexes this task has in this run (None: the API did not say)."""
    ti = context["ti"]
    try:
        return int(ti.get_ti_count(dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id]))
    except Exception:  # then the shares are read up to the first map index without one
        return None


def is_mapped_retry(ledger: Ledger, context: Context) -> bool:
    """A retry or clear of a mapped task: its first try pays for every map index's inputs,
    duplicates included, as asked; a later one may be handed inputs another map index paid for."""
    return ledger.by_inputs is not None and getattr(context["ti"], "try_number", 1) > 1


def take_across_map_indexes(
    ledger: Ledger, book: BatchBook, items: list[BatchItem], context: Context, log: Any
) -> bool:
    """At a mapped retry's first entry: keep this map index's own paid items unless another map
    index took them this round, and take for each input without one a prediction another map
    index paid for these inputs. Returns whether the book changed (the caller saves it)."""
    if not is_mapped_retry(ledger, context):
        return False
    changed = False
    wanted: list[BatchItem] = []
    for item in items:
        entry = book.entry_for(item.index, item.fingerprint)
        if entry is None and item.index not in book.entries:
            wanted.append(item)
        elif entry is not None and entry.prediction_id is not None:
            if ledger.claimed_by_another(entry.prediction_id):
                log.info(
                    "Batch: input %d's prediction %s went to another map index this round.",
                    item.index,
                    entry.prediction_id,
                )
                book.entries[_spare_slot(book, items)] = book.entries.pop(item.index)
                wanted.append(item)
                changed = True
            else:
                ledger.write_claim(entry.prediction_id)
    if not wanted:
        return changed
    taken = book.known_ids()
    for share in read_shares(ledger, map_count(context)):
        for item in list(wanted):
            entry = _unclaimed(ledger, share.book, short(item.fingerprint), taken)
            if entry is None:
                continue
            assert entry.prediction_id is not None
            ledger.write_claim(entry.prediction_id)
            wave = book.add_wave(share.book.waves[entry.wave])
            book.entries[item.index] = BatchEntry(entry.fingerprint, wave, entry.prediction_id)
            taken.add(entry.prediction_id)
            wanted.remove(item)
            changed = True
            log.info(
                "Batch: input %d takes prediction %s, paid for these inputs under map index %d of "
                "this task and run (the mapped list came back in another order); not paid again.",
                item.index,
                entry.prediction_id,
                share.map_index,
            )
    return changed


def _unclaimed(ledger: Ledger, book: BatchBook, fingerprint: str, taken: set[str]) -> BatchEntry | None:
    """A paid entry of ``book`` for these inputs that no map index took this round."""
    for entry in book.entries.values():
        paid = entry.prediction_id
        if entry.fingerprint != fingerprint or paid is None or paid in taken:
            continue
        if not ledger.claimed_by_another(paid):
            return entry
    return None


def _spare_slot(book: BatchBook, items: list[BatchItem]) -> int:
    """Past the last item and every kept entry: an entry no item holds is kept, never dropped."""
    return max([len(items) - 1, *book.entries]) + 1
