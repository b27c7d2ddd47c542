"""``python -m models.predict [--checkpoint DIR] [--tta] IMAGE...``: CSV on standard output.

Prints ``image,prob_atypical,label`` for every image, or nothing and an error naming the first
image that cannot be read (exit status 2). The default checkpoint is the shipped model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.errors import ModelError
from models.predictor import Predictor, predictions_table
from settings import Settings


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(
        prog="python -m models.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", type=Path, help="PNG, JPEG, TIFF or WebP crops")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=settings.default_checkpoint,
        help="checkpoint folder or .zip (default: the shipped model)",
    )
    parser.add_argument("--tta", action="store_true", help="average over 8 dihedral views")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args(argv)
    try:
        predictor = Predictor(args.checkpoint, device=args.device, batch_size=args.batch_size)
        predictions = predictor.predict(args.images, tta=args.tta)
    except (ModelError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = predictions_table([str(p) for p in args.images], predictions)
    table.to_csv(sys.stdout, index=False, float_format="%.6f", lineterminator="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
