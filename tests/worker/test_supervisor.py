"""The app's worker supervisor on its own: what a worker that cannot run costs the log."""

from __future__ import annotations

import logging
import sys

from tests.backend import wait_until
from worker import supervisor
from worker.supervisor import WorkerSupervisor


def test_a_worker_that_cannot_run_costs_one_log_line_per_restart(monkeypatch, caplog):
    monkeypatch.setattr(supervisor, "MIN_BACKOFF_S", 0.05)
    caplog.set_level(logging.DEBUG, logger="worker.supervisor")
    cannot_run = [sys.executable, "-c", "import sys; sys.exit('error: no release')"]
    watch = WorkerSupervisor(command=cannot_run).start()

    def said(level):
        return [r for r in caplog.records if r.name == "worker.supervisor" and level(r.levelno)]

    def shown():
        return said(lambda level: level >= logging.INFO)

    try:
        wait_until(lambda: len(shown()) >= 4, 120, "the worker was not restarted three times")
    finally:
        watch.stop()
    first, *exits = shown()[:4]
    assert first.levelname == "INFO" and "started" in first.getMessage()
    for record in exits:  # the exit line says what happens next; the new start is debug only
        assert record.levelname == "ERROR"
        assert "exited with 1; restarting in" in record.getMessage()
    started = [r.getMessage() for r in said(lambda level: level == logging.DEBUG)]  # restarts
    assert len(started) >= 2 and all(m.startswith("evaluation worker started") for m in started)
