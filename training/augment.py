"""Batch augmentation on the device: dihedral flips, scale, colour and two kinds of stain jitter.

Everything works on a float batch (N, 3, H, W) in [0, 1], with per-sample random parameters and
no Python loop over samples, so a whole batch is augmented in a few kernel launches. The
paper's protocol instead replays the authors' torchvision pipelines (``PAPER_PRESETS``), one
crop at a time, on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.preprocess import dihedral_view

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
    stain_vectors: float = 0.0  # stain kind 2: each stain vector's components scaled by U(1 ± s)
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    preset: str = ""  # one of PAPER_PRESETS, applied after the above (the paper's protocol)


def _uniform(n: int, spread: float, device, generator) -> torch.Tensor:
    return (torch.rand(n, device=device, generator=generator) * 2 - 1) * spread


def dihedral(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Dihedral transform ``k[i]`` (see ``dihedral_view``) of each image ``i``."""
    out = x.clone()
    for view in range(8):
        mask = k == view
        if mask.any():
            out[mask] = dihedral_view(x[mask], view)
    return out


def hed_jitter(
    x: torch.Tensor, strength: float, generator=None, *, vectors: float = 0.0
) -> torch.Tensor:
    """Perturb each image's stain independently, after colour deconvolution into H, E and DAB.

    ``strength``: each stain's concentration scaled by U(1 - s, 1 + s) and shifted by U(-s, s)
    (Tellez et al. 2018, a different amount of stain). ``vectors``: each component of each
    stain's colour vector scaled by U(1 - v, 1 + v) before the image is recomposed (a different
    dye or scanner: the stain's hue changes, not only its amount).
    """
    n, device = x.shape[0], x.device
    hed_from_rgb = _HED_FROM_RGB.to(device)
    optical = torch.log(x.clamp_min(1e-6)) / _LOG_ADJUST.to(device)  # (N, 3, H, W) in [0, 1]
    # no clamping of the concentrations: with strength 0 the round trip is the identity
    hed = torch.einsum("nchw,cd->ndhw", optical, hed_from_rgb)
    alpha = 1 + _uniform(n * 3, strength, device, generator).view(n, 3, 1, 1)
    beta = _uniform(n * 3, strength, device, generator).view(n, 3, 1, 1)
    hed = hed * alpha + beta
    rgb_from_hed = _RGB_FROM_HED.to(device).expand(n, 3, 3)
    if vectors:
        rgb_from_hed = rgb_from_hed * (
            1 + _uniform(n * 9, vectors, device, generator).view(n, 3, 3)
        )
    optical = torch.einsum("ndhw,ndc->nchw", hed, rgb_from_hed)
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


PAPER_PRESETS = (
    "paper_end_to_end",  # EfficientNetV2-M, Swin-B, ViT-L
    "paper_lora_virchow",  # Virchow, Virchow2
    "paper_lora_uni",  # UNI, Prov-GigaPath, H-optimus-0
    "paper_lora_h_optimus_1",
    "paper_none",  # UNI2-h LoRA, and every linear probe (features of unaugmented crops)
)


def paper_transform(preset: str, size: int):
    """The authors' training transforms ``preset``, for one crop already resized to ``size``.

    What their scripts apply after ``Resize(224)`` and before ``ToTensor``/``Normalize``
    (DeepMicroscopy/AMi-Br_Benchmark at 3acf4da; the protocol table of
    docs/models-and-training.md cites the lines).
    """
    from torchvision.transforms import v2

    if preset not in PAPER_PRESETS:
        raise ValueError(
            f"Unknown augmentation preset {preset!r}; known: {', '.join(PAPER_PRESETS)}."
        )
    full_jitter = v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1)
    light_jitter = v2.ColorJitter(brightness=0.2, contrast=0.2)
    steps = {
        "paper_end_to_end": [
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(10),
            full_jitter,
            v2.RandomResizedCrop(size, scale=(0.8, 1.0)),
        ],
        "paper_lora_virchow": [
            v2.RandomResizedCrop(size, scale=(0.8, 1.0)),
            v2.RandomHorizontalFlip(),
            full_jitter,
        ],
        "paper_lora_uni": [
            v2.RandomResizedCrop(size),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(15),
            light_jitter,
        ],
        "paper_lora_h_optimus_1": [v2.RandomHorizontalFlip(), v2.RandomRotation(15), light_jitter],
        "paper_none": [v2.Identity()],
    }[preset]
    return v2.Compose(steps)


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None):
    """Augment a float batch in [0, 1] of shape (N, 3, H, W).

    A preset draws from torch's global generator (torchvision's way), seeded per run.
    """
    if cfg.dihedral:
        x = dihedral(x, torch.randint(0, 8, (x.shape[0],), device=x.device, generator=generator))
    if cfg.scale or cfg.translate:
        x = _affine(x, cfg, generator)
    if cfg.hed or cfg.stain_vectors:
        x = hed_jitter(x, cfg.hed, generator, vectors=cfg.stain_vectors)
    if cfg.brightness or cfg.contrast or cfg.saturation:
        x = _colour(x, cfg, generator)
    if cfg.preset:
        transform = paper_transform(cfg.preset, x.shape[-1])
        x = torch.stack([transform(crop) for crop in x])  # each crop its own parameters
    return x
