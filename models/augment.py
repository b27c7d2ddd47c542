"""Batch augmentation on the device: dihedral flips, scale, colour and HED stain jitter.

Everything works on a float batch (N, 3, H, W) in [0, 1], with per-sample random parameters and
no Python loop over samples, so a whole batch is augmented in a few kernel launches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Ruifrok & Johnston's stain vectors (haematoxylin, eosin, DAB), as in skimage.color.rgb2hed.
_RGB_FROM_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32
)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_LOG_ADJUST = torch.log(torch.tensor(1e-6))


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each augmentation; 0 turns one off."""

    dihedral: bool = True
    scale: float = 0.15  # zoom factor drawn from [1 - scale, 1 + scale]
    translate: float = 0.05  # shift as a fraction of the side
    hed: float = (
        0.05  # stain: each HED channel scaled by U(1 - hed, 1 + hed) and shifted by U(-hed, hed)
    )
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1


def _uniform(n: int, spread: float, device, generator) -> torch.Tensor:
    return (torch.rand(n, device=device, generator=generator) * 2 - 1) * spread


def dihedral_view(x: torch.Tensor, k: int) -> torch.Tensor:
    """Dihedral transform ``k`` in 0..7 of a whole batch: rot90 ** (k % 4), flipped if k >= 4."""
    view = torch.rot90(x, k % 4, dims=(2, 3)) if k % 4 else x
    return view.flip(3) if k >= 4 else view


def dihedral(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Dihedral transform ``k[i]`` (see ``dihedral_view``) of each image ``i``."""
    out = x.clone()
    for view in range(8):
        mask = k == view
        if mask.any():
            out[mask] = dihedral_view(x[mask], view)
    return out


def hed_jitter(x: torch.Tensor, strength: float, generator=None) -> torch.Tensor:
    """Perturb the haematoxylin, eosin and DAB optical densities of each image independently."""
    n, device = x.shape[0], x.device
    rgb_from_hed = _RGB_FROM_HED.to(device)
    hed_from_rgb = _HED_FROM_RGB.to(device)
    optical = torch.log(x.clamp_min(1e-6)) / _LOG_ADJUST.to(device)  # (N, 3, H, W) in [0, 1]
    # no clamping of the concentrations: with strength 0 the round trip is the identity
    hed = torch.einsum("nchw,cd->ndhw", optical, hed_from_rgb)
    alpha = 1 + _uniform(n * 3, strength, device, generator).view(n, 3, 1, 1)
    beta = _uniform(n * 3, strength, device, generator).view(n, 3, 1, 1)
    hed = hed * alpha + beta
    optical = torch.einsum("ndhw,dc->nchw", hed, rgb_from_hed)
    return torch.exp(optical * _LOG_ADJUST.to(device)).clamp(0, 1)


def _colour(x: torch.Tensor, cfg: AugmentConfig, generator) -> torch.Tensor:
    n, device = x.shape[0], x.device
    view = (n, 1, 1, 1)
    x = x * (1 + _uniform(n, cfg.brightness, device, generator)).view(view)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + _uniform(n, cfg.contrast, device, generator)).view(view) + mean
    grey = (x * torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)).sum(
        1, keepdim=True
    )
    x = (x - grey) * (1 + _uniform(n, cfg.saturation, device, generator)).view(view) + grey
    return x.clamp(0, 1)


def _affine(x: torch.Tensor, cfg: AugmentConfig, generator) -> torch.Tensor:
    n, device = x.shape[0], x.device
    zoom = 1 / (1 + _uniform(n, cfg.scale, device, generator))
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = zoom
    theta[:, 1, 1] = zoom
    theta[:, 0, 2] = _uniform(n, 2 * cfg.translate, device, generator)
    theta[:, 1, 2] = _uniform(n, 2 * cfg.translate, device, generator)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None):
    """Augment a float batch in [0, 1] of shape (N, 3, H, W)."""
    if cfg.dihedral:
        x = dihedral(x, torch.randint(0, 8, (x.shape[0],), device=x.device, generator=generator))
    if cfg.scale or cfg.translate:
        x = _affine(x, cfg, generator)
    if cfg.hed:
        x = hed_jitter(x, cfg.hed, generator)
    if cfg.brightness or cfg.contrast or cfg.saturation:
        x = _colour(x, cfg, generator)
    return x


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
