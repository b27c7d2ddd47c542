"""Running a network over uint8 crops: the one batching loop, and the one device choice.

Training (validation scores, linear-probe embeddings) and the Predictor both go through
:func:`run_batches`: crops are resized and normalised on the device, a batch at a time, under
bf16 autocast on CUDA (fp32 on the CPU), and the outputs come back on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.preprocess import dihedral_view, normalise, prepare


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    return device


@torch.no_grad()
def run_batches(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    *,
    size: int,
    mean,
    std,
    device: torch.device,
    batch_size: int = 256,
    bf16: bool = True,
    fp16: bool = False,
) -> torch.Tensor:
    """``forward`` of normalised crops, batch by batch; uint8 ``images`` (N, 3, H, W) in.

    On CUDA the forward runs under bf16 autocast unless ``bf16`` is False, or under fp16
    autocast when ``fp16`` (the authors' linear-probe feature extraction).
    """
    dtype = torch.float16 if fp16 else torch.bfloat16
    out = []
    for start in range(0, len(images), batch_size):
        x = normalise(prepare(images[start : start + batch_size].to(device), size), mean, std)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype, enabled=(bf16 or fp16) and device.type == "cuda"):
            out.append(forward(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def probabilities(model: torch.nn.Module, views: int = 1) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``forward`` for :func:`run_batches`: P(atypical), averaged over ``views`` dihedral views.

    All views go through the network in one batch: view k of crop i is row k * n + i.
    """

    def forward(x: torch.Tensor) -> torch.Tensor:
        stacked = torch.cat([dihedral_view(x, k) for k in range(views)])
        return torch.sigmoid(model(stacked).float()).view(views, len(x)).mean(0)

    return forward
