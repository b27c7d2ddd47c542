"""``python -m evaluation.score PREDICTIONS.csv [--split NAME ...] [--json]``: score a file.

By default every split whose labels are available is scored: all three test splits where the
private label store exists, otherwise AMi-Br test alone (its labels are public); either way the
file must have a row for every test crop, as the server requires. ``--split`` scores and checks
only the splits it names. Naming a hidden split without the private store is an error. Exit
status: 0 scored, 2 invalid input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evaluation.bundle import PublicBundle
from evaluation.errors import EvaluationError
from evaluation.prediction_file import read_predictions
from evaluation.scoring import (
    SCORER_VERSION,
    default_splits,
    format_table,
    load_labels,
    score_predictions,
)
from evaluation.splits import AMIBR_TEST, TEST_SPLITS
from settings import command_settings


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    settings = command_settings("python -m evaluation.score")
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.score",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("predictions", type=Path, help="CSV: image_id,prob_atypical[,label]")
    parser.add_argument(
        "--split",
        action="append",
        choices=[s.name for s in TEST_SPLITS],
        help="score only this split (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if not args.predictions.is_file():
        what = "a folder" if args.predictions.is_dir() else "not there"
        print(f"error: {args.predictions} is {what}; give the prediction CSV.", file=sys.stderr)
        return 2
    try:
        splits = args.split or default_splits(settings.labels_dir)
        bundle = PublicBundle(settings.public_dir)
        labels, label_hash = load_labels(bundle, settings.labels_dir, splits)
        predictions = read_predictions(
            args.predictions,
            bundle.manifest,
            splits=args.split,  # by default every test split must be complete
            max_bytes=settings.max_prediction_file_bytes,
        )
        scores = score_predictions(predictions, labels, n_resamples=settings.bootstrap_resamples)
    except (EvaluationError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.split and splits == [AMIBR_TEST.name]:
        print(
            "note: the file has a row for every test crop; only AMi-Br test is scored: no "
            f"private label store at {settings.labels_dir}",
            file=sys.stderr,
        )
    if args.json:
        print(
            json.dumps(
                {
                    "scorer_version": SCORER_VERSION,
                    "label_set_hash": label_hash,
                    "splits": {k: v.to_dict() for k, v in scores.items()},
                },
                indent=2,
            )
        )
    else:
        print(format_table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
