"""A test run's processes end with it even when the run itself is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from settings import REPO_ROOT
from tests import reaper

LEFT_BEHIND = """
import os, subprocess, sys, time

def test_starts_a_worker_and_hangs(tmp_path):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (tmp_path.parent.parent / "started").write_text(os.environ["MITOSIS_TEST_RUN"])
    time.sleep(600)
"""


def wait_for(condition, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_a_killed_run_leaves_no_process(tmp_path):
    (tmp_path / "test_hang.py").write_text(LEFT_BEHIND)
    (tmp_path / "base").mkdir()
    environment = {k: v for k, v in os.environ.items() if k != reaper.MARK}
    run = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from tests import reaper; reaper.start();"
            "import pytest; sys.exit(pytest.main(sys.argv[1:]))",
            str(tmp_path / "test_hang.py"),
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(tmp_path / "base" / "run"),
            "--rootdir",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        env=environment,
    )
    assert wait_for((tmp_path / "base" / "started").exists)
    marked = reaper.marked_processes((tmp_path / "base" / "started").read_text())
    assert len(marked) == 1  # the hanging worker (the run itself is not counted)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert wait_for(lambda: not _alive(marked[0]))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
