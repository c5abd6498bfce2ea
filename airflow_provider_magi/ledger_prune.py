"""Delete the ledger's Variables (Airflow 3.0-3.2) once they can no longer save anyone money.

WaveSpeed deletes a prediction 7 days after it was made, so a record older than that can only
lead a retry to a 404 and a fresh submit: it is safe to delete. Variables do not expire by
themselves (the task state store of 3.3+ does), so run this where the metadata database is
reachable, e.g. daily on the scheduler host::

    python -m airflow_provider_magi.ledger_prune --older-than-days 8

It deletes only records that parse and are older than the cutoff; anything else is listed and kept.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from airflow_provider_magi.exceptions import MagiLedgerError
from airflow_provider_magi.ledger import LedgerRecord
from airflow_provider_magi.ledger_stores import VARIABLE_PREFIX

DEFAULT_AGE_DAYS = 8.0


def prune(older_than: timedelta, *, dry_run: bool = False) -> tuple[list[str], list[str]]:
    """Delete (or, dry, only list) ledger Variables older than ``older_than``: (deleted, kept unreadable)."""
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    cutoff = datetime.now(UTC) - older_than
    deleted: list[str] = []
    unreadable: list[str] = []
    with create_session() as session:
        pattern = VARIABLE_PREFIX.replace("_", r"\_") + "%"
        for variable in session.query(Variable).filter(Variable.key.like(pattern, escape="\\")):
            try:
                record = LedgerRecord.from_json(variable.val or "", where=variable.key)
            except MagiLedgerError:
                unreadable.append(variable.key)
                continue
            if record.intent_at < cutoff:
                deleted.append(variable.key)
                if not dry_run:
                    session.delete(variable)
    return deleted, unreadable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_magi.ledger_prune",
        description="Delete airflow-provider-magi ledger Variables older than WaveSpeed keeps predictions.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--older-than-days", type=float, default=DEFAULT_AGE_DAYS, help="age cutoff")
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    args = parser.parse_args(argv)
    if args.older_than_days < 7:
        parser.error("--older-than-days below 7 could delete a record a retry still needs")
    deleted, unreadable = prune(timedelta(days=args.older_than_days), dry_run=args.dry_run)
    verb = "Would delete" if args.dry_run else "Deleted"
    print(f"{verb} {len(deleted)} ledger record(s) older than {args.older_than_days:g} days.")
    for key in unreadable:
        print(f"Kept {key}: not a readable ledger record (inspect it before deleting by hand).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
