"""The training split as models see it: a folder of crops with labels and slide groups.

``python -m evaluation.release`` writes this folder into the public bundle from AMi-Br train
only; the training code reads nothing else. Test crops and hidden labels live in other folders
that no function of this package opens, which is what keeps held-out data out of training,
model selection and thresholds by construction.

Layout::

    labels.csv        image,slide,label      label in {atypical, normal}
    crops/<image>     128x128 RGB PNG
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

LABELS_CSV = "labels.csv"
CROPS_DIR = "crops"
COLUMNS = ("image", "slide", "label")


@dataclass(frozen=True)
class TrainSet:
    """Decoded training crops.

    Attributes:
        images: uint8 array (N, H, W, 3).
        y: int8 array (N,), atypical = 1.
        groups: slide of each crop, for slide-grouped cross-validation.
        names: file name of each crop.
    """

    images: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    names: np.ndarray


def read_train_labels(train_dir: Path) -> pd.DataFrame:
    """The ``labels.csv`` of a training folder, checked for its columns."""
    path = Path(train_dir) / LABELS_CSV
    if not path.is_file():
        raise FileNotFoundError(
            f"No training split at {train_dir} (no {LABELS_CSV}). Build the release with "
            "`python -m evaluation.release`."
        )
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}.")
    return frame


def load_train_set(train_dir: Path) -> TrainSet:
    """Decode every training crop into one uint8 array."""
    frame = read_train_labels(train_dir)
    crops = Path(train_dir) / CROPS_DIR
    images = np.stack(
        [np.asarray(Image.open(crops / name).convert("RGB")) for name in frame["image"]]
    )
    return TrainSet(
        images=images,
        y=(frame["label"] == "atypical").to_numpy(np.int8),
        groups=frame["slide"].to_numpy(),
        names=frame["image"].to_numpy(),
    )
