"""Choosing the shipped model: a grid of candidate recipes, compared by cross-validation only.

``python -m training.select`` (see ``training/select.py`` for the commands) runs each candidate of a
grid file through the paper's slide-grouped 5-fold cross-validation on AMi-Br train, one
(candidate, fold) at a time, and records every finished fold in a state file (``cv.json``), so
a run stopped by its time budget, or on another machine, resumes after the last finished fold.
The test sets are not read here: nothing in ``models`` opens them.

A candidate is a recipe (overrides of ``Recipe``'s defaults), a number of ensemble members,
and optionally a teacher: another candidate of the grid whose members, trained on the same
fold, the student learns from (distillation; the teacher never sees the validation fold).

Grid file::

    {"baseline": "mnv2-128",
     "candidates": [{"name": "mnv2-128", "recipe": {"input_size": 128}},
                    {"name": "lite0-x3", "recipe": {"model": "..."}, "members": 3},
                    {"name": "mnv2-from-lite0", "teacher": "lite0-x3",
                     "recipe": {"distill_weight": 0.5}}]}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from fileio import PUBLIC, atomic_write
from models._registry import get_model_cfg
from models.factory import Ensemble
from training.augment import AugmentConfig
from training.fit import Recipe, Teacher, balanced_accuracy, fit, folds, on_device, predict_proba
from training.runs import run_input_size, save_run_model
from training.trainset import TrainSet

log = logging.getLogger("training.select")
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.01), 2)


@dataclass(frozen=True)
class Candidate:
    """One recipe of the grid: how it trains, how many members, and whom it learns from."""

    name: str
    recipe: Recipe
    members: int = 1
    teacher: str = ""

    @property
    def size(self) -> int:
        """The input size its networks see."""
        return run_input_size(self.recipe)


def recipe_from(overrides: dict) -> Recipe:
    """``Recipe()`` with ``overrides`` (its ``augment`` merged field by field)."""
    overrides = dict(overrides)
    augment = dataclasses.replace(AugmentConfig(), **overrides.pop("augment", {}))
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Recipe)}
    if unknown:
        raise ValueError(f"Unknown recipe field(s) {', '.join(sorted(unknown))} in the grid.")
    return dataclasses.replace(Recipe(), augment=augment, **overrides)


def read_grid(path: Path) -> tuple[dict[str, Candidate], str]:
    """The grid's candidates by name, and its baseline's name; errors name the candidate."""
    data = json.loads(Path(path).read_text())
    grid: dict[str, Candidate] = {}
    for entry in data["candidates"]:
        name = entry["name"]
        if name in grid:
            raise ValueError(f"The grid names '{name}' twice.")
        candidate = Candidate(
            name,
            recipe_from(entry.get("recipe", {})),
            int(entry.get("members", 1)),
            entry.get("teacher", ""),
        )
        if candidate.teacher and candidate.teacher not in grid:
            raise ValueError(f"'{name}' learns from '{candidate.teacher}', not listed before it.")
        if bool(candidate.teacher) != bool(candidate.recipe.distill_weight):
            raise ValueError(f"'{name}': a teacher and a distill_weight > 0 go together.")
        grid[name] = candidate
    baseline = data.get("baseline", next(iter(grid)))
    if baseline not in grid:
        raise ValueError(f"The baseline '{baseline}' is not a candidate of the grid.")
    return grid, baseline


def fingerprint(grid: dict[str, Candidate], name: str) -> str:
    """What decides a candidate's fold results: its recipe, members and teacher, recursively."""
    candidate = grid[name]
    described = {
        "recipe": dataclasses.asdict(candidate.recipe),
        "members": candidate.members,
        "teacher": fingerprint(grid, candidate.teacher) if candidate.teacher else "",
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def data_fingerprint(trainset: TrainSet) -> str:
    """The training crops' identity: pixels (so JPEG copies differ from PNGs), labels, names."""
    digest = hashlib.sha256(trainset.images.tobytes())
    digest.update(trainset.y.tobytes())
    digest.update("\n".join(map(str, trainset.names)).encode())
    return digest.hexdigest()[:16]


def _write(path: Path, data: dict) -> None:
    atomic_write(
        path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, sort_keys=True)), mode=PUBLIC
    )


