"""Fitting one model: recipe, device-side sampling and augmentation, schedule, EMA, early stop.

Crops are decoded once and kept on the device as uint8; each step samples a class-balanced
batch, augments it on the device and trains under bf16 autocast on CUDA (fp32 on the CPU).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn
from tqdm import tqdm

from models._registry import get_model_cfg
from models.factory import create_model
from models.inference import probabilities, run_batches
from models.preprocess import normalise, prepare
from training.augment import AugmentConfig, augment
from training.trainset import TrainSet

CV_SEED = 42


@dataclass
class Recipe:
    """Everything that decides a trained model, saved as ``recipe.json`` in the run."""

    model: str = "mobilenetv2_100.imagenet_offline"
    strategy: str = "end_to_end"
    pretrained: bool = True
    input_size: int | None = None  # None: the registry's
    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    ema_decay: float = 0.0  # 0: no EMA
    balanced: bool = True
    patience: int = 0  # > 0: early stopping on validation BA (paper protocol)
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optimiser: str = "adamw"  # or "adam": weight decay as an L2 term, the authors' choice
    schedule: str = "cosine"  # warm-up then cosine per step, or "plateau" (see _Plateau)
    # autocast on CUDA; "fp32" trains (and validates) in full precision; "fp16": a linear
    # probe's features are extracted under fp16 autocast (its head trains in fp32)
    precision: str = "bf16"
    partial_batch: bool = False  # True: ceil(N / batch) steps an epoch, the last one short
    distill_weight: float = 0.0  # > 0: a teacher's probabilities weigh this much in the loss
    teacher: str = ""  # what the teacher was (a candidate's name), for the record

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        """Inverse of ``dataclasses.asdict``."""
        data = dict(data)
        data["augment"] = AugmentConfig(**data.get("augment", {}))
        return cls(**data)


def on_device(trainset: TrainSet, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 crops (N, 3, H, W) and int64 labels on ``device``, as ``fit`` takes them."""
    images = torch.from_numpy(trainset.images).permute(0, 3, 1, 2).contiguous().to(device)
    return images, torch.from_numpy(trainset.y.astype(np.int64)).to(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and return a generator for sampling and augmentation."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


class _Ema:
    """Exponential moving average of a model's parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema, live in zip(
            self.model.state_dict().values(), model.state_dict().values(), strict=True
        ):
            if ema.dtype.is_floating_point:
                ema.lerp_(live, 1 - self.decay)
            else:
                ema.copy_(live)


def predict_proba(
    model: nn.Module, images: torch.Tensor, *, size: int, mean, std, bf16: bool = True
) -> np.ndarray:
    """P(atypical) of uint8 images (N, 3, H, W) on the model's device; no TTA."""
    forward = probabilities(model.eval())
    return run_batches(
        forward, images, size=size, mean=mean, std=std, device=images.device, bf16=bf16
    ).numpy()


def embed(model: nn.Module, images: torch.Tensor, *, size: int, mean, std, **half) -> torch.Tensor:
    """The frozen backbone's embeddings (what a linear probe's head sees), on the CPU.

    ``half``: ``bf16`` or ``fp16`` autocast on CUDA, as :func:`models.inference.run_batches`.
    """
    model.eval()
    return run_batches(
        lambda x: model.forward_head(model.forward_features(x), pre_logits=True),
        images,
        size=size,
        mean=mean,
        std=std,
        device=images.device,
        **half,
    )


def balanced_accuracy(y: np.ndarray, prob: np.ndarray) -> float:
    """Validation BA at 0.5 (scikit-learn's, as the scorer's)."""
    return float(balanced_accuracy_score(y, prob >= 0.5))


def _sampler(y: torch.Tensor, balanced: bool, generator: torch.Generator) -> torch.Tensor:
    """One epoch of indices: class-balanced draws with replacement, or a permutation."""
    if not balanced:
        return torch.randperm(len(y), generator=generator)
    weights = torch.where(y == 1, 1 / (y == 1).sum(), 1 / (y == 0).sum()).double().cpu()
    return torch.multinomial(weights, len(y), replacement=True, generator=generator)


class _Plateau:
    """The authors' schedule: halve the learning rate when validation BA stalls for 3 epochs.

    ``ReduceLROnPlateau(mode="max", factor=0.5, patience=3, min_lr=1e-7)``, stepped once per
    epoch with the epoch's validation BA (``efficientnetv2_m.py`` lines 120-127 and 197).
    """

    def __init__(self, optimiser: torch.optim.Optimizer) -> None:
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimiser, mode="max", factor=0.5, patience=3, min_lr=1e-7
        )

    def step(self) -> None:
        """Per training step: nothing changes."""

    def epoch(self, val_ba: float | None) -> None:
        """Per epoch: the validation BA decides (without validation the rate stays)."""
        if val_ba is not None:
            self.scheduler.step(val_ba)


