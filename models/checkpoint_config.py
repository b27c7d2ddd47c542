"""A checkpoint's ``config.json``: written by :func:`make_config`, read by :func:`read_config`.

timm's keys as timm writes them (``architecture``, ``num_classes``, ``pretrained_cfg`` with
input size, mean and std) plus our block ``mitosis`` (registry name, strategy, threshold, positive
class, ensemble size, provenance). Reading refuses anything outside what the format allows:
values out of range, unknown architectures, ``hf-hub:`` ids, keys asking for code to run, and
JSON nested too deeply to parse.
"""

from __future__ import annotations

import json
import math

from fileio import quoted
from models._registry import ModelCfg, get_model_cfg
from models.archive import CONFIG, CONVERT_HINT, CheckpointFiles
from models.errors import CheckpointError
from models.factory import check_strategy

FORMAT_VERSION = 1
MAX_CONFIG_BYTES = 2**20
REMOTE_CODE_KEYS = ("auto_map", "trust_remote_code", "custom_pipelines", "code")
MIN_INPUT, MAX_INPUT = 16, 1024
MAX_MEMBERS = 16


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


def read_json(files: CheckpointFiles, name: str):
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


def read_config(files: CheckpointFiles) -> tuple[dict, ModelCfg]:
    if CONFIG not in files:
        raise CheckpointError(f"The checkpoint lacks {CONFIG}. {CONVERT_HINT}")
    try:
        config = read_json(files, CONFIG)
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
            f"{CONFIG} names the model {quoted(name)}, which is neither registered "
            "nor a timm architecture."
        ) from e
    built = cfg.architecture.removeprefix("hf-hub:")
    given = str(config["architecture"])
    if given.split(".")[0] != built.split(".")[0]:  # timm builds `architecture`; a tag is weights
        raise CheckpointError(
            f"{CONFIG} says architecture {quoted(given)} but mitosis.model "
            f"{quoted(name)} is a {built}: set architecture to {quoted(built)} (timm builds "
            "the network from it, this server from mitosis.model; they must agree)."
        )
    return config, cfg
