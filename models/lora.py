"""LoRA checkpoints: peft's layout (``adapter_config.json`` + ``adapter_model.safetensors``).

Only LoRA's own settings are read from the adapter config (``LORA_FIELDS``); nothing else in it
is ever imported or run. The base network's tensors travel in ``model.safetensors`` unless the
base is a Hub model that can be fetched by name.
"""

from __future__ import annotations

import json
from enum import Enum

import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from models._registry import ModelCfg, get_model_cfg
from models.archive import ADAPTER_CONFIG, ADAPTER_WEIGHTS, WEIGHTS, CheckpointFiles
from models.checkpoint_config import read_json
from models.errors import CheckpointError
from models.factory import build_backbone
from models.tensors import check_state, check_state_dict, contiguous, header_tensors, read_tensors

LORA_FIELDS = (
    "r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "modules_to_save",
    "bias",
    "use_rslora",
)


def _json_default(value):
    if isinstance(value, set):
        return sorted(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def base_state(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """The unadapted base network's tensors inside a peft model, under timm's names."""
    state = {}
    for key, tensor in peft_model.state_dict().items():
        if "lora_" in key or ".modules_to_save." in key:
            continue
        key = key.removeprefix("base_model.model.")
        state[key.replace(".base_layer.", ".").replace(".original_module.", ".")] = tensor
    return state


def adapter_files(model: nn.Module, config: dict) -> dict[str, bytes]:
    """The adapter's files (and the base's tensors unless the base is a Hub model)."""
    from peft import get_peft_model_state_dict

    adapter = get_peft_model_state_dict(model)
    adapter_config = model.peft_config["default"].to_dict()
    adapter_config["base_model_name_or_path"] = config["mitosis"]["model"]
    files = {
        ADAPTER_CONFIG: json.dumps(
            adapter_config, indent=2, sort_keys=True, default=_json_default
        ).encode(),
        ADAPTER_WEIGHTS: save_safetensors({k: v.contiguous() for k, v in adapter.items()}),
    }
    if get_model_cfg(config["mitosis"]["model"]).weights != "hf_hub":
        files[WEIGHTS] = save_safetensors(contiguous(base_state(model)))
    return files


def _loraread_config(files: CheckpointFiles):
    """The adapter's LoraConfig, from the fields a LoRA checkpoint may set and no others."""
    from peft import LoraConfig

    if ADAPTER_CONFIG not in files:
        raise CheckpointError(f"A LoRA checkpoint needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}.")
    try:
        raw = read_json(files, ADAPTER_CONFIG)
        return LoraConfig(**{k: raw[k] for k in LORA_FIELDS if k in raw})
    except (ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{ADAPTER_CONFIG} is not a valid LoRA config ({e}).") from e


def load_lora(files: CheckpointFiles, cfg: ModelCfg) -> nn.Module:
    from peft import get_peft_model, set_peft_model_state_dict

    if WEIGHTS in files:
        base = build_backbone(cfg)
        base.load_state_dict(read_tensors(files, WEIGHTS))
    else:
        base = build_backbone(cfg, pretrained=True)
    model = get_peft_model(base, _loraread_config(files))
    set_peft_model_state_dict(model, read_tensors(files, ADAPTER_WEIGHTS))
    return model


def check_lora_shapes(files: CheckpointFiles, cfg: ModelCfg) -> nn.Module:
    from peft import get_peft_model, get_peft_model_state_dict

    base = build_backbone(cfg)
    if WEIGHTS in files:
        check_state(base, header_tensors(files, WEIGHTS), f"the base {cfg.name}")
    elif cfg.weights != "hf_hub":
        raise CheckpointError(
            f"{cfg.name} has no published weights, so a LoRA checkpoint on it "
            f"must include the base in {WEIGHTS}."
        )
    try:
        model = get_peft_model(base, _loraread_config(files))
    except ValueError as e:  # e.g. target modules the backbone does not have
        raise CheckpointError(f"{ADAPTER_CONFIG} does not fit {cfg.name} ({e}).") from e
    expected = get_peft_model_state_dict(model)
    check_state_dict(
        expected, header_tensors(files, ADAPTER_WEIGHTS), ADAPTER_WEIGHTS, "the adapter"
    )
    return model