class _Cosine:
    """Linear warm-up, then cosine decay to 0, per step."""

    def __init__(self, optimiser: torch.optim.Optimizer, total: int, warmup: int) -> None:
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda s: _schedule(s, total, warmup)
        )

    def step(self) -> None:
        """Per training step."""
        self.scheduler.step()

    def epoch(self, val_ba: float | None) -> None:
        """Per epoch: nothing changes."""


def _optimiser_and_schedule(recipe: Recipe, params, steps_per_epoch: int, device):
    """The recipe's optimiser and learning-rate schedule for ``params``."""
    if recipe.optimiser == "adam":
        optimiser = torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    elif recipe.optimiser == "adamw":
        optimiser = torch.optim.AdamW(
            params, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=device.type == "cuda"
        )
    else:
        raise ValueError(f"Unknown optimiser {recipe.optimiser!r}; use 'adamw' or 'adam'.")
    if recipe.schedule == "plateau":
        return optimiser, _Plateau(optimiser)
    if recipe.schedule == "cosine":
        total = recipe.epochs * steps_per_epoch
        return optimiser, _Cosine(optimiser, total, int(recipe.warmup_epochs * steps_per_epoch))
    raise ValueError(f"Unknown schedule {recipe.schedule!r}; use 'cosine' or 'plateau'.")


