"""The one checkpoint format: shipped model, training output and submissions alike.

A directory (or a .zip of one, flat or with one top-level folder) in the Hugging Face Hub layout:

- ``config.json``: timm's keys (``architecture``, ``num_classes``, ``pretrained_cfg`` with
  input size, mean and std) plus our block ``mitosis`` (registry name, strategy, threshold,
  positive class, ensemble size, provenance);
- ``model.safetensors``: the network's tensors (for an ensemble ``members.<k>.<name>``);
- for LoRA, ``adapter_config.json`` + ``adapter_model.safetensors`` (peft's layout), with the
  base in ``model.safetensors`` unless the base is a Hub model that can be fetched by name;
- optionally ``README.md``, the model card.

Loading reads tensors with safetensors only: no pickle, no ``torch.load``, no remote code. A zip
is read in memory and never extracted, so no path in it can point outside the checkpoint.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from fileio import replace_folder, staged_folder
from models._registry import ModelCfg, get_model_cfg
from models.archive import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CARD,
    CONFIG,
    CONVERT_HINT,
    DEFAULT_MAX_BYTES,
    WEIGHTS,
    CheckpointFiles,
)
from models.errors import CheckpointError
from models.factory import Ensemble, build_backbone, check_strategy

FORMAT_VERSION = 1
MAX_CONFIG_BYTES = 2**20
MAX_HEADER_BYTES = 16 * 2**20
MAX_RANK, MAX_DIM = 8, 2**31 - 1
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
REMOTE_CODE_KEYS = ("auto_map", "trust_remote_code", "custom_pipelines", "code")
MIN_INPUT, MAX_INPUT = 16, 1024
MAX_MEMBERS = 16
LORA_FIELDS = (
    "r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "modules_to_save",
    "bias",
    "use_rslora",
)


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


def make_config(
    cfg: ModelCfg,
    strategy: str,
    *,
    num_features: int,
    threshold: float = 0.5,
    ensemble_size: int = 1,
    provenance: dict | None = None,
) -> dict:
    """The ``config.json`` of a model built from ``cfg`` and trained with ``strategy``."""
    check_strategy(strategy)
    return {
        "architecture": cfg.architecture.removeprefix("hf-hub:"),
        "num_classes": 1,
        "num_features": num_features,
        "label_names": ["atypical"],
        "pretrained_cfg": {
            "input_size": [3, cfg.input_size, cfg.input_size],
            "mean": list(cfg.mean),
            "std": list(cfg.std),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
        },
        "mitosis": {
            "format_version": FORMAT_VERSION,
            "model": cfg.name,
            "strategy": strategy,
            "threshold": threshold,
            "positive_class": "atypical",
            "ensemble_size": ensemble_size,
            "provenance": provenance or {},
        },
    }


def _json_default(value):
    if isinstance(value, set):
        return sorted(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _base_state(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """The unadapted base network's tensors inside a peft model, under timm's names."""
    state = {}
    for key, tensor in peft_model.state_dict().items():
        if "lora_" in key or ".modules_to_save." in key:
            continue
        key = key.removeprefix("base_model.model.")
        state[key.replace(".base_layer.", ".").replace(".original_module.", ".")] = tensor
    return state


def checkpoint_files(model: nn.Module, config: dict, card: str | None = None) -> dict[str, bytes]:
    """The files of a checkpoint of ``model``, as bytes."""
    files = {}
    if config["mitosis"]["strategy"] == "lora":
        from peft import get_peft_model_state_dict

        adapter = get_peft_model_state_dict(model)
        adapter_config = model.peft_config["default"].to_dict()
        adapter_config["base_model_name_or_path"] = config["mitosis"]["model"]
        files[ADAPTER_CONFIG] = json.dumps(
            adapter_config, indent=2, sort_keys=True, default=_json_default
        ).encode()
        files[ADAPTER_WEIGHTS] = save_safetensors({k: v.contiguous() for k, v in adapter.items()})
        if get_model_cfg(config["mitosis"]["model"]).weights != "hf_hub":
            files[WEIGHTS] = save_safetensors(_contiguous(_base_state(model)))
    else:
        files[WEIGHTS] = save_safetensors(_contiguous(model.state_dict()))
    files[CONFIG] = json.dumps(config, indent=2, sort_keys=True).encode()
    if card:
        files[CARD] = card.encode()
    return files


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


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


def _tensors(files: CheckpointFiles, name: str) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(files.read(name))
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{name} is not a valid safetensors file ({e}).") from e


def _json_file(files: CheckpointFiles, name: str):
    """A small JSON file of the checkpoint, parsed (``ValueError`` when it is not JSON)."""
    data = files.read(name, limit=MAX_CONFIG_BYTES)
    try:
        return json.loads(data)
    except RecursionError as e:
        raise ValueError("it is nested too deeply to be a configuration") from e
    except UnicodeDecodeError as e:
        raise ValueError("it is not UTF-8 text") from e


def _finite(values, n: int) -> bool:
    return (
        isinstance(values, list)
        and len(values) == n
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
    )


def _check_config(config) -> None:
    """Raise ValueError naming the first field of config.json outside what the format allows."""
    block = config["mitosis"]
    pretrained = config["pretrained_cfg"]
    if not isinstance(block["model"], str) or block["model"].startswith("hf-hub:"):
        raise ValueError("mitosis.model must be a registry or timm name (no hf-hub: ids)")
    check_strategy(block["strategy"])
    threshold = block["threshold"]
    if not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        raise ValueError("mitosis.threshold must be a number in [0, 1]")
    size = pretrained["input_size"]
    if not (
        _finite(size, 3)
        and size[0] == 3
        and size[1] == size[2]
        and MIN_INPUT <= size[1] <= MAX_INPUT
        and float(size[1]).is_integer()
    ):
        raise ValueError(
            f"pretrained_cfg.input_size must be [3, s, s] with s in {MIN_INPUT}..{MAX_INPUT}"
        )
    if not (
        _finite(pretrained["mean"], 3)
        and _finite(pretrained["std"], 3)
        and min(pretrained["std"]) > 0
    ):
        raise ValueError("pretrained_cfg.mean and .std must be 3 finite numbers, std > 0")
    members = block.get("ensemble_size", 1)
    if not (isinstance(members, int) and 1 <= members <= MAX_MEMBERS):
        raise ValueError(f"mitosis.ensemble_size must be a whole number in 1..{MAX_MEMBERS}")


def _config(files: CheckpointFiles) -> tuple[dict, ModelCfg]:
    if CONFIG not in files:
        raise CheckpointError(f"The checkpoint lacks {CONFIG}. {CONVERT_HINT}")
    try:
        config = _json_file(files, CONFIG)
        if not isinstance(config, dict):
            raise ValueError("it is not a JSON object")
        remote = [k for k in REMOTE_CODE_KEYS if k in config or k in config.get("mitosis", {})]
        if remote:
            raise CheckpointError(
                f"{CONFIG} asks for code to run ('{remote[0]}'). Checkpoints are loaded as data "
                "only: no remote or custom code is ever run. Remove the key."
            )
        _check_config(config)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(
            f"{CONFIG} is not a valid checkpoint config ({e}); it needs architecture, "
            "pretrained_cfg.input_size/mean/std and a 'mitosis' block with model, strategy "
            "and threshold."
        ) from e
    name = config["mitosis"]["model"]
    try:
        cfg = get_model_cfg(name)
    except ValueError as e:
        raise CheckpointError(
            f"{CONFIG} names the model {name!r}, which is neither registered "
            "nor a timm architecture."
        ) from e
    return config, cfg


def check_state(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Raise ``CheckpointError`` naming the first missing, unexpected or mis-shaped tensor."""
    check_state_dict(model.state_dict(), state, WEIGHTS, what)


