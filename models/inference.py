"""Running a network over uint8 crops: the one batching loop, and the one device choice.

Training (validation scores, linear-probe embeddings) and the Predictor both go through
:func:`run_batches`: crops are resized and normalised on the device, a batch at a time, under
bf16 autocast on CUDA (fp32 on the CPU), and the outputs come back on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fileio import quoted
from models.errors import CheckpointError, ModelError
from models.preprocess import dihedral_view, normalise, prepare
from settings import MB

# Peak memory of one crop's forward pass (no gradients), per input pixel: an upper estimate
# from the worker's measurements (a batch of 64 took 5.2 GB for a ResNet-50 at 512 px, 81 MB a
# crop, and 10.2 GB for a MobileNetV2-0.5 at 1024 px, 160 MB a crop; 320 B a pixel bounds both).
BYTES_PER_INPUT_PIXEL = 320


def crop_memory_bytes(input_size: int) -> int:
    """Peak forward-pass memory of one crop at ``input_size`` px (see BYTES_PER_INPUT_PIXEL)."""
    return BYTES_PER_INPUT_PIXEL * input_size * input_size


def check_crop_memory(input_size: int, budget: int) -> None:
    """Refuse a checkpoint whose one crop needs more than a worker's forward pass may hold."""
    need = crop_memory_bytes(input_size)
    if need > budget:
        raise CheckpointError(
            f"At {input_size}x{input_size} px one crop needs about {need / MB:,.0f} MB in a "
            f"forward pass; this server's workers allow {budget / MB:,.0f} MB "
            "(MITOSIS_BATCH_MEMORY_MB). Set pretrained_cfg.input_size to the size the network "
            "was trained at (the crops are 128x128), or submit a prediction file."
        )


def crops_within(memory_budget: int, input_size: int) -> int:
    """How many crops one forward pass may hold within ``memory_budget`` bytes (at least 1).

    Example:
        >>> crops_within(2 * 2**30, 512)  # 2 GiB at 512 px: 80 MiB a crop
        25
    """
    return max(1, memory_budget // crop_memory_bytes(input_size))


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; a device named here must exist."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ModelError(f"Unknown device {quoted(name)}: use auto, cpu, cuda or cuda:N.") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            f"Device {quoted(name)} asked for, but this machine has no CUDA GPU: use auto or cpu."
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ModelError(
            f"Device {quoted(name)} asked for, but this machine has "
            f"{torch.cuda.device_count()} CUDA GPU(s): cuda:0 to "
            f"cuda:{torch.cuda.device_count() - 1}."
        )
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
