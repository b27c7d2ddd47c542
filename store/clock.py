"""The one clock that leases and heartbeats are judged by: the database server's.

Leases and heartbeats are written by one host and read by others: a reaper expires another
worker's job when its lease end is past, and the Space calls a worker silent when its last
heartbeat is old. Written and compared in the database server's time (:func:`store_now`),
they need no agreement between the hosts' clocks: a host whose clock jumps (a virtual machine
resumed from a pause, NTP stopped) neither re-queues jobs still running elsewhere nor has its
own re-queued. Jobs' times, queue ages and the windows of the quota and the publish allowance
keep the server's clock too, so every app host admits the same; a host's clock still stamps
a few times people read (when a submission was made or scored, withdrawn or taken down), so
a host 2 s or more off the server's is logged at start (:func:`check_clock`).
On SQLite every process runs on the database file's machine, with one clock.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from store.schema import as_utc, utcnow

log = logging.getLogger(__name__)

NOTICED_OFFSET_S = 2.0


def store_now(session: Session) -> datetime:
    """The database server's time now (aware UTC); on SQLite, this machine's."""
    if session.get_bind().dialect.name != "postgresql":
        return utcnow()
    return as_utc(session.scalar(text("SELECT clock_timestamp()")))


def _measure(sessions: sessionmaker) -> tuple[float, float]:
    """(this host's clock minus the database server's, how far off that may be), in seconds.

    0.0 and 0.0 on SQLite. The server's reading is compared with the middle of the round trip
    that fetched it (so the error is half of it), on a connection already open, the shortest
    of three round trips.
    """
    with sessions() as session:
        if session.get_bind().dialect.name != "postgresql":
            return 0.0, 0.0
        session.execute(text("SELECT 1"))  # connecting is not part of a round trip
        samples = []
        for _ in range(3):
            before = utcnow().timestamp()
            server = store_now(session).timestamp()
            after = utcnow().timestamp()
            samples.append((after - before, (before + after) / 2 - server))
    round_trip, offset = min(samples)
    return offset, round_trip / 2


def check_clock(sessions: sessionmaker) -> float:
    """This host's clock minus the database server's (s); logged from ``NOTICED_OFFSET_S``.

    Only where the offset is that large beyond the measurement's own error (half a round
    trip): the times this host writes for people to read are off by as much.
    """
    offset, uncertainty = _measure(sessions)
    if abs(offset) - uncertainty >= NOTICED_OFFSET_S:
        log.warning(
            "This host's clock is %.1f s %s the database server's: the submission, scoring and "
            "withdrawal times it writes are off by as much (leases, heartbeats, job times and "
            "quotas use the server's clock). Keep every host that shares the store on NTP.",
            abs(offset),
            "ahead of" if offset > 0 else "behind",
        )
    return offset
