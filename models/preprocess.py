"""The inference transform: crops as uint8 tensors to the normalised float input of a model.

Training applies the same two steps around its augmentation (``training.augment``), so a model
sees at inference exactly what it saw in training. Test-time augmentation averages over the
eight dihedral views of a batch (:func:`dihedral_view`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prepare(x_uint8: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float [0, 1] at ``size`` x ``size`` (bilinear, antialiased)."""
    x = x_uint8.float() / 255
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return x


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel."""
    mean = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def dihedral_view(x: torch.Tensor, k: int) -> torch.Tensor:
    """Dihedral transform ``k`` in 0..7 of a whole batch: rot90 ** (k % 4), flipped if k >= 4."""
    view = torch.rot90(x, k % 4, dims=(2, 3)) if k % 4 else x
    return view.flip(3) if k >= 4 else view
