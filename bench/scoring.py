"""Benchmark: what one scoring costs the worker.

``python -m bench.scoring [--repeats N]`` prints JSON: per-run seconds (median, p95, min) of
``read_predictions`` + ``score_predictions`` on all three test splits, 2,000 resamples each;
and the seconds of the rank standing's paired bootstrap (``simultaneous_margin``, 2,000
resamples over both hidden splits) for boards of 10, 100 and 500 tested entries.
"""

from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np
import pandas as pd

from bench.common import machine, release_settings
from evaluation.bundle import PublicBundle
from evaluation.metrics import simultaneous_margin
from evaluation.prediction_file import read_predictions
from evaluation.scoring import load_labels, score_predictions
from evaluation.splits import TEST_SPLITS
from settings import at_least


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scoring", description=__doc__)
    parser.add_argument("--repeats", type=at_least(1), default=20)
    args = parser.parse_args()
    settings = release_settings()
    bundle = PublicBundle(settings.public_dir)
    splits = [s.name for s in TEST_SPLITS]
    labels, _ = load_labels(bundle, settings.labels_dir, splits)
    rng = np.random.default_rng(0)
    frame = bundle.manifest[["image_id"]].assign(prob_atypical=rng.random(len(bundle.manifest)))
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.6f")
    data = buffer.getvalue().encode()
    timings = []
    for _ in range(args.repeats + 1):  # the first run warms caches and is dropped
        start = time.perf_counter()
        predictions = read_predictions(data, bundle.manifest, splits=splits)
        score_predictions(predictions, labels, n_resamples=2000)
        timings.append(time.perf_counter() - start)
    timings = pd.Series(timings[1:])
    hidden = [labels[s.name].y_true for s in TEST_SPLITS if s.hidden]
    margin_seconds = {}
    for entries in (10, 100, 500):
        decisions = [
            np.where(rng.random((entries, y.size)) < 0.8, y, 1 - y).astype(np.int8) for y in hidden
        ]
        start = time.perf_counter()
        simultaneous_margin(hidden, decisions, n_resamples=2000)
        margin_seconds[entries] = round(time.perf_counter() - start, 3)
    print(
        json.dumps(
            {
                "benchmark": "validate_and_score_prediction_file",
                "rows": len(frame),
                "bytes": len(data),
                "bootstrap_resamples": 2000,
                "seconds_median": round(timings.median(), 4),
                "seconds_p95": round(timings.quantile(0.95), 4),
                "seconds_min": round(timings.min(), 4),
                "target_seconds": 0.2,
                "rank_margin_seconds_by_tested_entries": margin_seconds,
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
