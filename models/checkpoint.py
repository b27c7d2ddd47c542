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

import io
import json
import math
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from models._registry import ModelCfg, get_model_cfg
from models.errors import CheckpointError, UnsafeCheckpoint
from models.factory import Ensemble, build_backbone, check_strategy

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
CARD = "README.md"
ALLOWED_FILES = (CONFIG, WEIGHTS, ADAPTER_CONFIG, ADAPTER_WEIGHTS, CARD)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
DEFAULT_MAX_BYTES = 2 * 1024**3
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
_CONVERT_HINT = (
    "Only config.json + model.safetensors (or adapter_config.json + adapter_model.safetensors) "
    "are accepted; pickle files (.bin, .pt, .pth, .ckpt) are never loaded. Convert with "
    "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')."
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
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    staging.chmod(0o755)
    try:
        for name, data in checkpoint_files(model, config, card).items():
            (staging / name).write_bytes(data)
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _check_name(name: str) -> None:
    lowered = name.lower()
    if lowered.endswith(PICKLE_SUFFIXES):
        raise UnsafeCheckpoint(f"The checkpoint contains '{name}'. {_CONVERT_HINT}")
    if lowered.endswith(ARCHIVE_SUFFIXES):
        raise UnsafeCheckpoint(
            f"The checkpoint contains the archive '{name}'; nested archives "
            f"are not accepted. Zip the checkpoint folder itself."
        )
    if name not in ALLOWED_FILES:
        raise CheckpointError(
            f"The checkpoint contains '{name}', which is not part of the "
            f"format ({', '.join(ALLOWED_FILES)}). Remove it."
        )


def read_zip(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, bytes]:
    """The checkpoint files inside a zip, checked before a byte is decompressed."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise CheckpointError("The upload is not a valid zip archive.") from e
    entries = [i for i in archive.infolist() if not i.is_dir()]
    for info in entries:
        path = info.filename
        if path.startswith(("/", "\\")) or ".." in Path(path).parts or "\\" in path or ":" in path:
            raise UnsafeCheckpoint(f"The zip entry '{path}' points outside the checkpoint folder.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeCheckpoint(f"The zip entry '{path}' is a symbolic link; links are refused.")
        _check_name(path.rsplit("/", 1)[-1])
    names = [i.filename.rsplit("/", 1)[-1] for i in entries]
    if len(set(names)) < len(names):
        raise CheckpointError("The zip holds the same file name twice; keep one of each.")
    folders = {i.filename.rsplit("/", 1)[0] if "/" in i.filename else "" for i in entries}
    if len(folders) > 1 or any("/" in folder for folder in folders):
        raise CheckpointError(
            "The zip must hold the checkpoint files at its top or inside one "
            f"folder; found them in {len(folders)} places, e.g. "
            f"'{entries[-1].filename}'."
        )
    total = sum(i.file_size for i in entries)
    if total > max_bytes:
        raise CheckpointError(
            f"The checkpoint unpacks to {total / 2**20:.0f} MB; the limit is "
            f"{max_bytes / 2**20:.0f} MB."
        )
    files = {}
    for info in entries:
        try:
            with archive.open(info) as member:
                content = member.read(info.file_size + 1)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError) as e:
            raise CheckpointError(
                f"The zip entry '{info.filename}' cannot be read ({e}); zip the checkpoint "
                "again without encryption (stored or deflated)."
            ) from e
        if len(content) != info.file_size:
            raise UnsafeCheckpoint(f"The zip entry '{info.filename}' is larger than it declares.")
        files[info.filename.rsplit("/", 1)[-1]] = content
    return files


def read_checkpoint_files(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, bytes]:
    """The files of a checkpoint directory or zip, after checking every name."""
    path = Path(path)
    if path.is_file():
        _check_name_or_zip(path)
        if path.stat().st_size > max_bytes:
            raise CheckpointError(
                f"The checkpoint is {path.stat().st_size / 2**20:.0f} MB; the "
                f"limit is {max_bytes / 2**20:.0f} MB."
            )
        return read_zip(path.read_bytes(), max_bytes=max_bytes)
    if not path.is_dir():
        raise CheckpointError(f"No checkpoint at {path}.")
    files = {}
    for entry in sorted(path.iterdir()):
        if entry.is_symlink():
            raise UnsafeCheckpoint(f"'{entry.name}' in the checkpoint is a symbolic link.")
        if entry.is_dir():
            raise CheckpointError(
                f"The checkpoint holds the folder '{entry.name}'; the format is flat."
            )
        _check_name(entry.name)
        files[entry.name] = entry.read_bytes()
    return files


def _check_name_or_zip(path: Path) -> None:
    if path.suffix.lower() != ".zip":
        _check_name(path.name)
        raise CheckpointError(
            f"{path.name} is a single file; a checkpoint is a folder or a .zip of one."
        )


def _tensors(files: dict[str, bytes], name: str) -> dict[str, torch.Tensor]:
    if name not in files:
        raise CheckpointError(f"The checkpoint lacks {name}. {_CONVERT_HINT}")
    try:
        return load_safetensors(files[name])
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{name} is not a valid safetensors file ({e}).") from e


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


def _config(files: dict[str, bytes]) -> tuple[dict, ModelCfg]:
    if CONFIG not in files:
        raise CheckpointError(f"The checkpoint lacks {CONFIG}. {_CONVERT_HINT}")
    try:
        config = json.loads(files[CONFIG])
        _check_config(config)
    except (ValueError, KeyError, TypeError) as e:
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
    files = read_checkpoint_files(Path(path), max_bytes=max_bytes)
    return checkpoint_from_files(files)


def checkpoint_from_files(files: dict[str, bytes]) -> Checkpoint:
    """Build the model a set of checkpoint files describes (checked first without loading)."""
    inspect_checkpoint(files)
    config, cfg = _config(files)
    block = config["mitosis"]
    what = f"{cfg.name}"
    if block["strategy"] == "lora":
        model = _load_lora(files, cfg)
    else:
        size = int(block.get("ensemble_size", 1))
        model = (
            Ensemble([build_backbone(cfg) for _ in range(size)])
            if size > 1
            else build_backbone(cfg)
        )
        state = _tensors(files, WEIGHTS)
        check_state(model, state, what if size == 1 else f"an ensemble of {size} {what}")
        model.load_state_dict(state)
    return Checkpoint(model=model.eval(), config=config, cfg=cfg)


def _lora_config(files: dict[str, bytes]):
    """The adapter's LoraConfig, from the fields a LoRA checkpoint may set and no others."""
    from peft import LoraConfig

    if ADAPTER_CONFIG not in files:
        raise CheckpointError(f"A LoRA checkpoint needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}.")
    try:
        raw = json.loads(files[ADAPTER_CONFIG])
        return LoraConfig(**{k: raw[k] for k in LORA_FIELDS if k in raw})
    except (ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{ADAPTER_CONFIG} is not a valid LoRA config ({e}).") from e


def _load_lora(files: dict[str, bytes], cfg: ModelCfg) -> nn.Module:
    from peft import get_peft_model, set_peft_model_state_dict

    if WEIGHTS in files:
        base = build_backbone(cfg)
        base.load_state_dict(_tensors(files, WEIGHTS))
    else:
        base = build_backbone(cfg, pretrained=True)
    model = get_peft_model(base, _lora_config(files))
    set_peft_model_state_dict(model, _tensors(files, ADAPTER_WEIGHTS))
    return model


def _header(files: dict[str, bytes], name: str) -> dict[str, torch.Tensor]:
    """The tensors a safetensors file declares, as meta tensors, after checking its header."""
    if name not in files:
        raise CheckpointError(f"The checkpoint lacks {name}. {_CONVERT_HINT}")
    data = files[name]
    length = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if length < 2 or length > len(data) - 8 or length > 100 * 2**20:
        raise CheckpointError(f"{name} has no valid safetensors header.")
    try:
        header = json.loads(data[8 : 8 + length])
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        tensors = {}
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            start, end = entry["data_offsets"]
            if not 0 <= start <= end <= len(data) - 8 - length:
                raise ValueError(f"'{key}' points outside the file")
            shape = entry["shape"]
            if not all(isinstance(d, int) and d >= 0 for d in shape):
                raise ValueError(f"'{key}' has the shape {shape}")
            tensors[key] = torch.empty(shape, device="meta")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{name} has an invalid safetensors header ({e}).") from e
    return tensors


def inspect_checkpoint(files: dict[str, bytes]) -> dict:
    """Check a checkpoint without loading its weights: config, headers, names and shapes.

    The architecture is built on the meta device, so even a billion-parameter model is checked
    in a moment. Returns a summary (model, strategy, ensemble size, parameter count).
    """
    config, cfg = _config(files)
    block = config["mitosis"]
    size = int(block.get("ensemble_size", 1))
    with torch.device("meta"):
        if block["strategy"] == "lora":
            model = _check_lora_shapes(files, cfg)
        else:
            model = (
                Ensemble([build_backbone(cfg) for _ in range(size)])
                if size > 1
                else build_backbone(cfg)
            )
            check_state(
                model,
                _header(files, WEIGHTS),
                cfg.name if size == 1 else f"an ensemble of {size} {cfg.name}",
            )
    return {
        "model": cfg.name,
        "strategy": block["strategy"],
        "ensemble_size": size,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _check_lora_shapes(files: dict[str, bytes], cfg: ModelCfg) -> nn.Module:
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
