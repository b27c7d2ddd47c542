"""Benchmark the Predictor and training throughput: ``python -m bench.predict [--device cuda]``.

Prints JSON: single-crop latency p50/p95 (ms) without and with 8-fold TTA, batch-64 throughput
(crops/s) and training throughput (images/s) of the checkpoint's recipe, on real training
crops (the release's, or a packed ``--crops FILE.npz``) of AMi-Br train.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import machine
from models.predictor import Predictor
from settings import at_least, command_settings
from training.fit import Recipe, fit
from training.trainset import load_train_set


def _latency(predictor: Predictor, crops: np.ndarray, *, tta: bool, repeats: int) -> dict:
    for crop in crops[:5]:
        predictor.predict_array(crop[None], tta=tta)
    times = []
    for crop in crops[:repeats]:
        start = time.perf_counter()
        predictor.predict_array(crop[None], tta=tta)
        times.append((time.perf_counter() - start) * 1000)
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p95_ms": round(float(np.percentile(times, 95)), 2),
    }


def main() -> None:
    settings = command_settings("python -m bench.predict")
    parser = argparse.ArgumentParser(prog="python -m bench.predict", description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=settings.default_checkpoint)
    parser.add_argument("--crops", type=Path, default=settings.public_dir / "amibr_train")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=at_least(1), default=100)
    parser.add_argument("--train-steps", type=at_least(1), default=20)
    args = parser.parse_args()
    trainset = load_train_set(args.crops)
    crops = trainset.images
    predictor = Predictor(args.checkpoint, device=args.device)
    result = {
        "benchmark": "predict",
        "device": args.device,
        "checkpoint": str(args.checkpoint),
        "threads": torch.get_num_threads(),
        "single_crop": _latency(predictor, crops, tta=False, repeats=args.repeats),
        "single_crop_tta": _latency(predictor, crops, tta=True, repeats=max(10, args.repeats // 4)),
    }
    batch = crops[:640]
    predictor.predict_array(batch[:64])
    start = time.perf_counter()
    for i in range(0, len(batch), 64):
        predictor.predict_array(batch[i : i + 64])
    result["batch64_crops_per_s"] = round(len(batch) / (time.perf_counter() - start), 1)
    recipe = Recipe.from_dict(predictor.checkpoint.config["mitosis"]["provenance"]["recipe"])
    n = args.train_steps * recipe.batch_size
    images = torch.from_numpy(crops[:n]).permute(0, 3, 1, 2).contiguous().to(args.device)
    labels = torch.from_numpy(trainset.y[:n].astype(np.int64)).to(args.device)
    fitted = fit(
        dataclasses.replace(recipe, epochs=1, pretrained=False), images, labels, progress=False
    )
    result["train_images_per_s"] = round(fitted.images_per_second, 1)
    result["target_p50_ms"] = 30
    result["machine"] = machine()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
