"""A host whose clock is far from the database server's does not start, and stops reaping when
its clock jumps later: it would re-queue jobs that other hosts are still running. A host clock
off by a minute is simulated in this process."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import pytest

from store.clock import ClockOffset, ClockWatch, check_clock
from store.engine import open_store
from store.entry import EntryMetadata
from submissions import jobs
from tests.backend import Backend, wait_until


def test_on_sqlite_every_process_shares_one_clock(tmp_path, host_clock_off_by):
    sessions = open_store(f"sqlite:///{tmp_path / 'board.db'}")
    host_clock_off_by(3600)
    assert check_clock(sessions, 60) == 0.0
    assert ClockWatch(sessions, 60, every_s=0).agrees_now()


@pytest.mark.slow  # a PostgreSQL server
def test_a_host_clock_far_from_the_database_s_is_refused_and_a_near_one_logged(
    postgres, host_clock_off_by, caplog, monkeypatch
):
    sessions = open_store(postgres.create_database("clock"))
    assert abs(check_clock(sessions, 60)) < 0.5  # this host runs the server: one clock
    host_clock_off_by(45)
    with pytest.raises(ClockOffset, match="clock is 45 s ahead of the database server's, and"):
        check_clock(sessions, 60)
    assert 44 < check_clock(sessions, 200) < 46  # within a quarter of a 200 s lease: it serves
    host_clock_off_by(-16)
    with pytest.raises(ClockOffset, match=r"16 s behind .* at most 15 s off it \(a quarter of"):
        check_clock(sessions, 60)
    host_clock_off_by(5)
    with caplog.at_level(logging.WARNING, logger="store.clock"):
        assert 4 < check_clock(sessions, 60) < 6
    assert "This host's clock is 5.0 s ahead of the database server's; keep" in caplog.text
    host_clock_off_by(1)
    caplog.clear()
    check_clock(sessions, 60)
    assert caplog.text == ""  # under 2 s: nothing to say
    ticks = iter(range(0, 10_000, 20))  # every reading 20 s after the one before
    monkeypatch.setattr("store.clock.utcnow", lambda: datetime.fromtimestamp(next(ticks), UTC))
    with caplog.at_level(logging.WARNING, logger="store.clock"):
        check_clock(sessions, 60)  # whatever the offset seems: a 20 s round trip cannot tell
    assert "The database took 20.0 s to answer, too long to compare this host's" in caplog.text


@pytest.mark.slow  # a PostgreSQL server
def test_a_clock_that_jumps_after_start_pauses_the_reaper_until_it_agrees_again(
    postgres, host_clock_off_by, caplog, tmp_path
):
    backend = Backend(tmp_path, MITOSIS_DATABASE_URL=postgres.create_database("clock_watch"))
    view = backend.service.submit_predictions("alice", backend.predictions(1), EntryMetadata("m"))
    assert jobs.claim(backend.sessions, view.job_id, "w", lease_s=-1)  # its lease has ended
    caplog.set_level(logging.WARNING, logger="store.clock")
    host_clock_off_by(45)  # after the start's check: a paused virtual machine resumed
    stop = threading.Event()
    reaper = threading.Thread(
        target=jobs.reap_forever,
        args=(backend.sessions, backend.service.queue, stop, ClockWatch(backend.sessions, 60, 0)),
        kwargs={"interval_s": 0.05},
    )
    reaper.start()
    try:
        paused = "Until it is synchronised, this host re-queues no job"
        wait_until(lambda: caplog.text.count(paused) >= 3, 60, "the clock was not measured again")
        assert backend.service.status("alice", view.job_id).status == "running"
        host_clock_off_by(0)
        wait_until(
            lambda: backend.service.status("alice", view.job_id).status == "queued",
            60,
            "the reaper did not resume",
        )
    finally:
        stop.set()
        reaper.join(30)
    assert "clock is 45 s ahead of the database server's, and hosts" in caplog.text
    assert "This host's clock agrees with the database server's again." in caplog.text
