"""Whether this host's clock agrees with the database server's.

Leases and heartbeats are written by one host and read by others: a reaper expires another
worker's job when its lease end is past, and the Space calls a worker silent when its last
heartbeat is old. Hosts sharing a PostgreSQL store must therefore agree on the time. A lease
is renewed every third of its length, so a reaper whose clock runs ahead of a worker's by more
than two thirds of one would re-queue jobs that are still running (and fail them after three
attempts). Each host is measured against the server, and two hosts may sit on either side of
it: workers and the app refuse to start a quarter of a lease off the server's clock (two of
them are then under half a lease apart), and log an offset of 2 s or more.
On SQLite every process runs on the database file's machine, with one clock.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from store.errors import StoreUnavailable
from store.schema import utcnow

log = logging.getLogger(__name__)

NOTICED_OFFSET_S = 2.0
RECHECK_S = 600.0  # how often a running process measures its clock again


class ClockOffset(StoreUnavailable):
    """This host's clock is too far from the database server's to share its leases.

    A kind of ``StoreUnavailable``: the commands stop with its one sentence, as for a store
    that cannot be opened.
    """


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
            server = float(session.scalar(text("SELECT extract(epoch FROM clock_timestamp())")))
            after = utcnow().timestamp()
            samples.append((after - before, (before + after) / 2 - server))
    round_trip, offset = min(samples)
    return offset, round_trip / 2


def _too_far(offset: float, uncertainty: float, lease_s: int) -> str:
    """Why this host may not share the store's leases ("" when it may); logs the lesser cases."""
    way = "ahead of" if offset > 0 else "behind"
    limit = lease_s / 4
    if uncertainty >= limit / 2:
        log.warning(
            "The database took %.1f s to answer, too long to compare this host's clock with "
            "its server's; keep every host that shares the store on NTP.",
            2 * uncertainty,
        )
    elif abs(offset) - uncertainty >= limit:
        return (
            f"This host's clock is {abs(offset):.0f} s {way} the database server's, and hosts "
            f"that share a store may be at most {limit:g} s off it (a quarter of MITOSIS_LEASE_S "
            f"= {lease_s} s): they compare lease and heartbeat times, and this one would take "
            "over jobs that are still running."
        )
    elif abs(offset) >= NOTICED_OFFSET_S:
        log.warning(
            "This host's clock is %.1f s %s the database server's; keep every host that shares "
            "the store on NTP (leases and heartbeats compare their times).",
            abs(offset),
            way,
        )
    return ""


def check_clock(sessions: sessionmaker, lease_s: int) -> float:
    """This host's clock minus the database server's (s); ``ClockOffset`` from a quarter lease.

    Refused only where the offset is that large beyond the measurement's own error (half a
    round trip); an offset of ``NOTICED_OFFSET_S`` or more is logged as a warning, and so is a
    round trip too slow to tell (as long as the limit, or longer).
    """
    offset, uncertainty = _measure(sessions)
    problem = _too_far(offset, uncertainty, lease_s)
    if problem:
        raise ClockOffset(
            f"{problem} Synchronise its clock (NTP, e.g. `timedatectl set-ntp true`) and start "
            "again."
        )
    return offset


class ClockWatch:
    """Whether this host's clock still agrees with the database server's, measured again.

    Every ``every_s`` seconds, since a clock checked at start can still jump later (a
    virtual machine resumed from a pause, NTP stopped). The reaper asks before each round:
    while this host is a quarter of a lease off, it re-queues no job, and says so each time
    it measures.
    """

    def __init__(self, sessions: sessionmaker, lease_s: int, every_s: float = RECHECK_S):
        self.sessions, self.lease_s, self.every_s = sessions, lease_s, every_s
        self.agrees = True
        self._next = time.monotonic() + every_s  # the start was checked by check_clock

    def agrees_now(self) -> bool:
        """Whether this host may reap: the last measurement's answer, renewed when due."""
        if time.monotonic() < self._next:
            return self.agrees
        self._next = time.monotonic() + self.every_s
        problem = _too_far(*_measure(self.sessions), self.lease_s)
        if problem:
            log.error("%s Until it is synchronised, this host re-queues no job.", problem)
        elif not self.agrees:
            log.warning("This host's clock agrees with the database server's again.")
        self.agrees = not problem
        return self.agrees
