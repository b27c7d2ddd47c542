"""Locks held in the database, so app processes and workers on any host decide one at a time.

Every decision that reads records and then writes on them starts by locking a row: a user's row
in ``accounts`` (their quota check and insert, the Ladder's release decision) or a named row in
``locks`` (standings, re-scoring, the pathologists' rows). On PostgreSQL that is a row lock; on
SQLite the write lock of the whole file (the transaction's first statement is a write). Call it
first in the transaction: on SQLite the write lock must be taken before anything is read, or
the reads may come from an older snapshot. The lock is held until the transaction ends.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.schema import Account, Lock, utcnow

_UPSERTS = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}
STANDINGS = "standings"  # the board's standing after each change
RESCORING = "re-scoring"  # which submissions to queue again
PATHOLOGIST_ROWS = "pathologist rows"  # the reference rows seeded by every worker


def lock_account(session: Session, user: str) -> None:
    """Hold ``user``'s account row lock (the row is created on first use)."""
    _lock_row(session, Account, Account.user, user, touched_at=utcnow())


def hold_lock(session: Session, name: str) -> None:
    """Hold the named lock ``name`` (one of this module's names)."""
    _lock_row(session, Lock, Lock.name, name, taken_at=utcnow())


def _lock_row(session: Session, table, key, value: str, **touch) -> None:
    upsert = _UPSERTS.get(session.get_bind().dialect.name)
    if upsert is not None:
        session.execute(upsert(table).values({key.key: value}).on_conflict_do_nothing())
    elif session.get(table, value) is None:
        try:
            with session.begin_nested():
                session.add(table(**{key.key: value}))
        except IntegrityError:  # created concurrently: the update below waits for its lock
            pass
    session.execute(update(table).where(key == value).values(**touch))
