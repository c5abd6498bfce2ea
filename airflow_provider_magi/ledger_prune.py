"""Delete the provider's records once they can no longer save anyone money.

WaveSpeed deletes a prediction 7 days after it was made, so a record older than that can only
lead a retry to a 404 and a fresh submit: it is safe to delete. Variables do not expire by
themselves (the task state store of 3.3+ does), nor do objects under a ``ledger_path``, so run
this where the metadata database (and the bucket) is reachable, e.g. daily on the scheduler::

    python -m airflow_provider_magi.ledger_prune --older-than-days 8
    python -m airflow_provider_magi.ledger_prune --ledger-path s3://my-bucket/magi-ledger

It deletes only what the provider wrote, by its exact pattern (case-sensitive): ledger
Variables ``magi_ledger.<40 hex digits>``, cost marks ``magi_cost.<prediction id>`` and, under a
``ledger_path``, ``<dag>/<run>/<task>/<map index>/<record>.json`` objects; each only when its
content reads as such a record and is older than the cutoff. Anything else is left alone; a
key or object of the provider's pattern that does not read is listed and kept.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_provider_magi.counted import VARIABLE_PREFIX as COST_PREFIX
from airflow_provider_magi.exceptions import MagiLedgerError
from airflow_provider_magi.ledger import LedgerRecord
from airflow_provider_magi.ledger_stores import VARIABLE_PREFIX

DEFAULT_AGE_DAYS = 8.0
# The keys the provider writes, exactly: a digest of the task's identity, or a prediction id.
LEDGER_KEY = re.compile(re.escape(VARIABLE_PREFIX) + r"[0-9a-f]{40}")
COST_KEY = re.compile(re.escape(COST_PREFIX) + r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def _written_at(key: str, value: str) -> datetime | None:
    """When the provider wrote this record (None: it does not read as one of its records)."""
    if LEDGER_KEY.fullmatch(key):
        try:
            return LedgerRecord.from_json(value, where=key).intent_at
        except MagiLedgerError:
            return _stamped_at(value)
    try:
        mark = json.loads(value)
        when = datetime.fromisoformat(mark["counted_at"])
    except (ValueError, KeyError, TypeError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _stamped_at(value: str) -> datetime | None:
    """The write time a task's other records carry in ``"at"`` (a try's ``rendering`` record, a
    mapped task's records by inputs and claims)."""
    try:
        raw = json.loads(value)
        when = datetime.fromisoformat(raw["at"]) if isinstance(raw, dict) and "at" in raw else None
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return when if when is None or when.tzinfo else when.replace(tzinfo=UTC)


def prune(older_than: timedelta, *, dry_run: bool = False) -> tuple[list[str], list[str]]:
    """Delete (or, dry, only list) the provider's Variables older than ``older_than``: (deleted,
    kept unreadable). The database's ``LIKE`` only narrows the search (it ignores case on some
    databases); each key must then match the provider's pattern exactly."""
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    cutoff = datetime.now(UTC) - older_than
    deleted: list[str] = []
    unreadable: list[str] = []
    with create_session() as session:
        for prefix in (VARIABLE_PREFIX, COST_PREFIX):
            pattern = prefix.replace("_", r"\_") + "%"
            for variable in session.query(Variable).filter(Variable.key.like(pattern, escape="\\")):
                key = variable.key
                if not (LEDGER_KEY.fullmatch(key) or COST_KEY.fullmatch(key)):
                    continue  # not a key the provider writes (another case, another shape)
                written = _written_at(key, variable.val or "")
                if written is None:
                    unreadable.append(key)
                elif written < cutoff:
                    deleted.append(key)
                    if not dry_run:
                        session.delete(variable)
    return deleted, unreadable


def prune_path(
    ledger_path: str, older_than: timedelta, *, dry_run: bool = False
) -> tuple[list[str], list[str]]:
    """The same for a ``ledger_path`` store: its ``<dag>/<run>/<task>/<map>/<record>.json``
    objects that read as ledger records older than ``older_than``."""
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_magi.operators.download import check_destination_scheme

    check_destination_scheme(ledger_path, run_time=True)  # a missing s3fs is named, not fsspec's error
    base = ObjectStoragePath(ledger_path.rstrip("/"))
    cutoff = datetime.now(UTC) - older_than
    deleted: list[str] = []
    unreadable: list[str] = []
    for path in _records(base):
        where = str(path)
        try:
            text = str(path.read_text())
        except (OSError, UnicodeDecodeError):
            unreadable.append(where)
            continue
        try:
            written: datetime | None = LedgerRecord.from_json(text, where=where).intent_at
        except MagiLedgerError:
            written = _stamped_at(text)
        if written is None:
            unreadable.append(where)
            continue
        if written < cutoff:
            deleted.append(where)
            if not dry_run:
                path.unlink()
    return deleted, unreadable


def _records(base: Any) -> list[Any]:
    """The objects at exactly the ledger's depth (four identity parts, then ``<record>.json``)."""
    found = []
    for path in base.rglob("*.json"):
        relative = str(path)[len(str(base)) :].strip("/").split("/")
        if len(relative) == 5 and not relative[-1].startswith(".") and path.is_file():
            found.append(path)
    return found


def _days(text: str) -> float:
    """``--older-than-days``: a finite number (``nan``, ``inf`` are refused, not a traceback)."""
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not math.isfinite(days):
        raise argparse.ArgumentTypeError(f"must be a finite number of days, got {text!r}")
    return days


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_magi.ledger_prune",
        description="Delete airflow-provider-magi ledger records and cost marks older than WaveSpeed "
        "keeps predictions.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--older-than-days", type=_days, default=DEFAULT_AGE_DAYS, help="age cutoff")
    parser.add_argument(
        "--ledger-path",
        action="append",
        default=[],
        metavar="URL",
        help="also prune this ledger_path store (a connection extra's URL); repeatable",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    args = parser.parse_args(argv)
    if args.older_than_days < 7:
        parser.error("--older-than-days below 7 could delete a record a retry still needs")
    age = timedelta(days=args.older_than_days)
    verb = "Would delete" if args.dry_run else "Deleted"
    deleted, unreadable = prune(age, dry_run=args.dry_run)
    print(f"{verb} {len(deleted)} record(s) older than {args.older_than_days:g} days from Variables.")
    for ledger_path in args.ledger_path:
        from_path, unreadable_there = prune_path(ledger_path, age, dry_run=args.dry_run)
        print(
            f"{verb} {len(from_path)} record(s) older than {args.older_than_days:g} days from {ledger_path}."
        )
        unreadable += unreadable_there
    for key in unreadable:
        print(f"Kept {key}: not a readable record (inspect it before deleting by hand).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
