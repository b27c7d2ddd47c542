"""What a training run writes: checkpoints with their provenance, ensembles, teachers.

Shared by ``models.train`` and ``training.select``, so every trained model records the same
provenance (split, commit, recipe, torch) in its ``config.json``.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import torch

from models._registry import get_model_cfg
from models.checkpoint import load_checkpoint, save_checkpoint
from models.checkpoint_config import make_config
from models.factory import Ensemble
from settings import REPO_ROOT
from training.fit import Recipe, Teacher


def run_input_size(recipe: Recipe) -> int:
    """The input size a recipe trains at (its own, or the registry's)."""
    return recipe.input_size or get_model_cfg(recipe.model).input_size


def git_sha() -> str:
    """The commit the code ran from, ``-dirty`` when the working tree differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        return f"{sha}-dirty" if git("status", "--porcelain", "--untracked-files=no") else sha
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def load_teacher(checkpoint_dirs: list[Path], device: torch.device) -> Teacher:
    """The mean of trained checkpoints, as a teacher on ``device``."""
    loaded = [load_checkpoint(d) for d in checkpoint_dirs]
    nets = [c.model.to(device) for c in loaded]
    pretrained = loaded[0].config["pretrained_cfg"]
    return Teacher(
        Ensemble.of(nets),
        size=int(pretrained["input_size"][-1]),
        mean=tuple(pretrained["mean"]),
        std=tuple(pretrained["std"]),
    )


def provenance(recipe: Recipe, extra: dict) -> dict:
    """What a trained model records about how it was made (``mitosis.provenance``)."""
    return {
        "train_split": "amibr_train",
        "git_sha": git_sha(),
        "seed": recipe.seed,
        "recipe": dataclasses.asdict(recipe),
        "torch": torch.__version__,
        **extra,
    }


def save_run_model(
    model,
    recipe: Recipe,
    directory: Path,
    extra: dict,
    *,
    card: str | None = None,
    threshold: float = 0.5,
) -> Path:
    """Save a trained model (or ensemble) as a checkpoint with its recipe's provenance."""
    cfg = dataclasses.replace(get_model_cfg(recipe.model), input_size=run_input_size(recipe))
    members = model.members if isinstance(model, Ensemble) else [model]
    config = make_config(
        cfg,
        recipe.strategy,
        num_features=members[0].num_features,
        ensemble_size=len(members),
        threshold=threshold,
        provenance=provenance(recipe, extra),
    )
    return save_checkpoint(model.cpu(), directory, config, card=card)


def assemble(recipe: Recipe, member_dirs: list[Path], out: Path, extra: dict) -> Path:
    """The final checkpoint: the single member, or an ensemble of all members."""
    if len(member_dirs) == 1:
        shutil.copytree(member_dirs[0], out, dirs_exist_ok=True)
        return out
    ensemble = Ensemble([load_checkpoint(d).model for d in member_dirs])
    return save_run_model(ensemble, recipe, out, {"members": len(member_dirs), **extra})
