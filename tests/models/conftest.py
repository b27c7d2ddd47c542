from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from models import create_model, save_checkpoint
from models._registry import get_model_cfg
from models.checkpoint_config import make_config
from models.factory import Ensemble


def tiny_checkpoint(
    directory: Path, name: str = "resnet18_128", members: int = 1, seed: int = 0
) -> Path:
    torch.manual_seed(seed)
    nets = [create_model(name) for _ in range(members)]
    model = Ensemble(nets) if members > 1 else nets[0]
    config = make_config(
        get_model_cfg(name), "end_to_end", num_features=nets[0].num_features, ensemble_size=members
    )
    return save_checkpoint(model, directory, config)


def nan_weights(checkpoint: Path) -> Path:
    """``checkpoint`` with every floating-point weight NaN (a broken training run's)."""
    weights_file = checkpoint / "model.safetensors"
    with safe_open(weights_file, "pt") as stored:
        metadata = stored.metadata()
    weights = load_file(weights_file)
    for tensor in weights.values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))
    save_file(weights, weights_file, metadata=metadata)
    return checkpoint


@pytest.fixture(scope="session")
def resnet_checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "resnet")
