"""The paper's training protocol, setting by setting, as the authors' scripts run it.

Source: DeepMicroscopy/AMi-Br_Benchmark at commit 3acf4da (the protocol table of
docs/models-and-training.md cites the script and line of every setting). One template serves
all 17 scripts: 5-fold ``StratifiedGroupKFold`` by slide, the held-out fold as validation,
class-balanced sampling, BCE on one logit, batch 8, Adam (lr 5e-5, L2 weight decay 1e-5),
``ReduceLROnPlateau`` on validation BA, up to 100 epochs, early stopping on validation BA, fp32
(linear probes: features under fp16 autocast, except GigaPath's), full-size PNG crops resized
to 224. What differs per family is collected in :func:`paper_recipe`.
"""

from __future__ import annotations

import dataclasses

from training.augment import AugmentConfig
from training.fit import Recipe

FROM_SCRATCH = frozenset({"efficientnetv2_m"})  # the paper's only randomly initialised row
LORA_PRESETS = {
    "virchow": "paper_lora_virchow",
    "virchow2": "paper_lora_virchow",
    "uni": "paper_lora_uni",
    "prov_gigapath": "paper_lora_uni",
    "h_optimus_0": "paper_lora_uni",
    "h_optimus_1": "paper_lora_h_optimus_1",
    "uni2_h": "paper_none",
}
# The LoRA scripts put the head on Virchow's class token alone, normalised with 0.5/0.5.
LORA_MODELS = {"virchow": "virchow_cls", "virchow2": "virchow2_cls"}
_NO_OWN_AUGMENTATION = AugmentConfig(
    dihedral=False, scale=0, translate=0, hed=0, brightness=0, contrast=0, saturation=0
)


def paper_recipe(model: str = "efficientnetv2_m", strategy: str = "end_to_end") -> Recipe:
    """The authors' recipe for ``model`` trained with ``strategy``.

    Example:
        >>> r = paper_recipe("virchow2", "lora")
        >>> r.model, r.batch_size, r.lr, r.patience, r.augment.preset
        ('virchow2_cls', 8, 5e-05, 10, 'paper_lora_virchow')
    """
    lr, weight_decay, patience, precision = 5e-5, 1e-5, 15, "fp32"
    if strategy == "end_to_end":
        preset = "paper_end_to_end"
    elif strategy == "lora":
        preset, patience = LORA_PRESETS.get(model, "paper_end_to_end"), 10
        model = LORA_MODELS.get(model, model)
    elif strategy == "linear_probe":  # features of unaugmented crops, computed once
        preset = "paper_none"
        if model == "prov_gigapath":
            lr, weight_decay = 1e-3, 1e-4  # prov-gigapath.py line 119
        else:  # features under fp16 autocast in 6 of the 7 scripts (e.g. virchow2.py line 66)
            precision = "fp16"
    else:
        raise ValueError(f"Unknown strategy {strategy!r}; use end_to_end, linear_probe or lora.")
    return Recipe(
        model=model,
        strategy=strategy,
        pretrained=model not in FROM_SCRATCH,
        input_size=224,
        epochs=100,
        batch_size=8,
        lr=lr,
        weight_decay=weight_decay,
        warmup_epochs=0,
        balanced=True,
        patience=patience,
        augment=dataclasses.replace(_NO_OWN_AUGMENTATION, preset=preset),
        optimiser="adam",
        schedule="plateau",
        precision=precision,
        partial_batch=True,
    )