def check_state_dict(expected_state: dict, state: dict, file: str, what: str) -> None:
    """``state`` (the tensors of ``file``) must have exactly the names and shapes of ``what``."""
    expected = {k: tuple(v.shape) for k, v in expected_state.items()}
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(
            f"{file} lacks {len(missing)} tensor(s) of {what}, e.g. '{missing[0]}'."
        )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"{file} has {len(unexpected)} tensor(s) that {what} does not, e.g. '{unexpected[0]}'."
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise CheckpointError(
                f"'{key}' is {tuple(state[key].shape)} in the checkpoint but "
                f"{what} expects {shape}."
            )


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
        model = _load_lora(files, cfg)
    else:
        size = int(block.get("ensemble_size", 1))
        model = _network(cfg, size)
        state = _tensors(files, WEIGHTS)
        check_state(model, state, _describe(cfg, size))
        model.load_state_dict(state)
    return Checkpoint(model=model.eval(), config=config, cfg=cfg)


def _lora_config(files: CheckpointFiles):
    """The adapter's LoraConfig, from the fields a LoRA checkpoint may set and no others."""
    from peft import LoraConfig

    if ADAPTER_CONFIG not in files:
        raise CheckpointError(f"A LoRA checkpoint needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}.")
    try:
        raw = _json_file(files, ADAPTER_CONFIG)
        return LoraConfig(**{k: raw[k] for k in LORA_FIELDS if k in raw})
    except (ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{ADAPTER_CONFIG} is not a valid LoRA config ({e}).") from e


def _load_lora(files: CheckpointFiles, cfg: ModelCfg) -> nn.Module:
    from peft import get_peft_model, set_peft_model_state_dict

    if WEIGHTS in files:
        base = build_backbone(cfg)
        base.load_state_dict(_tensors(files, WEIGHTS))
    else:
        base = build_backbone(cfg, pretrained=True)
    model = get_peft_model(base, _lora_config(files))
    set_peft_model_state_dict(model, _tensors(files, ADAPTER_WEIGHTS))
    return model


def _header(files: CheckpointFiles, name: str) -> dict[str, torch.Tensor]:
    """The tensors a safetensors file declares, as meta tensors, after checking its header.

    Every tensor's byte range must lie inside the file and hold exactly its shape times its
    dtype's size, so no declared shape can be larger than the file itself.
    """
    size = files.size(name) if name in files else 0
    prefix = files.read(name, prefix=8)
    length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
    if length < 2 or length > size - 8 or length > MAX_HEADER_BYTES:
        raise CheckpointError(f"{name} has no valid safetensors header.")
    body = size - 8 - length
    try:
        header = json.loads(files.read(name, prefix=8 + length)[8:])
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        return {
            key: _meta_tensor(key, entry, body)
            for key, entry in header.items()
            if key != "__metadata__"
        }
    except RecursionError as e:
        raise CheckpointError(
            f"{name} has an invalid safetensors header (nested too deeply)."
        ) from e
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{name} has an invalid safetensors header ({e}).") from e


def _meta_tensor(key: str, entry: dict, body: int) -> torch.Tensor:
    start, end = entry["data_offsets"]
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= body):
        raise ValueError(f"'{key}' points outside the file")
    shape = entry["shape"]
    if not (
        isinstance(shape, list)
        and len(shape) <= MAX_RANK
        and all(isinstance(d, int) and 0 <= d <= MAX_DIM for d in shape)
    ):
        raise ValueError(f"'{key}' has the shape {str(shape)[:80]}")
    itemsize = DTYPE_BYTES.get(entry["dtype"])
    if itemsize is None:
        raise ValueError(f"'{key}' has the unknown dtype {str(entry['dtype'])[:20]!r}")
    if math.prod(shape) * itemsize != end - start:
        raise ValueError(
            f"'{key}' declares the shape {shape} of {entry['dtype']} but holds {end - start} bytes"
        )
    return torch.empty(shape, device="meta")


