"""Paying for a batch's items: N items on one ledger record (``batch_ledger``), paid in waves.

The same steps as one item (:mod:`~airflow_provider_magi.paying.item`), for many at once: what an
earlier try paid is found by each item's inputs wherever the item is now in the list; what it
made is read from the manifest; an intent whose answer was lost is looked up in WaveSpeed's
history; the spend view says how many of the next wave fit; and each wave goes through the one
submit loop (:func:`~airflow_provider_magi.paying.send.send_wave`), journaled in the book twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_magi.batch_report import compact, indexes
from airflow_provider_magi.paying.send import BAD_INPUT, PAID, REFUSED, UNCERTAIN, Wave, send_wave

# Predictions created this long before a wave started still count as its (clocks differ).
CLOCK_MARGIN = timedelta(seconds=60)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_magi.api import Prediction
    from airflow_provider_magi.batch_inputs import BatchItem
    from airflow_provider_magi.batch_ledger import BatchBook, BatchEntry
    from airflow_provider_magi.ledger import Ledger
    from airflow_provider_magi.manifest import ManifestLine


class BookJournal:
    """A wave on the batch's book: the intents in one write before the POSTs, the ids in one after
    (items provably not started go back to what they were, so a retry submits them)."""

    def __init__(
        self,
        payer: BatchPayer,
        fingerprints: dict[int, str],
        *,
        mark: Callable[[Wave], None],
        write_manifest: Callable[[], None],
    ) -> None:
        self.payer = payer
        self.fingerprints = fingerprints
        self.mark = mark  # the manifest lines say what each submit came to, before the book does
        self.write_manifest = write_manifest
        self.before: dict[int, BatchEntry] = {}
        self.wave = 0

    def intend(self, keys: Sequence[Any]) -> None:
        book = self.payer.book
        self.before = {k: book.entries[k] for k in keys if k in book.entries}
        self.wave = book.start_wave({k: self.fingerprints[k] for k in keys})
        self.payer.save()  # a failure here sends nothing

    def resent(self, key: Any) -> None:
        """The book keeps the wave's start; its look-up window reaches past any resend."""

    def settle(self, wave: Wave) -> None:
        from airflow_provider_magi.exceptions import MagiLedgerError

        self.mark(wave)
        paid = wave.paid
        unsent = {k for k, o in wave.outcomes.items() if o.started is False}
        self.payer.book.settle_wave(self.wave, paid, unsent, self.before)
        try:
            self.payer.save()
        except Exception as error:
            raise MagiLedgerError(
                f"The batch submitted predictions {sorted(paid.values())} (they are billed), but recording "
                f"them in the ledger failed: {type(error).__name__}: {error}. The task stops here so that "
                "no retry pays again; the manifest lists them."
            ) from error
        finally:
            self.write_manifest()


