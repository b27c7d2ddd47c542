"""Helpers shared by the benchmarks: machine description and a release to run against."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from evaluation.bundle import MANIFEST_CSV
from evaluation.release import build_release
from settings import REPO_ROOT, Settings


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }


def release_settings() -> Settings:
    """The configured release, built into a temporary folder when it does not exist yet."""
    settings = Settings.from_env()
    if (settings.public_dir / MANIFEST_CSV).is_file():
        return settings
    root = Path(tempfile.mkdtemp(prefix="bench-release-"))
    settings = Settings.from_env(
        {**os.environ, "MITOSIS_DATA_DIR": str(root), "MITOSIS_LABELS_DIR": str(root / "private")}
    )
    build_release(settings.source_dir, settings.public_dir, settings.labels_dir)
    return settings


def free_port() -> int:
    """A TCP port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(release: Settings, **env: str) -> tuple[subprocess.Popen, str]:
    """``python app.py`` on ``release`` at a free port, with ``env`` on top; returns it, its URL."""
    port = free_port()
    app = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "GRADIO_SERVER_PORT": str(port),
            "MITOSIS_DATA_DIR": str(release.data_dir),
            "MITOSIS_LABELS_DIR": str(release.labels_dir),
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return app, f"http://127.0.0.1:{port}/"
