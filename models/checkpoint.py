"""The one checkpoint format: shipped model, training output and submissions alike.

A directory (or a .zip of one, flat or with one top-level folder) in the Hugging Face Hub layout:

- ``config.json`` (``models.checkpoint_config``): timm's keys plus our block ``mitosis``;
- ``model.safetensors``: the network's tensors (for an ensemble ``members.<k>.<name>``);
- for LoRA, ``adapter_config.json`` + ``adapter_model.safetensors`` (``models.lora``);
- optionally ``README.md``, the model card.

Reading goes through ``models.archive`` (names, sizes, no extraction) and ``models.tensors``
(headers and shapes checked on the meta device before any weight is loaded); tensors are read
with safetensors only: no pickle, no ``torch.load``, no remote code. This module writes the
format and turns a checked set of files into a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fileio import replace_folder, staged_folder
from models._registry import ModelCfg
from models.archive import CARD, CONFIG, DEFAULT_MAX_BYTES, WEIGHTS, CheckpointFiles
from models.checkpoint_config import read_config
from models.errors import CheckpointError
from models.factory import Ensemble, build_backbone
from models.lora import adapter_files, check_lora_shapes, load_lora
from models.tensors import check_state, contiguous, header_tensors, read_tensors


@dataclass
class Checkpoint:
    """A loaded checkpoint: the network in eval mode on the CPU and its configuration."""

    model: nn.Module
    config: dict
    cfg: ModelCfg

    @property
    def threshold(self) -> float:
        """prob_atypical at or above which a crop is called atypical."""
        return float(self.config["mitosis"]["threshold"])

    @property
    def input_size(self) -> int:
        """Side in pixels the network sees."""
        return int(self.config["pretrained_cfg"]["input_size"][-1])

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel input mean."""
        return tuple(self.config["pretrained_cfg"]["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel input standard deviation."""
        return tuple(self.config["pretrained_cfg"]["std"])


def checkpoint_files(model: nn.Module, config: dict, card: str | None = None) -> dict[str, bytes]:
    """The files of a checkpoint of ``model``, as bytes."""
    if config["mitosis"]["strategy"] == "lora":
        files = adapter_files(model, config)
    else:
        files = {WEIGHTS: save_safetensors(contiguous(model.state_dict()))}
    files[CONFIG] = json.dumps(config, indent=2, sort_keys=True).encode()
    if card:
        files[CARD] = card.encode()
    return files


def save_checkpoint(
    model: nn.Module, directory: Path, config: dict, *, card: str | None = None
) -> Path:
    """Write a checkpoint directory atomically (a complete one replaces any previous one)."""
    directory = Path(directory)
    with staged_folder(directory) as staging:
        for name, data in checkpoint_files(model, config, card).items():
            (staging / name).write_bytes(data)
        replace_folder(staging, directory)
    return directory


def load_checkpoint(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Checkpoint:
    """Load a checkpoint directory or zip into a CPU model in eval mode.

    Raises:
        UnsafeCheckpoint: pickles, links, paths leaving the folder, nested archives.
        CheckpointError: missing files, unknown architecture, missing or mis-shaped tensors.
    """
    with CheckpointFiles.open(path, max_bytes=max_bytes) as files:
        return checkpoint_from_files(files)


def _network(cfg: ModelCfg, ensemble_size: int, **kwargs) -> nn.Module:
    """The architecture a config describes: one backbone or an ensemble of them."""
    if ensemble_size > 1:
        return Ensemble([build_backbone(cfg, **kwargs) for _ in range(ensemble_size)])
    return build_backbone(cfg, **kwargs)


def _describe(cfg: ModelCfg, ensemble_size: int) -> str:
    return cfg.name if ensemble_size == 1 else f"an ensemble of {ensemble_size} {cfg.name}"


def checkpoint_from_files(files: CheckpointFiles) -> Checkpoint:
    """Build the model a set of checkpoint files describes (checked first without loading)."""
    config, cfg, _ = _inspect(files)
    block = config["mitosis"]
    if block["strategy"] == "lora":
        model = load_lora(files, cfg)
    else:
        size = int(block.get("ensemble_size", 1))
        model = _network(cfg, size)
        state = read_tensors(files, WEIGHTS)
        check_state(model, state, _describe(cfg, size))
        model.load_state_dict(state)
    return Checkpoint(model=model.eval(), config=config, cfg=cfg)


def inspect_checkpoint(files: CheckpointFiles) -> dict:
    """Check a checkpoint without loading its weights: config, headers, names and shapes.

    The architecture is built on the meta device, so even a billion-parameter model is checked
    in a moment. Returns a summary: model, strategy, ensemble size, parameter count, and the
    floating-point operations of one crop's forward pass at the checkpoint's input size
    (counted on the meta device: what a job will cost, before it runs).
    """
    config, cfg, model = _inspect(files)
    block = config["mitosis"]
    size = int(config["pretrained_cfg"]["input_size"][-1])
    try:
        with torch.device("meta"), FlopCounterMode(display=False) as counter:
            model(torch.empty(1, 3, size, size))
    except (AssertionError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(
            f"{cfg.name} cannot run on {size}x{size} inputs, the size config.json gives "
            f"({str(e).splitlines()[0][:160]}). Set pretrained_cfg.input_size to the size the "
            "network was trained at."
        ) from e
    return {
        "model": cfg.name,
        "strategy": block["strategy"],
        "ensemble_size": int(block.get("ensemble_size", 1)),
        "parameters": sum(p.numel() for p in model.parameters()),
        "input_size": size,
        "flops_per_crop": float(counter.get_total_flops()),
    }


def _inspect(files: CheckpointFiles) -> tuple[dict, ModelCfg, nn.Module]:
    """The validated config, its model entry, and the architecture on the meta device.

    For an ensemble, the weights file must hold as many numbers as its members need before it
    is built: a few bytes claiming 16 giant networks cost one network's build, once. (One
    network is built and its tensors compared by name and shape, the more precise message.)
    """
    config, cfg = read_config(files)
    block = config["mitosis"]
    size = int(block.get("ensemble_size", 1))
    with torch.device("meta"):
        if block["strategy"] == "lora":
            model = check_lora_shapes(files, cfg)
        else:
            declared = header_tensors(files, WEIGHTS)
            if size > 1:
                _check_numel(declared, cfg, size)
            model = _network(cfg, size)
            check_state(model, declared, _describe(cfg, size))
    return config, cfg, model


def _check_numel(declared: dict[str, torch.Tensor], cfg: ModelCfg, size: int) -> None:
    """An ensemble's file must hold ``size`` members' numbers (checked before it is built)."""
    held, needed = sum(t.numel() for t in declared.values()), size * member_numel(cfg)
    if held != needed:
        raise CheckpointError(
            f"{WEIGHTS} holds {held:,} numbers; {_describe(cfg, size)} has {needed:,}. "
            "Save the trained network's state_dict as it is (see docs/submitting.md)."
        )


_MEMBER_NUMEL: dict[str, int] = {}  # repr(ModelCfg) -> numbers in one network's state


def member_numel(cfg: ModelCfg) -> int:
    """Numbers in one network's state (parameters and buffers), counted on the meta device.

    Remembered per configuration (the registry is finite), so asking again costs nothing.
    """
    key = repr(cfg)  # ModelCfg holds a dict (model_args): not hashable itself
    if key not in _MEMBER_NUMEL:
        with torch.device("meta"):
            _MEMBER_NUMEL[key] = sum(t.numel() for t in build_backbone(cfg).state_dict().values())
    return _MEMBER_NUMEL[key]
