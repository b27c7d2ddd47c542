from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from settings import REPO_ROOT
from store.schema import WorkerRecord
from tests.backend import Backend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningApp:
    """``python app.py`` on a tiny release, with the worker it starts."""

    def __init__(self, root, **env) -> None:
        self.backend = Backend(root, **env)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = root / "app.log"
        self.gradio_cache = root / "gradio-cache"
        self.process = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=REPO_ROOT,
            env={
                **self.backend.env,
                "GRADIO_SERVER_PORT": str(self.port),
                "GRADIO_TEMP_DIR": str(self.gradio_cache),
                "MITOSIS_START_WORKER": "1",
            },
            stdout=open(self.log, "w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(self.url + "config", timeout=2).read()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError((root / "app.log").read_text()[-3000:]) from None
                time.sleep(0.3)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)

    def worker(self, timeout: float = 120, other_than: int | None = None) -> int:
        """The pid of the app's live worker, once it has registered and sent a heartbeat."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.backend.sessions() as session:
                pids = session.scalars(
                    select(WorkerRecord.pid).where(WorkerRecord.state != "stopped")
                ).all()
            fresh = [p for p in pids if p != other_than and alive(p)]
            if fresh:
                return fresh[0]
            time.sleep(0.1)
        raise TimeoutError(f"no worker registered; app log:\n{self.log.read_text()[-3000:]}")


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # one local user makes every submission of a module's tests: more than a day's quota of 3
    running = RunningApp(tmp_path_factory.mktemp("app"), MITOSIS_HIDDEN_QUOTA="20")
    yield running
    running.stop()
