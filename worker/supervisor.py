"""Keeping the app's own evaluation worker alive, and gone when the app goes.

``python app.py`` starts one ``python -m evaluation.worker`` and watches it from a thread: a
worker that exits (a crash, an out-of-memory kill, ``kill -9``) is reaped at once (no zombie),
logged, and started again after a back-off that doubles from ``MIN_BACKOFF_S`` to
``MAX_BACKOFF_S`` and resets once a worker has run for ``STABLE_AFTER_S``. Its job is not lost:
the lease expires and the reaper queues it again.

The worker is told the app's pid (``MITOSIS_PARENT_PID``): it asks the kernel for SIGKILL when
its parent dies (Linux) and watches its parent besides, so killing the app, even with
``kill -9``, leaves no worker behind. It runs at a lower OS priority (``MITOSIS_WORKER_NICE``)
with all cores but one (``MITOSIS_WORKER_THREADS``), and pauses between chunks of crops while
the Space answers users (:class:`InteractiveSignal`), so classify stays instant while it works.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from settings import REPO_ROOT

log = logging.getLogger(__name__)
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
STABLE_AFTER_S = 60.0


class WorkerSupervisor:
    """One worker process beside the app, restarted when it dies."""

    def __init__(self, command: list[str] | None = None, env: dict[str, str] | None = None):
        self.command = command or [sys.executable, "-m", "worker"]
        self.env = {**(env or os.environ), "MITOSIS_PARENT_PID": str(os.getpid())}
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._starting = threading.Lock()  # a stop never falls between the check and the start
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> WorkerSupervisor:
        """Start the worker and its watch."""
        self._thread.start()
        return self

    @property
    def pid(self) -> int | None:
        """The current worker's pid (None before the first start)."""
        return self.process.pid if self.process else None

    def _watch(self) -> None:
        # The thread that starts the worker must outlive it: Linux sends the parent-death
        # signal when this thread ends, so it loops until the app stops.
        backoff = MIN_BACKOFF_S
        while True:
            with self._starting:
                if self._stop.is_set():
                    return
                self.process = subprocess.Popen(self.command, cwd=REPO_ROOT, env=self.env)
            started = time.monotonic()
            # a restart was announced by the exit line: one line per restart beside the worker's
            # own reason, however often a worker that cannot run is tried again
            log.log(
                logging.DEBUG if self.restarts else logging.INFO,
                "evaluation worker started (pid %d)",
                self.process.pid,
            )
            code = self.process.wait()
            if self._stop.is_set():
                return
            if time.monotonic() - started >= STABLE_AFTER_S:
                backoff = MIN_BACKOFF_S
            self.restarts += 1
            log.error(
                "evaluation worker (pid %d) exited with %s; restarting in %.0f s",
                self.process.pid,
                code,
                backoff,
            )
            if self._stop.wait(backoff):
                return
            backoff = min(MAX_BACKOFF_S, backoff * 2)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching and end the worker (SIGTERM, then SIGKILL after ``timeout``)."""
        with self._starting:
            self._stop.set()
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class InteractiveSignal:
    """How the Space tells its worker that a user is waiting for an answer.

    The app touches a file for every classify request; the worker checks its time between
    chunks of crops and pauses while requests keep coming, so the CPU goes to the user first.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / ".interactive"

    def touch(self) -> None:
        """Note that a user is being answered now."""
        try:
            self.path.touch()
        except OSError:  # a read-only data folder: no signal, the worker's priority still helps
            pass

    def recent(self, within_s: float = 0.5) -> bool:
        """Whether a user was answered within the last ``within_s`` seconds."""
        try:
            return time.time() - self.path.stat().st_mtime < within_s
        except OSError:
            return False

    def wait_while_busy(self, *, at_most_s: float = 5.0) -> float:
        """Pause while users are being answered (at most ``at_most_s``); the seconds paused."""
        start = time.monotonic()
        while self.recent() and time.monotonic() - start < at_most_s:
            time.sleep(0.05)
        return time.monotonic() - start


def follow_parent(parent: int) -> None:
    """Die with the app that started this worker, however the app ends.

    On Linux the kernel sends SIGKILL when the parent goes (``PR_SET_PDEATHSIG``); a thread
    that watches the parent pid covers the moment before that call and other systems.
    """
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    log.warning("the app that started this worker (pid %d) is gone: exiting", parent)
    os._exit(0)