def train_candidate(
    candidate: Candidate, images, y, device, fold: int, imagenet_dir, grid, progress
) -> list[torch.nn.Module]:
    """Train the candidate's members on ``images`` (a fold's training part, or all of them).

    A student's teacher is trained first on the same images. Member ``m`` of fold ``k`` uses
    seed ``recipe.seed + k + 100 m``, in cross-validation and in ``fold_models`` alike.
    """
    teacher = None
    if candidate.teacher:
        parent = grid[candidate.teacher]
        nets = train_candidate(parent, images, y, device, fold, imagenet_dir, grid, progress)
        cfg = get_model_cfg(parent.recipe.model)
        teacher = Teacher(Ensemble.of(nets), size=parent.size, mean=cfg.mean, std=cfg.std)
    nets = []
    for m in range(candidate.members):
        recipe = dataclasses.replace(
            candidate.recipe, seed=candidate.recipe.seed + fold + 100 * m, teacher=candidate.teacher
        )
        result = fit(
            recipe, images, y, progress=progress, imagenet_dir=imagenet_dir, teacher=teacher
        )
        nets.append(result.model)
    return nets


def run_grid(
    grid: dict[str, Candidate],
    trainset: TrainSet,
    state_path: Path,
    device: torch.device,
    *,
    only: list[str] | None = None,
    budget_s: float = float("inf"),
    n_splits: int = 5,
    imagenet_dir: Path | None = None,
    progress: bool = False,
) -> dict:
    """Cross-validate the grid's candidates, fold by fold, within ``budget_s`` seconds.

    Every finished fold is written to ``state_path`` at once. A fold is started only if the
    slowest finished fold of that candidate (or, before any, of any candidate) fits in what
    is left of the budget. Returns the state.
    """
    state = json.loads(Path(state_path).read_text()) if Path(state_path).is_file() else {}
    crops, data = int(len(trainset.y)), data_fingerprint(trainset)
    if state.get("data", data) != data:
        raise ValueError(
            f"{state_path} holds folds of other training crops ({state.get('train_crops')} "
            f"crops, data {state['data']}; these are {crops}, data {data}): finish it with the "
            "same data (encoding and --limit included), or start another state file."
        )
    state.update(train_crops=crops, data=data)
    results = state.setdefault("candidates", {})
    images, y = on_device(trainset, device)
    started = time.monotonic()
    for name in only or list(grid):
        candidate = grid[name]
        record = results.setdefault(name, {})
        if record.get("fingerprint") not in (None, fingerprint(grid, name)):
            log.info("%s: its recipe changed since its folds ran; they run again", name)
            record["folds"] = {}
        record.update(
            fingerprint=fingerprint(grid, name),
            recipe=dataclasses.asdict(candidate.recipe),
            members=candidate.members,
            teacher=candidate.teacher,
        )
        done = record.setdefault("folds", {})
        for k, (train_idx, val_idx) in enumerate(folds(trainset, n_splits)):
            if str(k) in done:
                continue
            seconds = [f["seconds"] for c in results.values() for f in c.get("folds", {}).values()]
            own = [f["seconds"] for f in done.values()]
            needed = max(own or seconds or [0.0])
            if time.monotonic() - started + needed > budget_s:
                log.info("budget reached: %s fold %d and later are left for the next run", name, k)
                _write(state_path, state)
                return state
            t0 = time.monotonic()
            nets = train_candidate(
                candidate, images[train_idx], y[train_idx], device, k, imagenet_dir, grid, progress
            )
            cfg = get_model_cfg(candidate.recipe.model)
            prob = np.mean(
                [
                    predict_proba(
                        net,
                        images[val_idx],
                        size=candidate.size,
                        mean=cfg.mean,
                        std=cfg.std,
                        bf16=candidate.recipe.precision == "bf16",
                    )
                    for net in nets
                ],
                axis=0,
            )
            truth = trainset.y[val_idx]
            done[str(k)] = {
                "val_ba": balanced_accuracy(truth, prob),
                "val_auroc": float(roc_auc_score(truth, prob))
                if 0 < truth.sum() < len(truth)
                else None,
                "val_prob": np.round(prob, 5).tolist(),
                "seconds": round(time.monotonic() - t0, 1),
                "device": str(device),
            }
            _write(state_path, state)
            log.info("%s fold %d: validation BA %.4f", name, k, done[str(k)]["val_ba"])
    return state


