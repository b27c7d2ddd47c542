"""Explanations: Grad-CAM on the last feature map of a CNN, or on the patch tokens of a ViT.

CAM = ReLU(sum_c w_c A_c) with w_c the spatial mean of d s / d A_c, where s is the logit for a
crop called atypical and minus the logit for one called normal (the evidence for the decision),
upsampled to the crop and scaled to [0, 1]. For an ensemble the members' maps are averaged; for
a LoRA model the map is taken through the adapted network.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.factory import Ensemble


def _feature_grid(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) view of CNN maps or ViT tokens (prefix tokens dropped)."""
    if features.ndim == 4:
        return features
    prefix = getattr(model, "num_prefix_tokens", 1)
    tokens = features[:, prefix:]
    side = int(round(tokens.shape[1] ** 0.5))
    return tokens.reshape(tokens.shape[0], side, side, -1).permute(0, 3, 1, 2)


def _member_cam(model: nn.Module, x: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    features = model.forward_features(x)
    features.retain_grad()
    logit = model.forward_head(features).squeeze(1)
    (logit * sign).sum().backward()
    grid = _feature_grid(model, features)
    grads = _feature_grid(model, features.grad)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * grid).sum(1))


def grad_cam(model: nn.Module, x: torch.Tensor, size: int, atypical: np.ndarray) -> np.ndarray:
    """Heat maps (N, size, size) in [0, 1] of the evidence for each crop's decision.

    ``atypical`` holds the decisions: the map follows the logit for crops called atypical and
    the negative logit for crops called normal.
    """
    members = model.members if isinstance(model, Ensemble) else [model]
    sign = torch.where(torch.as_tensor(atypical, device=x.device), 1.0, -1.0)
    with torch.enable_grad():
        x = x.detach().float()
        cams = torch.stack([_member_cam(m, x, sign).detach().float() for m in members]).mean(0)
    cams = F.interpolate(cams[:, None], size=(size, size), mode="bilinear", align_corners=False)[
        :, 0
    ]
    low = cams.amin(dim=(1, 2), keepdim=True)
    high = cams.amax(dim=(1, 2), keepdim=True)
    return ((cams - low) / (high - low).clamp_min(1e-8)).cpu().numpy()


def overlay(crop: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """The crop (H, W, 3) uint8 blended with a blue-to-red rendering of ``heatmap``."""
    h = heatmap[..., None]
    colour = (
        np.concatenate([np.clip(1.5 - np.abs(4 * h - c), 0, 1) for c in (3, 2, 1)], axis=2) * 255
    )  # the "jet" colour map: blue (0) to red (1)
    blended = (1 - alpha) * crop.astype(np.float32) + alpha * colour
    return blended.clip(0, 255).astype(np.uint8)
