from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models import load_checkpoint
from models._registry import get_model_cfg
from models.augment import AugmentConfig, augment, dihedral, hed_jitter
from models.fit import Recipe, balanced_accuracy, fit, folds, predict_proba
from models.train import main
from models.trainset import TrainSet, load_train_set, pack_train_set
from settings import REPO_ROOT


def tiny_data(n: int = 24, size: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    y = torch.tensor([1, 0, 0] * (n // 3))
    images[y == 1, 0] = 255  # a learnable signal: atypical crops are red
    return images, y


@pytest.mark.parametrize("strategy", ["end_to_end", "linear_probe", "lora"])
def test_a_few_steps_of_every_strategy(strategy):
    images, y = tiny_data()
    recipe = Recipe(
        model="vit_tiny_test",
        strategy=strategy,
        pretrained=False,
        epochs=3,
        batch_size=8,
        lr=3e-3,
        warmup_epochs=0,
    )
    val = (images[:6], y[:6].numpy().astype(np.int8))
    result = fit(recipe, images, y, val=val, progress=False)
    assert len(result.history) == 3 and "val_ba" in result.history[-1]
    assert result.images_per_second > 0
    trainable = {n for n, p in result.model.named_parameters() if p.requires_grad}
    if strategy == "linear_probe":
        assert trainable == {"head.weight", "head.bias"}


def test_training_learns_a_learnable_signal():
    images, y = tiny_data(n=48, seed=0)
    held_out, held_out_y = tiny_data(n=24, seed=1)
    recipe = Recipe(
        model="vit_tiny_test", pretrained=False, epochs=8, batch_size=8, lr=3e-3, warmup_epochs=0
    )
    result = fit(recipe, images, y, progress=False)
    cfg = get_model_cfg("vit_tiny_test")
    prob = predict_proba(result.model, held_out, size=cfg.input_size, mean=cfg.mean, std=cfg.std)
    assert balanced_accuracy(held_out_y.numpy(), prob) >= 0.95
    assert result.history[-1]["loss"] < result.history[0]["loss"] / 2


def test_fit_is_deterministic_for_a_seed():
    images, y = tiny_data()
    recipe = Recipe(
        model="resnet18_128", pretrained=False, epochs=1, batch_size=8, input_size=32, ema_decay=0.9
    )
    a, b = (fit(recipe, images, y, progress=False).model.state_dict() for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_augmentations_keep_range_and_shape():
    x = torch.rand(6, 3, 32, 32)
    assert torch.equal(dihedral(x, torch.zeros(6, dtype=torch.long)), x)
    assert torch.equal(dihedral(x, torch.full((6,), 1)), torch.rot90(x, 1, dims=(2, 3)))
    assert torch.allclose(hed_jitter(x, 0.0), x, atol=1e-4)  # stain round trip is exact
    out = augment(x, AugmentConfig(hed=0.1), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x)


def test_folds_are_slide_grouped_and_stratified(real_release):
    trainset = load_train_set(real_release.public_dir / "amibr_train")
    split = folds(trainset)
    assert len(split) == 5
    for train_idx, val_idx in split:
        assert not set(trainset.groups[train_idx]) & set(trainset.groups[val_idx])
        assert 0.15 < trainset.y[val_idx].mean() < 0.30
    assert sorted(np.concatenate([v for _, v in split])) == list(range(len(trainset.y)))


def train(out, train_dir, *extra):
    return main(
        [
            "--out",
            str(out),
            "--train",
            str(train_dir),
            "--limit",
            "48",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--no-progress",
            "--device",
            "cpu",
            *extra,
        ]
    )


def test_fast_protocol_end_to_end_resumes_and_is_deterministic(real_release, tmp_path):
    train_dir = real_release.public_dir / "amibr_train"
    args = (
        "--model",
        "resnet18_128",
        "--no-pretrained",
        "--input-size",
        "64",
        "--folds",
        "2",
        "--members",
        "2",
    )
    assert train(tmp_path / "a", train_dir, *args) == 0
    run = tmp_path / "a"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_crops"] == 48 and len(metrics["cv"]["val_ba"]) == 2
    checkpoint = load_checkpoint(run / "model")
    assert checkpoint.config["mitosis"]["ensemble_size"] == 2
    assert checkpoint.config["mitosis"]["provenance"]["train_split"] == "amibr_train"
    assert checkpoint.input_size == 64
    member = run / "members" / "member0" / "model.safetensors"
    stamp = member.stat().st_mtime_ns
    assert train(run, train_dir, *args) == 0  # resumes: nothing is trained again
    assert member.stat().st_mtime_ns == stamp
    assert "member 0 trained" not in (run / "train.log").read_text().split("training crops")[-1]
    assert train(tmp_path / "b", train_dir, *args) == 0
    a, b = (load_file(str(tmp_path / r / "model" / "model.safetensors")) for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("strategy", ["linear_probe", "lora"])
def test_other_strategies_through_the_command(real_release, tmp_path, strategy):
    out = tmp_path / strategy
    assert (
        train(
            out,
            real_release.public_dir / "amibr_train",
            "--model",
            "vit_tiny_test",
            "--strategy",
            strategy,
            "--no-pretrained",
            "--folds",
            "0",
        )
        == 0
    )
    x = torch.rand(2, 3, 32, 32)
    loaded = load_checkpoint(out / "model")
    assert loaded.config["mitosis"]["strategy"] == strategy
    assert loaded.model(x).shape == (2, 1)


def test_paper_protocol_saves_one_checkpoint_per_fold(real_release, tmp_path):
    out = tmp_path / "paper"
    assert (
        train(
            out,
            real_release.public_dir / "amibr_train",
            "--protocol",
            "paper",
            "--model",
            "resnet18_128",
            "--input-size",
            "64",
            "--epochs",
            "3",
            "--patience",
            "1",
            "--folds",
            "2",
        )
        == 0
    )
    cv = json.loads((out / "cv.json").read_text())
    assert set(cv) == {"0", "1"}
    for fold in cv.values():
        assert len(fold["history"]) <= 3 and "val_ba" in fold["history"][0]
    assert load_checkpoint(out / "fold1").config["mitosis"]["provenance"]["fold"] == 1
    assert load_checkpoint(out / "model").config["mitosis"]["ensemble_size"] == 2


def test_packed_train_set_round_trip(real_release, tmp_path):
    train_dir = real_release.public_dir / "amibr_train"
    packed = load_train_set(pack_train_set(train_dir, tmp_path / "train.npz"))
    original = load_train_set(train_dir)
    assert isinstance(packed, TrainSet) and packed.images.shape == original.images.shape
    assert (packed.y == original.y).all() and (packed.groups == original.groups).all()
    assert np.abs(packed.images.astype(int) - original.images.astype(int)).mean() < 3


def test_training_code_cannot_reach_test_data(real_release):
    with pytest.raises(FileNotFoundError, match="No training split"):
        load_train_set(real_release.public_dir)  # the bundle root holds test crops: refused
    check = (
        "import sys, models.train, models.predict; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('evaluation', 'submissions', 'leaderboard', 'gradio')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", check], cwd=REPO_ROOT, check=True)
