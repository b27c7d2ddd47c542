"""A checkpoint's efficiency for its card: parameters and ms per crop, and how measured.

How: the device, and for a CPU the load while it was measured.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from sqlalchemy.orm import sessionmaker

from evaluation.bundle import PublicBundle
from models.imaging import load_crop
from models.predictor import Predictor
from store.schema import Submission
from worker.supervisor import InteractiveSignal

log = logging.getLogger("worker")

EFFICIENCY_CROPS = 4  # one forward pass of this many test crops, measured 3 times


def record_efficiency(
    sessions: sessionmaker,
    submission_id: int,
    predictor: Predictor,
    bundle: PublicBundle,
    interactive: InteractiveSignal,
) -> float:
    """Parameters and compute per crop (``Predictor.ms_per_crop``) with the device and load.

    A figure for the board, never a reason to fail the job: a failure is logged. Returns the
    seconds it paused for the Space's users (not the model's time).
    """
    count = min(EFFICIENCY_CROPS, predictor.batch_size)
    paths = sorted(bundle.test_crops_dir.glob("*.png"))[:count]
    paused = interactive.wait_while_busy()  # a user of the Space goes first
    try:
        crops = np.stack([load_crop(path) for path in paths])
        ms = predictor.ms_per_crop(crops)
    except Exception:
        log.exception("efficiency of submission %d", submission_id)
        return paused
    with sessions.begin() as session:
        submission = session.get(Submission, submission_id)
        submission.parameters = predictor.parameters
        submission.ms_per_crop = round(ms, 2)
        submission.measured_on = _measured_on(predictor, len(crops))
    return paused


def _measured_on(predictor: Predictor, crops: int) -> str:
    """How an efficiency figure was measured, and the machine's load then (for the card)."""
    if predictor.device.type == "cuda":
        return f"{device_name()}, wall time, batch {crops}"
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    return f"cpu, one thread's CPU time, batch {crops}, load {load:.1f} per core"


def device_name() -> str:
    """This machine's device as the workers table and the card show it."""
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"
