"""The H&E-stain note's limits against every crop of the public release (test sets included).

The limits come from AMi-Br train alone; the other crops are read once here, to show that
honest crops of every set are never told their colours are unlike a stain.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evaluation.source import scan_source
from evaluation.splits import TRAIN_SPLIT
from models.imaging import (
    MAX_OFF_STAIN_SHARE,
    MIN_MEAN_SATURATION,
    colour_sample,
    stain_measures,
    to_rgb,
    unlike_stain,
)

pytestmark = pytest.mark.slow  # all 6,573 crops of the source


def test_no_crop_of_the_benchmark_gets_the_stain_note(source_dir):
    crops = scan_source(source_dir)
    measures, flagged = {}, []
    for crop in crops:
        with Image.open(source_dir / crop.path) as image:
            sample = to_rgb(colour_sample(image))  # what image_note judges
        measures[crop.path] = stain_measures(sample)
        if unlike_stain(sample):
            flagged.append(crop.path)
    assert len(measures) == 6573 and flagged == []
    train = np.array([measures[c.path] for c in crops if c.split == TRAIN_SPLIT.name])
    assert len(train) == 2894
    # the numbers models/imaging.py quotes, and the margins its limits keep from them
    assert round(train[:, 0].max(), 4) == 0.0056 and MAX_OFF_STAIN_SHARE > 5 * train[:, 0].max()
    assert round(train[:, 1].min(), 3) == 0.095 and MIN_MEAN_SATURATION < train[:, 1].min() / 1.5
