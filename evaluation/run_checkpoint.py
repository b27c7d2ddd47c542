"""Running checkpoints over test splits: ``python -m evaluation.run_checkpoint CHECKPOINT...``.

Decodes each split's crops once (cached as one uint8 array per split under
``MITOSIS_DATA_DIR/cache``), runs the Predictor, writes a prediction file if asked and scores it
like any submission. With several checkpoints (the paper protocol's fold models) it reports
every metric per checkpoint and the mean ± std of balanced accuracy over them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from evaluation.bundle import PublicBundle
from evaluation.errors import EvaluationError, ModelRunFailed, TimeLimitExceeded
from evaluation.prediction_file import Predictions
from evaluation.scoring import default_splits, format_table, load_labels, score_predictions
from evaluation.splits import TEST_SPLITS
from fileio import PUBLIC, atomic_write, write_predictions
from models.errors import ModelError
from models.inference import crops_within
from models.predictor import Predictor
from settings import command_settings

CHUNK = {"cpu": 64, "cuda": 4096}  # at most this many crops between progress reports
CHUNK_SECONDS = 2.0  # a chunk takes about this long: the time limit and the pauses act within it


OUT_OF_MEMORY = ("can't allocate memory", "out of memory")


def load_split_crops(bundle: PublicBundle, split: str, cache_dir: Path | None) -> np.ndarray:
    """uint8 crops (N, 128, 128, 3) of one test split, in manifest order, cached on disk."""
    ids = bundle.split_ids(split)
    key = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    cached = cache_dir / f"{split}-{key}.npy" if cache_dir else None
    if cached:
        try:
            crops = np.load(cached, allow_pickle=False)
            if crops.shape == (len(ids), 128, 128, 3):
                return crops
        except (OSError, ValueError, EOFError):  # absent or unreadable: decode again
            pass
    crops = np.stack(
        [np.asarray(Image.open(bundle.test_crops_dir / f"{i}.png").convert("RGB")) for i in ids]
    )
    if cached:
        atomic_write(cached, lambda tmp: np.save(tmp, crops))
    return crops


@contextmanager
def model_memory():
    """Memory a checkpoint cannot get, loading or running it, is its own failure.

    Raised as ``ModelRunFailed``: torch's allocators raise ``RuntimeError`` (the CPU's "can't
    allocate memory", CUDA's "out of memory"), Python ``MemoryError``.
    """
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not isinstance(e, MemoryError) and not any(m in str(e) for m in OUT_OF_MEMORY):
            raise
        raise ModelRunFailed(
            "The checkpoint ran out of memory on the test crops; submit a smaller model or a "
            "prediction file."
        ) from e


def predict_splits(
    predictor: Predictor,
    bundle: PublicBundle,
    splits: list[str],
    *,
    tta: bool = False,
    cache_dir: Path | None = None,
    deadline: float | None = None,
    before_chunk: Callable[[int, int], float | None] | None = None,
    memory_budget: int | None = None,
) -> pd.DataFrame:
    """``image_id,prob_atypical,label`` for every crop of ``splits``.

    ``deadline`` (a ``time.monotonic()`` value) stops the run with ``TimeLimitExceeded``;
    ``before_chunk(done, total)`` is called before each chunk of crops (progress reports, and
    the worker's pause while the Space answers a user) and returns the seconds it paused, if
    any, which move the deadline: a pause is not the model's time. Chunks are sized from the speed
    measured on the chunk before (the first is one crop) to take about ``CHUNK_SECONDS``, so
    the deadline is kept within a few seconds whatever one crop costs; on a CPU, a forward
    pass holds at most the crops that fit ``memory_budget`` bytes (``crops_within``).
    """
    if memory_budget is not None and predictor.device.type == "cpu":
        fits = crops_within(memory_budget, predictor.checkpoint.input_size)
        predictor.batch_size = min(predictor.batch_size, fits)
    most = CHUNK.get(predictor.device.type, CHUNK["cpu"])
    total = sum(len(bundle.split_ids(split)) for split in splits)
    done, frames, chunk = 0, [], 1
    for split in splits:
        crops = load_split_crops(bundle, split, cache_dir)
        chunks, start = [], 0
        while start < len(crops):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeLimitExceeded(
                    "The checkpoint did not finish the test crops within the time limit "
                    "(MITOSIS_JOB_TIME_LIMIT_S); submit a smaller model or a prediction file."
                )
            if before_chunk is not None and (paused := before_chunk(done, total)):
                deadline = None if deadline is None else deadline + paused
            began = time.monotonic()
            with model_memory():
                chunks.append(predictor.predict_array(crops[start : start + chunk], tta=tta))
            per_crop = max(time.monotonic() - began, 1e-6) / len(chunks[-1])
            start += len(chunks[-1])
            done += len(chunks[-1])
            chunk = int(min(most, max(1, CHUNK_SECONDS / per_crop)))
        prob = np.concatenate(chunks)
        if not np.isfinite(prob).all():
            raise ModelRunFailed(
                f"The checkpoint gave {int((~np.isfinite(prob)).sum())} non-finite "
                f"probabilities on {split} (NaN weights or outputs); `python -m models.predict` "
                "shows it on any crop."
            )
        frames.append(
            pd.DataFrame(
                {
                    "image_id": bundle.split_ids(split),
                    "prob_atypical": prob,
                    "label": np.where(prob >= predictor.threshold, "atypical", "normal"),
                }
            )
        )
    if before_chunk is not None:
        before_chunk(done, total)
    return pd.concat(frames, ignore_index=True)


def as_predictions(frame: pd.DataFrame) -> Predictions:
    """A prediction frame from the Predictor in the scorer's form (decisions from ``label``)."""
    return Predictions(
        frame["image_id"].to_numpy(str),
        frame["prob_atypical"].to_numpy(float),
        (frame["label"] == "atypical").to_numpy(np.int8),
        has_labels=True,
    )


def log_reading(log: Path, checkpoints: list[Path], reason: str, label_hash: str, summary) -> None:
    """Append one reading of the test sets to ``log`` (a JSON list; a model card counts them)."""
    readings = json.loads(log.read_text()) if log.is_file() else []
    weights = [
        hashlib.sha256((Path(p) / "model.safetensors").read_bytes()).hexdigest()
        if (Path(p) / "model.safetensors").is_file()
        else None
        for p in checkpoints
    ]
    readings.append(
        {
            "reading": len(readings) + 1,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "reason": reason.strip(),
            "checkpoints": [str(p) for p in checkpoints],
            "weights_sha256": weights,
            "label_set_hash": label_hash,
            "ba": summary,
        }
    )
    atomic_write(
        log, lambda tmp: tmp.write_text(json.dumps(readings, indent=1) + "\n"), mode=PUBLIC
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    settings = command_settings("python -m evaluation.run_checkpoint")
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.run_checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint folders or zips")
    parser.add_argument(
        "--split",
        action="append",
        choices=[s.name for s in TEST_SPLITS],
        help="score only this split (repeatable)",
    )
    parser.add_argument("--tta", action="store_true", help="8-fold dihedral test-time augmentation")
    parser.add_argument(
        "--predictions-out", type=Path, help="write the (single) checkpoint's prediction file here"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--log-reading",
        type=Path,
        help="append this reading of the test sets (when, why, what, the BAs) to a JSON log, "
        "e.g. models/default-evidence/test_readings.json",
    )
    parser.add_argument(
        "--reason", default="", help="why the test sets are read (with --log-reading)"
    )
    args = parser.parse_args(argv)
    if args.predictions_out and len(args.checkpoints) > 1:
        parser.error("--predictions-out takes one checkpoint")
    if args.log_reading and not args.reason.strip():
        parser.error("--log-reading needs --reason: every reading of the test sets says why")
    try:
        splits = args.split or default_splits(settings.labels_dir)
        bundle = PublicBundle(settings.public_dir)
        labels, label_hash = load_labels(bundle, settings.labels_dir, splits)
        report = {}
        for path in args.checkpoints:
            frame = predict_splits(
                Predictor(path, device=args.device),
                bundle,
                splits,
                tta=args.tta,
                cache_dir=settings.data_dir / "cache",
            )
            if args.predictions_out:
                write_predictions(frame, args.predictions_out)
                frame = pd.read_csv(args.predictions_out, dtype={"image_id": str})
            report[str(path)] = score_predictions(
                as_predictions(frame), labels, n_resamples=settings.bootstrap_resamples
            )
    except (EvaluationError, ModelError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {
        split: {"ba_mean": float(np.mean(v)), "ba_std": float(np.std(v))}
        for split, v in {
            s: [r[s].balanced_accuracy.estimate for r in report.values()] for s in splits
        }.items()
    }
    if args.log_reading:
        log_reading(args.log_reading, args.checkpoints, args.reason, label_hash, summary)
    if args.json:
        print(
            json.dumps(
                {
                    "label_set_hash": label_hash,
                    "tta": args.tta,
                    "summary": summary,
                    "checkpoints": {
                        k: {s: v.to_dict() for s, v in r.items()} for k, r in report.items()
                    },
                },
                indent=2,
            )
        )
        return 0
    for path, scores in report.items():
        print(f"{path}\n{format_table(scores)}\n")
    if len(report) > 1:
        for split, stats in summary.items():
            print(
                f"{split}: BA {stats['ba_mean']:.4f} ± {stats['ba_std']:.4f} "
                f"over {len(report)} checkpoints"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
