"""A real backend for tests: a tiny release, a SQLite store and real worker processes."""

from __future__ import annotations

import atexit
import dataclasses
import functools
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import func, select

from evaluation import bundle
from evaluation.release import build_release
from models import create_model, save_checkpoint
from models._registry import get_model_cfg
from models.checkpoint_config import make_config
from settings import REPO_ROOT, Settings
from store.engine import open_store
from store.schema import OPEN_STATES, Job
from submissions.intake import Submissions
from tests.conftest import TINY_COUNTS, make_tiny_source
from tests.models.conftest import tiny_checkpoint


def zip_dir(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(Path(directory).iterdir()):
            archive.write(path, path.name)
    return buffer.getvalue()


def slow_checkpoint(directory: Path, size: int = 768) -> Path:
    """A ResNet-18 that sees crops resized to ``size`` px: seconds per test split."""
    cfg = dataclasses.replace(get_model_cfg("resnet18_128"), input_size=size)
    model = create_model("resnet18_128")
    config = make_config(cfg, "end_to_end", num_features=model.num_features)
    return save_checkpoint(model, directory, config)


def wait_until(condition, timeout: float, what: str) -> None:
    """Wait for an event (timeouts generous for a loaded machine), never sleep and hope."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


@functools.cache
def shared_default_checkpoint() -> Path:
    """The tiny stand-in for the shipped model, written once per test process (45 MB).

    Every backend reads it and none writes it; it goes with the process's temporary folder.
    """
    folder = Path(tempfile.mkdtemp(prefix="mitosis-default-model-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return tiny_checkpoint(folder / "default-model")


class Backend:
    """Settings, store, submission service and worker processes on a tiny release."""

    def __init__(self, root: Path, **env: str) -> None:
        source = make_tiny_source(root / "source")
        default = shared_default_checkpoint()
        self.env = {
            **os.environ,
            "MITOSIS_DATA_DIR": str(root / "data"),
            "MITOSIS_DEFAULT_CHECKPOINT": str(default),
            "MITOSIS_LEASE_S": "3",
            "MITOSIS_BOOTSTRAP_RESAMPLES": "1000",
            "HF_HUB_OFFLINE": "1",
            **env,
        }
        self.settings = Settings.from_env(self.env)
        build_release(
            source, self.settings.public_dir, self.settings.labels_dir, expected=TINY_COUNTS
        )
        self.sessions = open_store(self.settings.database_url)
        self.service = Submissions(self.settings, self.sessions)
        self.workers: list[subprocess.Popen] = []
        self.manifest = pd.read_csv(self.settings.public_dir / "manifest.csv")

    def start_worker(self) -> subprocess.Popen:
        log = open(Path(self.settings.data_dir) / f"worker{len(self.workers)}.log", "w")
        worker = subprocess.Popen(
            [sys.executable, "-m", "evaluation.worker"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(worker)
        return worker

    def predictions(self, seed: int) -> bytes:
        rng = np.random.default_rng(seed)
        frame = self.manifest[["image_id"]].assign(prob_atypical=rng.random(len(self.manifest)))
        return frame.to_csv(index=False).encode()

    def wait(self, user: str, job_id: int, timeout: float = 120, until=("finished", "failed")):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            view = self.service.status(user, job_id)
            if view.status in until:
                return view
            time.sleep(0.05)
        raise TimeoutError(f"job {job_id} is still {view.status}")

    def wait_idle(self, timeout: float = 120) -> None:
        """Until no job is queued or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.sessions() as session:
                busy = session.scalar(select(func.count(Job.id)).where(Job.status.in_(OPEN_STATES)))
            if not busy:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{busy} job(s) still open")

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)


def correct_a_label(labels_dir, which: int = 0) -> str:
    """Flip AtNorM-MD label ``which`` in the private store, as a corrected label set would."""
    labels = pd.read_csv(labels_dir / bundle.PRIVATE_LABELS_CSV, dtype=str)
    first = labels.index[labels["split"] == "atnorm_md"][which]
    labels.loc[first, "label"] = (
        "normal" if labels.loc[first, "label"] == "atypical" else "atypical"
    )
    labels.to_csv(labels_dir / bundle.PRIVATE_LABELS_CSV, index=False)
    info = json.loads((labels_dir / bundle.RELEASE_JSON).read_text())
    info["label_set_hash"] = bundle.label_set_hash(
        labels[["image_id", "split", "label"]].itertuples(False)
    )
    (labels_dir / bundle.RELEASE_JSON).write_text(json.dumps(info))
    return info["label_set_hash"]
