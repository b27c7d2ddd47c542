"""The shipped model's entry on the board, described from its checkpoint's own ``config.json``."""

from __future__ import annotations

from pathlib import Path

from models.archive import CheckpointFiles
from models.checkpoint_config import read_config
from store.entry import EntryMetadata

METHOD_OF_STRATEGY = {"end_to_end": "end-to-end", "linear_probe": "linear probe", "lora": "LoRA"}
PRETRAINING = {"imagenet_offline": "ImageNet", "hf_hub": "the backbone's own", "none": "none"}


def checkpoint_entry(checkpoint: Path) -> EntryMetadata:
    """An entry's description taken from a checkpoint's own ``config.json`` (the shipped model)."""
    with CheckpointFiles.open(checkpoint) as files:
        config, cfg = read_config(files)
    block = config["mitosis"]
    members = int(block.get("ensemble_size", 1))
    pretrained = block.get("provenance", {}).get("recipe", {}).get("pretrained", True)
    return EntryMetadata(
        model_name=f"Default model (shipped): {config['architecture']}"
        + (f", ensemble of {members}" if members > 1 else ""),
        team="maintainers",
        method_type=METHOD_OF_STRATEGY[block["strategy"]],
        backbone=config["architecture"],
        pretraining=PRETRAINING[cfg.weights] if pretrained else "none",
        training_data="AMi-Br train" if block.get("provenance", {}).get("train_split") else "",
        description="The model the Space ships; see the model card beside its weights.",
    )
