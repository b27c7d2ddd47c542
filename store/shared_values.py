"""Values every process of one store shares, created once: the store's id and server secrets.

Kept in the ``secrets`` table. The store's id names the store on its queue messages, so a
worker whose database is another store's (a host with another MITOSIS_DATABASE_URL on the
same Redis) can tell a message is not for it, instead of claiming its own job of that number.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from store.schema import Secret

STORE_ID = "store-id"


def shared_value(session: Session, name: str, make: Callable[[], str]) -> str:
    """The value stored under ``name``, made with ``make`` by the first process that asks."""
    value = session.scalar(select(Secret.value).where(Secret.name == name))
    if value is None:
        try:
            with session.begin_nested():
                session.add(Secret(name=name, value=make()))
        except IntegrityError:  # another process made it first: use theirs
            pass
        value = session.scalar(select(Secret.value).where(Secret.name == name))
    if value is None:  # the other process's row is outside this transaction's snapshot
        raise RuntimeError(f"The shared value {name!r} could not be read; start again.")
    return value


def store_id(sessions: sessionmaker) -> str:
    """This store's id: 16 random hex digits, made when the store is first used."""
    with sessions.begin() as session:
        return shared_value(session, STORE_ID, lambda: secrets.token_hex(8))