class BatchPayer:
    """The batch's record of what it paid, and the steps that pay for its next wave."""

    def __init__(
        self, hook: Any, model: str, log: Any, ledger: Ledger, items: list[BatchItem], context: Context
    ) -> None:
        from airflow_provider_magi.batch_ledger import read_book

        self.hook = hook
        self.model = model
        self.log = log
        self.ledger = ledger
        self.items = items
        self.book: BatchBook = read_book(ledger)
        self.context = context

    def waiting(self, waiting: bool) -> None:
        """Deferring, a mapped batch still holds what it paid while scheduled or queued to resume;
        finished, it waits on no trigger any more (map_indexes)."""
        from airflow_provider_magi.paying.map_indexes import publish

        publish(self.ledger, self.book, len(self.items), waiting=waiting)

    def save(self, *, strict: bool = False) -> None:
        """The book, and a mapped batch's share of it with its other map indexes (``strict``: see
        :func:`~airflow_provider_magi.paying.map_indexes.publish`)."""
        from airflow_provider_magi.batch_ledger import write_book
        from airflow_provider_magi.paying.map_indexes import publish

        write_book(self.ledger, self.book)
        publish(self.ledger, self.book, len(self.items), strict=strict)

    def created_after(self, running: list[ManifestLine]) -> datetime:
        """The oldest running wave's start, less a margin for clocks: the running predictions'
        window in WaveSpeed's history."""
        waves = [self.book.entries[line.index].wave for line in running if line.index in self.book.entries]
        since = min((self.book.waves[wave] for wave in waves), default=datetime.now(UTC))
        return since - CLOCK_MARGIN

    # ------------------------------------------------------------ what earlier tries paid

    def match(self, *, first_entry: bool) -> None:
        """Key the book's entries by the items' current places, matched by their inputs.

        A re-rendered input list may differ between tries (an item inserted, removed or moved):
        an entry stays with its item where it is now (same place first, else the first unclaimed
        entry with the same fingerprint), and an entry no item claims is kept past the last item,
        never dropped or overwritten, so an item that comes back is not paid for again.
        """
        from airflow_provider_magi.batch_ledger import short

        old = self.book.entries
        matched: dict[int, int] = {}  # item index -> old index
        for item in self.items:
            entry = old.get(item.index)
            if entry is not None and entry.fingerprint == short(item.fingerprint):
                matched[item.index] = item.index
        spare: dict[str, list[int]] = {}
        for index in sorted(set(old) - set(matched.values())):
            spare.setdefault(old[index].fingerprint, []).append(index)
        for item in self.items:
            pool = spare.get(short(item.fingerprint))
            if item.index not in matched and pool:
                matched[item.index] = pool.pop(0)
        entries = {index: old[was] for index, was in matched.items()}
        orphans = sorted(set(old) - set(matched.values()))
        entries.update({len(self.items) + n: old[was] for n, was in enumerate(orphans)})
        changed = entries != old
        if changed:
            moved = {index: was for index, was in matched.items() if index != was}
            if moved:
                self.log.info("Batch: inputs moved since the last try (now: was): %s.", moved)
            self.book.entries = entries
        if changed or (first_entry and self.ledger.by_inputs is not None):
            self.save()  # a mapped batch shares what it holds and released at every first entry
        if first_entry:
            self._take_across_map_indexes()

    def _take_across_map_indexes(self) -> None:
        """Inputs another map index paid for are taken, shared strictly, then checked (map_indexes)."""
        from airflow_provider_magi.paying.map_indexes import give_up_conflicts, take_across_map_indexes

        before = dict(self.book.entries)
        read = take_across_map_indexes(self.ledger, self.book, self.items, self.context, self.log)
        if read is None or self.book.entries == before:
            return
        self.save(strict=True)
        if give_up_conflicts(self.ledger, self.book, self.items, read, self.log):
            self.save(strict=True)

    def reconcile(
        self, manifest: dict[int, ManifestLine], *, fresh: bool, whole: Callable[[ManifestLine], bool]
    ) -> dict[int, ManifestLine]:
        """Each item's line from the ledger (what was paid) and the manifest (what was made)."""
        from airflow_provider_magi.manifest import (
            COMPLETED,
            FAILED,
            NOT_SUBMITTED,
            RUNNING,
            UNCERTAIN,
            ManifestLine,
        )

        lines: dict[int, ManifestLine] = {}
        adopted: list[int] = []
        for item in self.items:
            entry = self.book.entry_for(item.index, item.fingerprint)
            old = manifest.get(item.index)
            replaced = list(old.replaced) if old else []
            if entry is None and old and old.status == FAILED and not fresh:
                lines[item.index] = old  # refused by WaveSpeed (not paid) within this try: final
            elif entry is None:
                lines[item.index] = ManifestLine(
                    item.index, NOT_SUBMITTED, error=old.error if old else None, replaced=replaced
                )
            elif entry.prediction_id is None and old and (paid := old.paid_per_manifest()):
                # The wave's ids reached the manifest but not the ledger (its second write failed):
                # the manifest names what was paid, and the ledger learns it now.
                self.book.entries[item.index] = replace(entry, prediction_id=paid)
                adopted.append(item.index)
                kept = old.status == COMPLETED and whole(old)
                lines[item.index] = (
                    old if kept else ManifestLine(item.index, RUNNING, prediction_id=paid, replaced=replaced)
                )
            elif entry.prediction_id is None:
                lines[item.index] = ManifestLine(
                    item.index,
                    UNCERTAIN,
                    error=old.error if old and old.status == UNCERTAIN else None,
                    replaced=replaced,
                )
            elif (
                old
                and old.prediction_id == entry.prediction_id
                and ((old.status == COMPLETED and whole(old)) or (old.status == FAILED and not fresh))
            ):
                lines[item.index] = old  # whole files are kept; a failure within this try is final
            elif old and old.status == NOT_SUBMITTED and entry.prediction_id in old.replaced and not fresh:
                # This try is to submit it again (an earlier try's prediction failed) and has not
                # yet: a 429 or the budget held its wave back. The ledger still names the old one.
                lines[item.index] = old
            else:  # running, or a fresh try must learn how it ended (a failed one is paid again)
                lines[item.index] = ManifestLine(
                    item.index, RUNNING, prediction_id=entry.prediction_id, replaced=replaced
                )
        if adopted:
            self.log.warning(
                "Batch: the ledger held submit intents without ids for inputs %s, and the manifest "
                "names the predictions those submits started: recorded in the ledger now, not paid again.",
                compact(adopted),
            )
            self.save()
        return lines

    def look_up_lost(self, lost: list[ManifestLine]) -> None:
        """Intents without ids: WaveSpeed's history says whether those submits started anything.

        A prediction of the model created in the wave's window that no item of this batch
        claims may be one of them: then none of them is paid for again, and each is named.
        """
        from airflow_provider_magi.manifest import NOT_SUBMITTED
        from airflow_provider_magi.paying import item

        waves = {self.book.entries[line.index].wave for line in lost}
        since = min(self.book.waves[wave] for wave in waves)
        settle = since.timestamp() + item.INTENT_SETTLE_SECONDS - time.time()
        if settle > 0:  # a submit cut off a moment ago may still be landing on WaveSpeed's side
            time.sleep(settle)
        found = self.hook.find_submit_candidates(self.model, since)
        known = self.book.known_ids()
        unclaimed = [p for p in found if p.id not in known]
        if not unclaimed:
            self.log.warning(
                "Batch: %d submit(s) sent without a recorded id (inputs %s); WaveSpeed's history lists "
                "no unclaimed prediction of %s created since %s: they never started and are submitted again.",
                len(lost),
                indexes(lost),
                self.model,
                since.isoformat(timespec="seconds"),
            )
            for line in lost:
                line.status, line.error = NOT_SUBMITTED, None
                self.book.entries.pop(line.index, None)
            self.save()
            return
        listed = ", ".join(f"{p.id} ({p.status})" for p in unclaimed)
        for line in lost:
            line.error = (
                f"the submit's answer was lost; WaveSpeed lists unclaimed prediction(s) of {self.model} "
                f"created around it: {listed}. Not submitted again. Fix: fetch the one that is this item's, "
                "or delete the batch's ledger record to pay for it afresh"
            )

    def ended(
        self,
        lines: Iterable[ManifestLine],
        found: dict[str, Prediction],
        *,
        fresh: bool,
        deliver: Callable[[ManifestLine, Prediction], None],
        after_each: Callable[[], None],
    ) -> None:
        """Apply what the statuses say to the running items: a completed one is delivered; a
        failed one is final within the try, and paid for again only by a fresh try (a retry or
        clear), and only when it provably did not complete (a completed one is billed, and a
        deleted one, or a 404, may have been: never bought again)."""
        from airflow_provider_magi.manifest import FAILED, NOT_SUBMITTED, RUNNING

        for line in list(lines):
            prediction = found.get(line.prediction_id or "")
            if line.status != RUNNING or prediction is None or not prediction.is_terminal:
                continue
            if prediction.is_completed:
                deliver(line, prediction)
            if prediction.is_completed and line.status != RUNNING:
                pass  # delivered (or its outputs refused): the line says which
            elif fresh and not prediction.is_completed and prediction.status != "deleted":
                self.log.info(
                    "Batch: input %d's prediction %s %s in an earlier try: submitting it again.",
                    line.index,
                    prediction.id,
                    prediction.status,
                )
                if prediction.id not in line.replaced:
                    line.replaced = [*line.replaced, prediction.id]
                line.status, line.prediction_id, line.error = NOT_SUBMITTED, None, None
            else:
                line.status = FAILED
                line.error = prediction.error or (
                    "completed without any outputs" if prediction.is_completed else prediction.status
                )
                if prediction.status == "deleted":
                    line.error += (
                        "; it may have completed and been billed, so it is not submitted again. Fix: "
                        "check your WaveSpeed predictions and billing for it"
                    )
            after_each()

    # ------------------------------------------------------------ the next wave

    def pay_wave(
        self,
        pending: list[ManifestLine],
        running: list[ManifestLine],
        carry: dict[str, Any],
        *,
        min_pause: float,
        write_manifest: Callable[[], None],
    ) -> tuple[float, dict[int, str]]:
        """Pay for what of ``pending`` fits the guards, in input order: ``(pause, paid)``, the
        seconds a 429 asked the next wave to wait and the ids paid for. A budget or floor that
        stops the batch is recorded in ``carry["stopped"]``; an error that stops the wave raises
        once the wave is journaled."""
        from airflow_provider_magi.batch_budget import SaidOnce, room
        from airflow_provider_magi.manifest import FAILED, RUNNING
        from airflow_provider_magi.manifest import UNCERTAIN as LINE_UNCERTAIN

        # Only the running ones: a completed one is billed or listed as started (the batch saw
        # it in the history), so its unknown price must not reserve it a second time; a failed
        # one is never billed.
        own_unbilled = {line.prediction_id for line in running if line.prediction_id}
        priced = {item.index: item.price for item in self.items}
        prices = [priced.get(line.index) for line in pending]
        own_prices = {
            line.prediction_id: line.price_usd for line in running if line.prediction_id and line.price_usd
        }
        fits, refusal = room(
            self.hook,
            self.model,
            len(pending),
            own_unbilled,
            SaidOnce(self.log, carry),
            prices=() if None in prices else tuple(p for p in prices if p is not None),
            own_prices=own_prices,
        )
        if fits < len(pending):
            if refusal:  # the rest are not paid for in this try: the task ends failed, naming them
                carry["stopped"] = refusal
                for line in pending[fits:]:
                    line.error = f"not submitted: {refusal}"
            pending = pending[:fits]
            if not pending:
                return (0.0 if refusal else min_pause), {}
        by_index = {item.index: item for item in self.items}
        lines = {line.index: line for line in pending}

        def mark(wave: Wave) -> None:
            for key, outcome in wave.outcomes.items():
                line = lines[key]
                if outcome.kind == PAID and outcome.prediction is not None:
                    line.status, line.prediction_id, line.error = RUNNING, outcome.prediction.id, None
                elif outcome.kind == UNCERTAIN:
                    line.status = LINE_UNCERTAIN
                    line.error = f"the submit's answer was lost; it is not sent again: {outcome.error}"
                elif outcome.kind == REFUSED:  # 400, 404, 413, 422: this item, provably not started
                    line.status, line.error = FAILED, f"refused by WaveSpeed, not paid: {outcome.error}"
                elif outcome.kind == BAD_INPUT:  # a local first frame that went bad since the check
                    line.status, line.error = FAILED, str(outcome.error)

        fingerprints = {index: by_index[index].fingerprint for index in lines}
        journal = BookJournal(self, fingerprints, mark=mark, write_manifest=write_manifest)
        wave = send_wave(
            self.hook,
            self.model,
            [(line.index, by_index[line.index].inputs) for line in pending],
            journal,
            min_pause=min_pause,
            log=self.log,
        )
        paid = wave.paid
        if paid:
            self.log.info(
                "Batch: submitted %d input(s) (%s); %d running.",
                len(paid),
                compact(sorted(paid)),
                len(running) + len(paid),
            )
        if wave.stopped_by is not None:
            raise wave.stopped_by
        return wave.pause, paid