def summarise(
    grid: dict[str, Candidate], state: dict, trainset: TrainSet, n_splits: int = 5
) -> list[dict]:
    """One row per candidate with every fold finished: CV BA mean ± std, out-of-fold numbers.

    The out-of-fold threshold is the one that maximises the out-of-fold BA (0.5 on ties).
    """
    splits = folds(trainset, n_splits)
    rows = []
    for name, candidate in grid.items():
        record = state.get("candidates", {}).get(name, {})
        current = record.get("fingerprint") == fingerprint(grid, name)
        done = record.get("folds", {}) if current else {}  # folds of an older recipe: not its
        if len(done) < n_splits:
            rows.append({"name": name, "folds_done": len(done)})
            continue
        oof = np.full(len(trainset.y), np.nan)
        for k, (_, val_idx) in enumerate(splits):
            oof[val_idx] = done[str(k)]["val_prob"]
        scores = [done[str(k)]["val_ba"] for k in range(n_splits)]
        by_threshold = [balanced_accuracy(trainset.y, (oof >= t).astype(float)) for t in THRESHOLDS]
        best = max(by_threshold)
        ties = [t for t, ba in zip(THRESHOLDS, by_threshold, strict=True) if ba == best]
        rows.append(
            {
                "name": name,
                "folds_done": n_splits,
                "model": candidate.recipe.model,
                "input_size": candidate.size,
                "members": candidate.members,
                "teacher": candidate.teacher,
                "cv_ba_mean": float(np.mean(scores)),
                "cv_ba_std": float(np.std(scores)),
                "oof_ba": balanced_accuracy(trainset.y, oof),
                "oof_auroc": float(roc_auc_score(trainset.y, oof)),
                "oof_threshold": float(min(ties, key=lambda t: abs(t - 0.5))),
                "oof_ba_at_threshold": float(best),
                "gpu_seconds": float(sum(done[str(k)]["seconds"] for k in range(n_splits))),
            }
        )
    return rows


def fold_models(
    grid: dict[str, Candidate],
    name: str,
    trainset: TrainSet,
    device: torch.device,
    out: Path,
    *,
    n_splits: int = 5,
    imagenet_dir: Path | None = None,
) -> list[Path]:
    """The candidate's cross-validation models, saved as ``out/fold<k>`` (resumable).

    Trained as in ``run_grid`` (same folds, seeds and teacher), so scoring them on the test
    sets gives the mean ± std over fold models that the paper's rows are.
    """
    candidate = grid[name]
    images, y = on_device(trainset, device)
    paths = []
    for k, (train_idx, _) in enumerate(folds(trainset, n_splits)):
        path = Path(out) / f"fold{k}"
        if not (path / "config.json").is_file():
            nets = train_candidate(
                candidate, images[train_idx], y[train_idx], device, k, imagenet_dir, grid, False
            )
            recipe = dataclasses.replace(candidate.recipe, teacher=candidate.teacher)
            save_run_model(Ensemble.of(nets), recipe, path, {"selected": name, "fold": k})
            log.info("%s fold %d model saved", name, k)
        paths.append(path)
    return paths