def _steps_per_epoch(n: int, recipe: Recipe) -> int:
    if recipe.partial_batch:
        return max(1, math.ceil(n / recipe.batch_size))
    return max(1, n // recipe.batch_size)


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Teacher:
    """A trained model whose probabilities on each augmented batch a student learns from.

    It sees exactly the student's augmented crops (resized and normalised its own way), so
    the soft target always describes the image the student is shown.
    """

    def __init__(self, model: nn.Module, *, size: int, mean, std) -> None:
        self.model = model.eval()
        self.size, self.mean, self.std = size, mean, std

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, bf16: bool) -> torch.Tensor:
        """P(atypical) of a float batch in [0, 1] (N, 3, H, W), any size."""
        if x.shape[-1] != self.size:
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
        x = normalise(x, self.mean, self.std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
            return torch.sigmoid(self.model(x).float().squeeze(1))


@dataclass
class FitResult:
    """A trained model and what happened on the way."""

    model: nn.Module
    history: list[dict]
    best_epoch: int
    images_per_second: float


def fit(
    recipe: Recipe,
    images: torch.Tensor,
    y: torch.Tensor,
    *,
    val: tuple[torch.Tensor, np.ndarray] | None = None,
    progress: bool = True,
    imagenet_dir: Path | None = None,
    teacher: Teacher | None = None,
) -> FitResult:
    """Train one model on uint8 images (N, 3, H, W) and labels already on the target device.

    ``imagenet_dir`` holds safetensors copies of the offline ImageNet weights, if any. With a
    ``teacher`` (distillation), the loss is ``(1 - w) BCE(label) + w BCE(teacher's probability)``
    with ``w = recipe.distill_weight``.
    """
    if recipe.distill_weight and teacher is None:
        raise ValueError("The recipe distils (distill_weight > 0) but no teacher was given.")
    generator = seed_everything(recipe.seed)
    device = images.device
    cfg = get_model_cfg(recipe.model)
    size = recipe.input_size or cfg.input_size
    model = create_model(
        recipe.model,
        strategy=recipe.strategy,
        pretrained=recipe.pretrained,
        imagenet_dir=imagenet_dir,
    ).to(device)
    if recipe.strategy == "linear_probe":
        return _fit_linear_probe(recipe, model, images, y, size=size, val=val)
    model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = _steps_per_epoch(len(y), recipe)
    optimiser, schedule = _optimiser_and_schedule(recipe, params, steps_per_epoch, device)
    bf16 = device.type == "cuda" and recipe.precision == "bf16"
    ema = _Ema(model, recipe.ema_decay) if recipe.ema_decay else None
    history, best, best_state, seen, start = [], (-1.0, 0), None, 0, time.perf_counter()
    aug_generator = torch.Generator(device=device).manual_seed(recipe.seed)
    for epoch in tqdm(
        range(1, recipe.epochs + 1),
        desc=f"{recipe.model} seed {recipe.seed}",
        disable=not progress,
        leave=False,
    ):
        model.train()
        order = _sampler(y, recipe.balanced, generator).to(device)
        for step in range(steps_per_epoch):
            batch = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            seen_crops = augment(prepare(images[batch], size), recipe.augment, aug_generator)
            x = normalise(seen_crops, cfg.mean, cfg.std).contiguous(
                memory_format=torch.channels_last
            )
            with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
                logits = model(x).float().squeeze(1)
            loss = F.binary_cross_entropy_with_logits(logits, y[batch].float())
            if recipe.distill_weight:
                soft = teacher.probabilities(seen_crops, bf16)
                loss = (1 - recipe.distill_weight) * loss + recipe.distill_weight * (
                    F.binary_cross_entropy_with_logits(logits, soft)
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            if ema:
                ema.update(model)
            seen += len(batch)
        record = {"epoch": epoch, "loss": loss.item()}
        scored = ema.model if ema else model
        if val is not None:
            prob = predict_proba(scored, val[0], size=size, mean=cfg.mean, std=cfg.std, bf16=bf16)
            record["val_ba"] = balanced_accuracy(val[1], prob)
        best, best_state = _keep_best(record, scored, best, best_state, recipe)
        history.append(record)
        if _stop_early(recipe, val, epoch, best):
            break
        schedule.epoch(record.get("val_ba"))
    if device.type == "cuda":
        torch.cuda.synchronize()
    final = ema.model if ema else model
    if best_state is not None:
        final.load_state_dict(best_state)
    return FitResult(
        final.eval(), history, best[1] or len(history), seen / (time.perf_counter() - start)
    )


def _keep_best(record: dict, model: nn.Module, best, best_state, recipe: Recipe):
    """The best (validation BA, epoch) so far, and its weights when early stopping needs them."""
    if "val_ba" in record and record["val_ba"] > best[0]:
        best = (record["val_ba"], record["epoch"])
        if recipe.patience:
            best_state = copy.deepcopy(model.state_dict())
    return best, best_state


def _stop_early(recipe: Recipe, val, epoch: int, best) -> bool:
    """Stop after ``patience`` epochs without a better validation BA (the authors' rule)."""
    return bool(recipe.patience) and val is not None and epoch - best[1] >= recipe.patience


def _fit_linear_probe(
    recipe: Recipe, model: nn.Module, images: torch.Tensor, y: torch.Tensor, *, size: int, val
) -> FitResult:
    """Embeddings computed once with the frozen backbone; only the linear head is trained.

    The head trains like a network would, on the embeddings: the recipe's sampler, batches,
    optimiser, schedule, epochs and early stopping on validation BA.
    """
    cfg = get_model_cfg(recipe.model)
    generator = torch.Generator().manual_seed(recipe.seed)
    bf16 = images.device.type == "cuda" and recipe.precision == "bf16"
    half = {"bf16": bf16, "fp16": images.device.type == "cuda" and recipe.precision == "fp16"}
    start = time.perf_counter()
    features = embed(model, images, size=size, mean=cfg.mean, std=cfg.std, **half)
    features = features.float().to(images.device)
    val_features = None
    if val is not None:
        val_features = embed(model, val[0], size=size, mean=cfg.mean, std=cfg.std, **half)
        val_features = val_features.float().to(images.device)
    head = model.get_classifier()
    steps_per_epoch = _steps_per_epoch(len(y), recipe)
    optimiser, schedule = _optimiser_and_schedule(
        recipe, list(head.parameters()), steps_per_epoch, images.device
    )
    history, best, best_state = [], (-1.0, 0), None
    for epoch in range(1, recipe.epochs + 1):
        order = _sampler(y, recipe.balanced, generator).to(images.device)
        for step in range(steps_per_epoch):
            batch = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            logits = head(features[batch]).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(logits, y[batch].float())
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
        record = {"epoch": epoch, "loss": loss.item()}
        if val_features is not None:
            with torch.no_grad():
                prob = torch.sigmoid(head(val_features).squeeze(1)).cpu().numpy()
            record["val_ba"] = balanced_accuracy(val[1], prob)
        best, best_state = _keep_best(record, head, best, best_state, recipe)
        history.append(record)
        if _stop_early(recipe, val, epoch, best):
            break
        schedule.epoch(record.get("val_ba"))
    if best_state is not None:
        head.load_state_dict(best_state)
    seen = len(y) * len(history)
    return FitResult(
        model.eval(), history, best[1] or len(history), seen / (time.perf_counter() - start)
    )


def folds(trainset: TrainSet, n_splits: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """The paper's slide-grouped, stratified folds of AMi-Br train."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=CV_SEED)
    return list(splitter.split(np.zeros(len(trainset.y)), trainset.y, trainset.groups))
