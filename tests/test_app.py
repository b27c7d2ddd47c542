from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import gradio as gr
import numpy as np
import pytest

from app import build_demo, score_public_split
from evaluation.bundle import PublicBundle
from settings import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_app_py_serves_the_page(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "MITOSIS_DATA_DIR": str(tmp_path),
        "MITOSIS_START_WORKER": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as r:
                    config = r.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.5)
        assert "Research use only, not for diagnosis" in config
        deadline = time.monotonic() + 60  # the worker it started seeds the board
        while not (tmp_path / "leaderboard.db").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (tmp_path / "leaderboard.db").exists()
    finally:
        process.terminate()
        process.wait(10)
    deadline = time.monotonic() + 20  # the worker must not outlive the app
    while worker_running_for(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not worker_running_for(tmp_path)


def worker_running_for(data_dir) -> bool:
    """Whether a worker process started with ``data_dir`` is alive."""
    pids = subprocess.run(
        ["pgrep", "-f", "evaluation.worker"], capture_output=True, text=True
    ).stdout.split()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if str(data_dir).encode() in f.read():
                    return True
        except OSError:
            continue
    return False


def test_score_handler_on_the_public_split(real_release, tmp_path):
    bundle = PublicBundle(real_release.public_dir)
    truth = bundle.public_labels()
    path = tmp_path / "p.csv"
    rows = [f"{i},{0.9 if y else 0.1}" for i, y in zip(truth.image_ids, truth.y_true, strict=True)]
    path.write_text("image_id,prob_atypical\n" + "\n".join(rows))
    table = score_public_split(real_release, str(path))
    assert table.loc[0, "n"] == 826
    assert table.loc[0, "balanced accuracy"].startswith("1.0000")
    path.write_text("image_id;prob_atypical\n")
    with pytest.raises(gr.Error, match="semicolons"):
        score_public_split(real_release, str(path))
    assert isinstance(build_demo(real_release), gr.Blocks)
    assert np.isclose(table.loc[0, "sensitivity"], 1.0)
