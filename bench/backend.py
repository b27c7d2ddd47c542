"""Benchmarks of the evaluation backend: ``python -m bench.backend`` prints JSON.

1. The shipped checkpoint on the 2,853 hidden crops on this CPU (crops decoded from PNG, as
   a worker's first job does), and the whole job of a real worker process (every test crop,
   2,853 hidden + 826 AMi-Br test, scoring and writing included).
2. Submission -> result of a prediction file with an idle worker (median and max of 10).
3. Building the board (ranking + ties with #1) from 10,000 results (3,334 entries x 3 splits).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import select

from bench.common import machine, release_settings
from evaluation.bundle import PublicBundle
from evaluation.disclosure import release_split
from evaluation.run_checkpoint import predict_splits
from evaluation.splits import HIDDEN_SPLITS
from leaderboard.board import build_board
from models.predictor import Predictor
from settings import REPO_ROOT, Settings
from store.engine import open_store
from store.entry import EntryMetadata
from store.schema import Job, JobStatus, Result, Submission
from submissions.intake import Submissions


def _wait(sessions, job_id: int, timeout: float = 600) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        with sessions() as session:
            if session.get(Job, job_id).status in (JobStatus.FINISHED, JobStatus.FAILED):
                return time.perf_counter() - start
        time.sleep(0.01)
    raise TimeoutError(job_id)


def _worker_numbers(release: Settings, root: Path) -> dict:
    root.mkdir(parents=True)
    (root / "public").symlink_to(release.public_dir)
    env = {
        **os.environ,
        "MITOSIS_DATA_DIR": str(root),
        "MITOSIS_LABELS_DIR": str(release.labels_dir),
    }
    settings = Settings.from_env(env)
    sessions = open_store(settings.database_url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "evaluation.worker"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:  # the worker seeds the shipped model's job when it starts
            with sessions() as session:
                job = session.scalar(select(Job).where(Job.counts_toward_quota.is_(False)))
            if job and job.started_at:
                break
            time.sleep(0.05)
        _wait(sessions, job.id)
        with sessions() as session:
            job = session.get(Job, job.id)
            checkpoint_s = (job.finished_at - job.started_at).total_seconds()
        service = Submissions(settings, sessions)
        manifest = pd.read_csv(settings.public_dir / "manifest.csv")
        latencies = []
        for seed in range(10):
            prob = np.random.default_rng(seed).random(len(manifest))
            data = manifest[["image_id"]].assign(prob_atypical=prob).to_csv(index=False)
            start = time.perf_counter()
            view = service.submit_predictions(
                f"bench{seed}", data.encode(), EntryMetadata(f"bench {seed}")
            )
            _wait(sessions, view.job_id)
            latencies.append(time.perf_counter() - start)
    finally:
        worker.kill()
        worker.wait()
    return {
        "checkpoint_job_seconds": round(checkpoint_s, 2),
        "checkpoint_target_seconds": 60,
        "prediction_file_to_result_seconds_median": round(float(np.median(latencies)), 3),
        "prediction_file_to_result_seconds_max": round(float(np.max(latencies)), 3),
        "prediction_file_target_seconds": 1.0,
    }


def _board_numbers(release: Settings, root: Path, n_entries: int = 3334) -> dict:
    sessions = open_store(f"sqlite:///{root / 'board.db'}")
    manifest = pd.read_csv(release.public_dir / "manifest.csv")
    sizes = manifest["split"].value_counts().to_dict()
    rng = np.random.default_rng(0)
    with sessions.begin() as session:
        for i in range(n_entries):
            submission = Submission(
                sha256=f"{i:064x}",
                kind="predictions",
                user=f"u{i}",
                meta=EntryMetadata(f"entry {i}", team=f"team {i % 500}").to_dict(),
            )
            session.add(submission)
            session.flush()
            for split, n in sizes.items():
                ba = float(rng.uniform(0.5, 0.8))
                metrics = {
                    "ba": ba,
                    "ba_low": ba - 0.03,
                    "ba_high": ba + 0.03,
                    "auroc": ba + 0.05,
                    "n": n,
                    "n_atypical": n // 5,
                }
                session.add(
                    Result(
                        submission_id=submission.id,
                        split=split,
                        **metrics,
                        decisions=np.packbits(rng.random(n) < 0.2).tobytes(),
                        published=release_split(split, metrics),
                    )
                )
    start = time.perf_counter()
    board = build_board(sessions)
    seconds = time.perf_counter() - start
    return {
        "board_results": n_entries * 3,
        "board_seconds": round(seconds, 3),
        "board_top_group": sum(bool(e.top_group) for e in board),
        "board_target_seconds": 1.0,
    }


def _hidden_crops_seconds(release: Settings) -> dict:
    predictor = Predictor(release.default_checkpoint, device="cpu")
    bundle = PublicBundle(release.public_dir)
    start = time.perf_counter()
    frame = predict_splits(predictor, bundle, [s.name for s in HIDDEN_SPLITS])
    return {
        "checkpoint_hidden_crops": len(frame),
        "checkpoint_hidden_crops_seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    release = release_settings()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result = {
            "benchmark": "backend",
            **_hidden_crops_seconds(release),
            **_worker_numbers(release, root / "worker"),
            **_board_numbers(release, root),
            "machine": machine(),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
