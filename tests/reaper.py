"""Processes a test run starts end with it, however it ends (a pass, Ctrl-C, SIGTERM, kill -9).

The run marks its environment (``MITOSIS_TEST_RUN``), which every process it starts inherits:
apps, their workers, workers started by tests, database and queue servers, the browser. At the
end of the session every marked process is killed; and a watchdog, started in its own session
without the mark, does the same the moment the test run's process is gone, so no worker is left
at 99 % CPU after an interrupted run. Marked processes are found through ``/proc/*/environ``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

MARK = "MITOSIS_TEST_RUN"


def marked_processes(run: str) -> list[int]:
    """Pids of the processes whose environment carries ``run``'s mark (this one excluded)."""
    needle = f"{MARK}={run}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_marked(run: str) -> int:
    """SIGKILL every process of ``run``; how many there were."""
    pids = marked_processes(run)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return len(pids)


def start(run: str | None = None) -> str:
    """Mark this process's environment and start the watchdog; the run's mark."""
    run = run or uuid.uuid4().hex
    os.environ[MARK] = run
    environment = {k: v for k, v in os.environ.items() if k != MARK}
    subprocess.Popen(
        [sys.executable, __file__, str(os.getpid()), run],
        env=environment,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return run


def _alive(pid: int, started: str) -> bool:
    """Whether ``pid`` is still the process that started at ``started`` and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and fields[19] == started  # state; start time (a reused pid differs)


def _watch(parent: int, run: str) -> None:
    started = Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[19]
    while _alive(parent, started):
        time.sleep(0.5)
    while kill_marked(run):  # a dying process may still start one
        time.sleep(0.2)


if __name__ == "__main__":
    _watch(int(sys.argv[1]), sys.argv[2])
