from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from settings import REPO_ROOT
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
        self.process = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=REPO_ROOT,
            env={
                **self.backend.env,
                "GRADIO_SERVER_PORT": str(self.port),
                "MITOSIS_START_WORKER": "1",
            },
            stdout=open(root / "app.log", "w"),
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


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    running = RunningApp(tmp_path_factory.mktemp("app"))
    yield running
    running.stop()