def inspect_checkpoint(files: CheckpointFiles) -> dict:
    """Check a checkpoint without loading its weights: config, headers, names and shapes.

    The architecture is built on the meta device, so even a billion-parameter model is checked
    in a moment. Returns a summary (model, strategy, ensemble size, parameter count).
    """
    config, cfg, model = _inspect(files)
    block = config["mitosis"]
    return {
        "model": cfg.name,
        "strategy": block["strategy"],
        "ensemble_size": int(block.get("ensemble_size", 1)),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _inspect(files: CheckpointFiles) -> tuple[dict, ModelCfg, nn.Module]:
    """The validated config, its model entry, and the architecture on the meta device."""
    config, cfg = _config(files)
    block = config["mitosis"]
    size = int(block.get("ensemble_size", 1))
    with torch.device("meta"):
        if block["strategy"] == "lora":
            model = _check_lora_shapes(files, cfg)
        else:
            model = _network(cfg, size)
            check_state(model, _header(files, WEIGHTS), _describe(cfg, size))
    return config, cfg, model


def _check_lora_shapes(files: CheckpointFiles, cfg: ModelCfg) -> nn.Module:
    from peft import get_peft_model, get_peft_model_state_dict

    base = build_backbone(cfg)
    if WEIGHTS in files:
        check_state(base, _header(files, WEIGHTS), f"the base {cfg.name}")
    elif cfg.weights != "hf_hub":
        raise CheckpointError(
            f"{cfg.name} has no published weights, so a LoRA checkpoint on it "
            f"must include the base in {WEIGHTS}."
        )
    try:
        model = get_peft_model(base, _lora_config(files))
    except ValueError as e:  # e.g. target modules the backbone does not have
        raise CheckpointError(f"{ADAPTER_CONFIG} does not fit {cfg.name} ({e}).") from e
    expected = get_peft_model_state_dict(model)
    check_state_dict(expected, _header(files, ADAPTER_WEIGHTS), ADAPTER_WEIGHTS, "the adapter")
    return model
