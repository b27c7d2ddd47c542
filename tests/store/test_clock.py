"""Leases are judged by the database server's clock, so a host whose clock is off neither
re-queues jobs still running elsewhere nor has its own re-queued; an offset of 2 s or more is
logged at start (the times a host writes for people are off by as much). Host clocks off by
90 s are simulated in this process."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from store.clock import check_clock, store_now
from store.engine import open_store
from store.entry import EntryMetadata
from store.schema import utcnow
from submissions import jobs
from submissions.errors import QuotaExceeded
from tests.backend import Backend


def test_on_sqlite_every_process_shares_one_clock(tmp_path, host_clock_off_by):
    sessions = open_store(f"sqlite:///{tmp_path / 'board.db'}")
    host_clock_off_by(3600)
    assert check_clock(sessions) == 0.0
    with sessions() as session:  # the database file's machine is this one
        assert 3590 < (store_now(session) - utcnow()).total_seconds() < 3610


@pytest.mark.slow  # a PostgreSQL server
def test_a_host_clock_off_the_database_s_is_logged_at_start(
    postgres, host_clock_off_by, caplog, monkeypatch
):
    sessions = open_store(postgres.create_database("clock"))
    assert abs(check_clock(sessions)) < 0.5  # this host runs the server: one clock
    with caplog.at_level(logging.WARNING, logger="store.clock"):
        host_clock_off_by(-90)
        assert -91 < check_clock(sessions) < -89
        assert "This host's clock is 90.0 s behind the database server's: the" in caplog.text
        caplog.clear()
        host_clock_off_by(1)
        check_clock(sessions)
        assert caplog.text == ""  # under 2 s: nothing to say
        start = int(utcnow().timestamp()) - 5  # each round trip's middle 5 s ahead of now
        ticks = iter(range(start, start + 10_000, 20))  # each reading 20 s after the last
        monkeypatch.setattr("store.clock.utcnow", lambda: datetime.fromtimestamp(next(ticks), UTC))
        assert 4 < check_clock(sessions) < 6
        assert caplog.text == ""  # a 20 s round trip cannot tell 5 s from none


@pytest.mark.slow  # a PostgreSQL server
def test_leases_hold_between_hosts_whose_clocks_are_far_apart(
    postgres, host_clock_off_by, tmp_path
):
    backend = Backend(tmp_path, MITOSIS_DATABASE_URL=postgres.create_database("clock_leases"))
    running, lost = (
        backend.service.submit_predictions(user, backend.predictions(i), EntryMetadata("m"))
        for i, user in enumerate(("alice", "bob"))
    )
    host_clock_off_by(-90)  # a worker's host, 90 s behind (a virtual machine resumed)
    token = jobs.claim(backend.sessions, running.job_id, "w1", lease_s=60)
    assert jobs.claim(backend.sessions, lost.job_id, "w2", lease_s=-1)  # a lease that ended
    host_clock_off_by(90)  # another host's reaper, 90 s ahead
    requeued = jobs.requeue_lost(backend.sessions, backend.service.queue, stale_after_s=3600)
    assert requeued == [lost.job_id]
    host_clock_off_by(-90)
    assert jobs.heartbeat(backend.sessions, running.job_id, token, lease_s=60)
    assert backend.service.status("alice", running.job_id).status == "running"


@pytest.mark.slow  # a PostgreSQL server
def test_the_quota_window_is_the_same_for_app_hosts_whose_clocks_differ(
    postgres, host_clock_off_by, tmp_path
):
    url = postgres.create_database("clock_quota")
    backend = Backend(tmp_path, MITOSIS_DATABASE_URL=url, MITOSIS_HIDDEN_QUOTA="1")
    host_clock_off_by(-7200)  # an app host 2 h behind
    backend.service.submit_predictions("alice", backend.predictions(1), EntryMetadata("m"))
    host_clock_off_by(25 * 3600)  # another, 25 h ahead: by its clock the first is a day old
    with pytest.raises(QuotaExceeded, match="You have used your 1 hidden-split scorings"):
        backend.service.submit_predictions("alice", backend.predictions(2), EntryMetadata("n"))
