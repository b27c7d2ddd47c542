"""The app's worker is supervised: restarted when it dies, gone when the app goes."""

from __future__ import annotations

import os
import signal
import time

import pytest
from sqlalchemy import func, select

from store.entry import EntryMetadata
from store.schema import Job, Result, WorkerRecord
from submissions.worker_registry import health
from tests.app.conftest import RunningApp, alive
from tests.backend import slow_checkpoint, wait_until, zip_dir

pytestmark = pytest.mark.slow  # processes, servers or real training: `make test` only


def running_job(app: RunningApp, pid: int) -> int | None:
    with app.backend.sessions() as session:
        return session.scalar(
            select(WorkerRecord.job_id).where(
                WorkerRecord.pid == pid, WorkerRecord.state == "running"
            )
        )


def test_a_killed_worker_is_restarted_its_job_finishes_once_and_it_stops_with_the_app(tmp_path):
    app = RunningApp(tmp_path)
    try:
        first = app.worker()
        view = app.backend.service.submit_checkpoint(
            "alice", zip_dir(slow_checkpoint(tmp_path / "slow", size=512)), EntryMetadata("slow")
        )
        wait_until(lambda: running_job(app, first) == view.job_id, 300, "the job never started")
        os.kill(first, signal.SIGKILL)
        killed_at = time.monotonic()
        second = app.worker(other_than=first, timeout=300)  # restarted by the app itself
        done = app.backend.wait("alice", view.job_id, timeout=600)
        assert done.status == "finished" and app.process.poll() is None
        with app.backend.sessions() as session:
            assert session.get(Job, view.job_id).attempts == 2
            rows = session.scalar(select(func.count(Result.id)).where(Result.job_id == view.job_id))
            assert rows == 3
        log = app.log.read_text()
        assert f"evaluation worker (pid {first}) exited with -9; restarting" in log
        for routine in ("httpx", "alembic", "huey"):  # MITOSIS_LOG_LEVEL=debug shows them
            assert routine not in log, log
        shown = {w.name.rsplit(":", 1)[1]: w for w in health(app.backend.sessions)}
        assert shown[str(second)].alive
        if str(first) in shown:  # its heartbeats ended with it: silent once SILENT_AFTER_S pass
            since_kill = time.monotonic() - killed_at
            assert shown[str(first)].seconds_since_heartbeat >= since_kill - 1.5
        app.stop()
        wait_until(lambda: not alive(second), 60, f"the worker {second} outlived its app")
    finally:
        app.process.kill()  # after a failed check only: the app is gone otherwise
        app.process.wait(30)


def test_killing_the_app_leaves_no_worker(tmp_path):
    app = RunningApp(tmp_path)
    worker = app.worker()
    app.process.send_signal(signal.SIGKILL)
    app.process.wait(30)
    wait_until(lambda: not alive(worker), 60, f"the worker {worker} outlived its killed app")
