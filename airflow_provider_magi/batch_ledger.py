"""What a batch has paid for: one ledger record for the whole batch, written twice per submit wave.

A batch of 1,000 must not mean 2,000 metadata-database writes, so its items share one record
(``batch``) in the task's ledger store (see ``ledger_stores``), rewritten whole:

1. **intent**, just before a wave's POSTs: each item of the wave with its inputs' fingerprint
   and no id, and the wave's start time.
2. **paid**, after the wave's POSTs: the ids the answers named; items provably not started
   (refused, paced by a 429, never sent) are dropped again, so a retry submits them.

An item whose record holds an intent and no id had its answer lost (or its worker killed mid-
wave): a retry asks WaveSpeed's history before paying for it again. Like the single-video
ledger, the record holds digests and ids only, never inputs or the API key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from airflow_provider_magi.api import is_valid_prediction_id
from airflow_provider_magi.exceptions import MagiLedgerError

BATCH_RECORD = "batch"
BATCH_RECORD_VERSION = 1
FINGERPRINT_CHARS = 32  # of a SHA-256 hex digest: plenty to tell inputs apart, half the bytes


@dataclass(frozen=True)
class BatchEntry:
    """One item's latest submit: for which inputs, in which wave, and the id once known."""

    fingerprint: str
    wave: int
    prediction_id: str | None = None


@dataclass
class BatchBook:
    """Every item's latest submit (by input index) and when each wave started."""

    entries: dict[int, BatchEntry] = field(default_factory=dict)
    waves: dict[int, datetime] = field(default_factory=dict)

    def entry_for(self, index: int, fingerprint: str) -> BatchEntry | None:
        """The item's submit if it was made for these inputs (an edited input is a new item)."""
        entry = self.entries.get(index)
        if entry is None or entry.fingerprint != short(fingerprint):
            return None
        return entry

    def known_ids(self) -> set[str]:
        return {e.prediction_id for e in self.entries.values() if e.prediction_id}

    def start_wave(self, fingerprints: dict[int, str], now: datetime | None = None) -> int:
        """Record the intents of a wave (ids unknown); returns the wave's number."""
        moment = now or datetime.now(UTC)
        wave = self.add_wave(moment.replace(microsecond=moment.microsecond // 1000 * 1000))
        for index, fingerprint in fingerprints.items():
            self.entries[index] = BatchEntry(short(fingerprint), wave)
        return wave

    def add_wave(self, started: datetime) -> int:
        """A wave started at ``started`` (another map index's, whose prediction this book takes)."""
        wave = max(self.waves, default=0) + 1
        self.waves[wave] = started
        return wave

    def settle_wave(
        self, wave: int, paid: dict[int, str], unsent: set[int], before: dict[int, BatchEntry]
    ) -> None:
        """After a wave: ids for ``paid``; ``unsent`` items go back to what they were before."""
        for index, prediction_id in paid.items():
            self.entries[index] = BatchEntry(self.entries[index].fingerprint, wave, prediction_id)
        for index in unsent:
            if index in before:
                self.entries[index] = before[index]
            else:
                self.entries.pop(index, None)

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": BATCH_RECORD_VERSION,
                "at": datetime.now(UTC).isoformat(timespec="milliseconds"),  # written, for ledger_prune
                "waves": {str(k): v.isoformat(timespec="milliseconds") for k, v in self.waves.items()},
                "items": {str(i): [e.fingerprint, e.wave, e.prediction_id] for i, e in self.entries.items()},
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str, *, where: str) -> BatchBook:
        """Parse strictly: a record that cannot be read stops the batch, never reads as empty."""
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict) or raw.get("v") != BATCH_RECORD_VERSION:
                raise ValueError(f"expected a version {BATCH_RECORD_VERSION} batch record")
            waves = {int(k): _aware(v) for k, v in dict(raw["waves"]).items()}
            entries: dict[int, BatchEntry] = {}
            for key, value in dict(raw["items"]).items():
                fingerprint, wave, prediction_id = value
                if not isinstance(fingerprint, str) or int(wave) not in waves:
                    raise ValueError(f"item {key} is malformed")
                if prediction_id is not None and not is_valid_prediction_id(prediction_id):
                    raise ValueError(f"item {key} holds an id that is not a WaveSpeed id")
                entries[int(key)] = BatchEntry(fingerprint, int(wave), prediction_id)
        except (TypeError, ValueError, KeyError, RecursionError) as error:
            raise MagiLedgerError(
                f"The batch's ledger record at {where} cannot be read ({error}), so what this batch "
                "already paid for is unknown and nothing is submitted. Fix: check the manifest and "
                "your WaveSpeed predictions, then delete that record to submit afresh."
            ) from None
        return cls(entries=entries, waves=waves)


def short(fingerprint: str) -> str:
    return fingerprint[:FINGERPRINT_CHARS]


def _aware(text: Any) -> datetime:
    when = datetime.fromisoformat(str(text))
    if when.tzinfo is None:
        raise ValueError("a wave's time has no time zone")
    return when


def read_book(ledger: Any) -> BatchBook:
    """The batch's record, or an empty book, wherever an earlier try wrote it: the task's
    :class:`~airflow_provider_magi.ledger.Ledger` reads its primary store, then every other store a
    try may have used (``ledger_path`` switched on or off, Variables before an upgrade to 3.3), as
    the single video's record is read."""
    text = ledger.read_text(BATCH_RECORD)
    where = ledger.found_in or ledger.where(BATCH_RECORD)
    return BatchBook() if text is None else BatchBook.from_json(text, where=where)


def write_book(ledger: Any, book: BatchBook) -> None:
    """Into the primary store and its mirrors (Airflow's own store keeps a copy when ``ledger_path``
    is set, so a try after ``ledger_path`` is removed still finds it)."""
    ledger.write_text(BATCH_RECORD, book.to_json())
