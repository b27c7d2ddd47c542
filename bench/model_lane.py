"""Benchmark the model lane: ``python -m bench.model_lane [ARCH] [--crops N]`` prints JSON.

A checkpoint of random weights (bf16 safetensors, as a submitter would send a foundation model)
is written to disk, then run the way a worker runs a submission: read and checked through the
archive, built, moved to the device, and predicted over synthetic 128x128 crops in the model
lane's chunks (crops are decoded once per split, so synthetic crops of the same size measure the
same work). Default: a Virchow-architecture ViT-H/14 at 224 px over 2,853 crops on a GPU; on a
CPU, ``vit_small_patch16_224`` over 256 crops (a ViT-H/14 would take hours there).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import machine
from models import create_model, save_checkpoint
from models._registry import get_model_cfg
from models.archive import CheckpointFiles
from models.checkpoint import checkpoint_from_files, inspect_checkpoint
from models.checkpoint_config import make_config
from models.inference import resolve_device
from models.predictor import Predictor
from settings import at_least

CHUNK = {"cpu": 64, "cuda": 4096}


def main(argv: list[str] | None = None) -> None:
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(prog="python -m bench.model_lane")
    parser.add_argument("arch", nargs="?", default="virchow2" if gpu else "vit_small_patch16_224")
    parser.add_argument("--crops", type=at_least(1), default=2853 if gpu else 256)
    args = parser.parse_args(argv)
    cfg = get_model_cfg(args.arch)
    with tempfile.TemporaryDirectory() as tmp:
        model = create_model(args.arch).to(torch.bfloat16)
        config = make_config(cfg, "end_to_end", num_features=model.num_features)
        directory = save_checkpoint(model, Path(tmp) / "ckpt", config)
        del model
        size_mb = sum(p.stat().st_size for p in directory.iterdir()) / 2**20
        start = time.perf_counter()
        with CheckpointFiles.open(directory) as files:
            flops = inspect_checkpoint(files)["flops_per_crop"]
            checkpoint = checkpoint_from_files(files)
        predictor = Predictor(checkpoint, device="auto")
        loaded = time.perf_counter() - start
        crops = np.random.default_rng(0).integers(0, 256, (args.crops, 128, 128, 3), np.uint8)
        device = resolve_device("auto")
        chunk = CHUNK[device.type]
        predictor.predict_array(crops[: min(8, len(crops))])  # warm-up (kernels, autotuning)
        if gpu:
            torch.cuda.synchronize()
        forward = time.perf_counter()
        for offset in range(0, len(crops), chunk):
            predictor.predict_array(crops[offset : offset + chunk])
        if gpu:
            torch.cuda.synchronize()
        forward = time.perf_counter() - forward
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        create_model(args.arch)(torch.empty(1, 3, cfg.input_size, cfg.input_size))
    print(
        json.dumps(
            {
                "benchmark": "model_lane",
                "architecture": args.arch,
                "device": str(device) + (f" ({torch.cuda.get_device_name(0)})" if gpu else ""),
                "checkpoint_mb": round(size_mb, 1),
                "input_size": cfg.input_size,
                "gflop_per_crop": round(counter.get_total_flops() / 1e9, 2),
                "gflop_per_crop_estimated_at_intake": round(flops / 1e9, 2),
                "crops": args.crops,
                "load_seconds": round(loaded, 2),
                "forward_seconds": round(forward, 2),
                "crops_per_second": round(args.crops / forward, 1),
                "achieved_tflops": round(flops * args.crops / forward / 1e12, 3),
                "end_to_end_seconds": round(loaded + forward, 2),
                "batch_size": predictor.batch_size,
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
