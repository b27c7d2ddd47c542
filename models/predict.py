"""``python -m models.predict [--checkpoint DIR] [--tta] [--format F] IMAGE|FOLDER...``: a CSV.

Prints ``image,prob_atypical,label`` for every image (a folder stands for the PNG, JPEG, TIFF
and WebP files in it, in name order), or nothing and an error naming every image that cannot
be read (exit status 2). Memory stays flat for any number of images; on a terminal, stderr
counts the images answered. ``--format submission`` prints ``image_id,prob_atypical,label``
with each file's name without its extension as ``image_id``: run on the unzipped public test
crops, that is a prediction file the leaderboard accepts. The default checkpoint is the
shipped model.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from fileio import write_predictions
from models.errors import ModelError
from models.imaging import IMAGE_SUFFIXES
from models.predictor import Predictor, predictions_table
from settings import at_least, command_settings


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    settings = command_settings("python -m models.predict")
    parser = argparse.ArgumentParser(
        prog="python -m models.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "images", nargs="+", type=Path, help="PNG, JPEG, TIFF or WebP crops, or folders of them"
    )
    parser.add_argument(
        "--format",
        choices=["table", "submission"],
        default="table",
        help="table: image,prob_atypical,label; submission: image_id,prob_atypical,label",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=settings.default_checkpoint,
        help="checkpoint folder or .zip (default: the shipped model)",
    )
    parser.add_argument("--tta", action="store_true", help="average over 8 dihedral views")
    parser.add_argument("--batch-size", type=at_least(1), default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args(argv)
    images = [path for given in args.images for path in _expand(given)]
    if not images:
        folders = ", ".join(str(p) for p in args.images)
        print(
            f"error: no image files (.png, .jpg, .tif, .webp) in {folders}. If you unzipped "
            "test_crops.zip into a folder of its own, the crops are in its test_crops/ "
            "subfolder.",
            file=sys.stderr,
        )
        return 2
    try:
        predictor = Predictor(args.checkpoint, device=args.device, batch_size=args.batch_size)
        predictions = predictor.predict(images, tta=args.tta, progress=_progress(len(images)))
    except (ModelError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    broken = sum(not math.isfinite(p.prob_atypical) for p in predictions)
    if broken:  # a blank probability labelled "normal" would read as an answer
        print(
            f"error: the checkpoint gave no finite probability (NaN) for {broken} of "
            f"{len(images)} images: its weights or outputs are broken.",
            file=sys.stderr,
        )
        return 2
    if args.format == "submission":
        table = predictions_table([p.stem for p in images], predictions)
        write_predictions(table.rename(columns={"image": "image_id"}), sys.stdout)
    else:
        table = predictions_table([str(p) for p in images], predictions)
        table.to_csv(sys.stdout, index=False, float_format="%.6f", lineterminator="\n")
    return 0


def _progress(total: int) -> Callable[[int], None] | None:
    """A counter on stderr when it is a terminal (a redirected stderr gets only errors)."""
    if not sys.stderr.isatty():
        return None

    def show(done: int) -> None:
        end = "\n" if done == total else ""
        print(f"\r{done:,} of {total:,} images answered", end=end, file=sys.stderr, flush=True)

    return show


def _expand(path: Path) -> list[Path]:
    """A folder's image files in name order; any other path as given."""
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


if __name__ == "__main__":
    sys.exit(main())
