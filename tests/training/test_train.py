from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models import load_checkpoint
from models._registry import get_model_cfg
from settings import REPO_ROOT
from training.augment import PAPER_PRESETS, AugmentConfig, augment, dihedral, hed_jitter
from training.fit import (
    Recipe,
    _optimiser_and_schedule,
    balanced_accuracy,
    fit,
    folds,
    predict_proba,
)
from training.protocols import paper_recipe
from training.train import main
from training.trainset import TrainSet, load_train_set, pack_train_set, smoke_subset

pytestmark = pytest.mark.slow  # processes, servers or real training: `make test` only


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


@pytest.mark.parametrize(
    ("strategy", "train_dir"), [("linear_probe", "amibr_train"), ("lora", "hf_dataset")]
)
def test_other_strategies_through_the_command(real_release, tmp_path, strategy, train_dir):
    out = tmp_path / strategy
    assert (
        train(
            out,
            real_release.public_dir / train_dir,
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
            "--no-pretrained",  # the paper's families have weights; this test model has none
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
    assert not (out / "model").exists()  # the paper's number is the folds' mean, no ensemble
    recipe = json.loads((out / "recipe.json").read_text())
    assert (recipe["optimiser"], recipe["schedule"], recipe["precision"]) == (
        "adam",
        "plateau",
        "fp32",
    )
    assert (recipe["lr"], recipe["weight_decay"], recipe["partial_batch"]) == (5e-5, 1e-5, True)
    assert recipe["augment"]["preset"] == "paper_end_to_end" and recipe["patience"] == 1


def test_packed_train_set_round_trip(real_release, tmp_path):
    train_dir = real_release.public_dir / "amibr_train"
    npz = pack_train_set(train_dir, tmp_path / "train.npz", quality=95)  # the shipped model's
    packed, original = load_train_set(npz, limit=300), load_train_set(train_dir, limit=300)
    assert isinstance(packed, TrainSet) and packed.images.shape == (300, 128, 128, 3)
    assert list(packed.names) == list(original.names)
    assert (packed.y == original.y).all() and (packed.groups == original.groups).all()
    assert np.abs(packed.images.astype(int) - original.images.astype(int)).mean() < 3


def test_a_smoke_run_decodes_only_its_crops_and_the_same_ones_from_every_format(
    real_release, tmp_path
):
    train_dir = real_release.public_dir / "amibr_train"
    full = load_train_set(train_dir)
    keep = smoke_subset(len(full.y), 25)
    assert len(keep) == 25 and (np.diff(keep) > 0).all()
    some = load_train_set(train_dir, limit=25)
    assert np.array_equal(some.images, full.images[keep])
    assert list(some.names) == list(full.names[keep]) and (some.y == full.y[keep]).all()
    assert len(load_train_set(train_dir, limit=10_000).y) == len(full.y)  # more than there are


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


@pytest.mark.parametrize(
    ("model", "strategy", "expected"),
    [
        # (model trained, pretrained, lr, weight decay, patience, augmentation preset)
        (
            "efficientnetv2_m",
            "end_to_end",
            ("efficientnetv2_m", False, 5e-5, 1e-5, 15, "paper_end_to_end"),
        ),
        (
            "swin_base_patch4_window7_224",
            "end_to_end",
            ("swin_base_patch4_window7_224", True, 5e-5, 1e-5, 15, "paper_end_to_end"),
        ),
        ("virchow2", "lora", ("virchow2_cls", True, 5e-5, 1e-5, 10, "paper_lora_virchow")),
        ("uni", "lora", ("uni", True, 5e-5, 1e-5, 10, "paper_lora_uni")),
        ("uni2_h", "lora", ("uni2_h", True, 5e-5, 1e-5, 10, "paper_none")),
        ("h_optimus_1", "lora", ("h_optimus_1", True, 5e-5, 1e-5, 10, "paper_lora_h_optimus_1")),
        ("virchow2", "linear_probe", ("virchow2", True, 5e-5, 1e-5, 15, "paper_none")),
        ("prov_gigapath", "linear_probe", ("prov_gigapath", True, 1e-3, 1e-4, 15, "paper_none")),
    ],
)
def test_the_paper_recipe_of_each_family_is_the_authors(model, strategy, expected):
    recipe = paper_recipe(model, strategy)
    got = (recipe.model, recipe.pretrained, recipe.lr, recipe.weight_decay, recipe.patience)
    assert (*got, recipe.augment.preset) == expected
    assert (recipe.batch_size, recipe.epochs, recipe.input_size) == (8, 100, 224)
    # linear probes extract features under fp16 autocast, as 6 of the 7 scripts do (not GigaPath)
    half = strategy == "linear_probe" and model != "prov_gigapath"
    assert (recipe.optimiser, recipe.schedule) == ("adam", "plateau")
    assert recipe.precision == ("fp16" if half else "fp32")
    assert not (recipe.augment.dihedral or recipe.augment.hed or recipe.augment.scale)


def test_virchow_lora_uses_the_class_token_and_half_normalisation():
    assert get_model_cfg("virchow2_cls").mean == get_model_cfg("virchow2_cls").std == (0.5,) * 3
    assert get_model_cfg("virchow2_cls").embedding == "pooled"
    assert get_model_cfg("virchow2").embedding == "cls_mean"  # the linear probe's


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_paper_presets_draw_per_crop_and_repeat_under_a_seed(preset):
    crops = torch.rand(1, 3, 32, 32).repeat(6, 1, 1, 1)
    config = dataclasses.replace(paper_recipe().augment, preset=preset)
    torch.manual_seed(0)
    first = augment(crops, config)
    torch.manual_seed(0)
    again = augment(crops, config)
    assert first.shape == crops.shape and torch.equal(first, again)
    assert 0 <= first.min() and first.max() <= 1
    if preset == "paper_none":
        assert torch.equal(first, crops)
    else:  # six copies of one crop come out different: parameters are drawn per crop
        assert len({tuple(c.flatten()[:64].tolist()) for c in first}) > 1


def test_the_plateau_schedule_halves_the_rate_after_four_epochs_without_gain():
    model = torch.nn.Linear(2, 1)
    recipe = paper_recipe()
    optimiser, schedule = _optimiser_and_schedule(
        recipe, list(model.parameters()), 10, torch.device("cpu")
    )
    assert isinstance(optimiser, torch.optim.Adam) and not isinstance(optimiser, torch.optim.AdamW)
    rates = []
    for val_ba in (0.70, 0.71, 0.71, 0.71, 0.71, 0.71, 0.71):  # best at epoch 2
        for _ in range(10):
            schedule.step()  # per step: nothing changes
        schedule.epoch(val_ba)
        rates.append(optimiser.param_groups[0]["lr"])
    assert rates == [5e-5] * 5 + [2.5e-5] * 2  # patience 3: the 4th flat epoch halves it


def test_the_linear_probe_stops_early_and_keeps_its_best_head(real_release):
    trainset = load_train_set(real_release.public_dir / "amibr_train", limit=40)
    pick = np.random.default_rng(0).permutation(40)  # both classes on both sides
    images = torch.from_numpy(trainset.images[pick]).permute(0, 3, 1, 2)
    y = torch.from_numpy(trainset.y[pick].astype(np.int64))
    recipe = dataclasses.replace(
        paper_recipe("resnet18_128", "linear_probe"),
        pretrained=False,
        input_size=32,
        epochs=30,
        patience=2,
    )
    val = (images[30:], trainset.y[pick][30:])
    result = fit(recipe, images[:30], y[:30], val=val, progress=False)
    scores = [r["val_ba"] for r in result.history]
    assert len(scores) < 30  # stopped early
    assert len(scores) - result.best_epoch == 2 and max(scores) == scores[result.best_epoch - 1]


def test_jpeg_training_copies_keep_the_lossless_crops(real_release, tmp_path):
    train_dir = real_release.public_dir / "amibr_train"
    jpeg = load_train_set(train_dir, jpeg_quality=95, limit=60)
    lossless = load_train_set(train_dir, limit=60)
    assert np.array_equal(jpeg.originals, lossless.images)
    difference = np.abs(jpeg.images.astype(int) - lossless.images.astype(int))
    assert 0 < difference.mean() < 3  # q95: close, not equal
    some = jpeg.subset(np.array([3, 1]))
    assert np.array_equal(some.originals, lossless.images[[3, 1]])
    assert list(some.names) == list(lossless.names[[3, 1]])
    with pytest.raises(ValueError, match="already holds JPEG crops"):
        load_train_set(tmp_path / "t.npz", jpeg_quality=95)  # refused before it is read


def test_cross_validation_scores_jpeg_trained_folds_on_both_encodings(real_release, tmp_path):
    out = tmp_path / "jpeg"
    train_dir = real_release.public_dir / "amibr_train"
    args = (
        *("--model", "resnet18_128", "--no-pretrained"),
        *("--input-size", "32", "--folds", "2", "--members", "0"),
    )
    assert train(out, train_dir, "--train-jpeg-quality", "95", *args) == 0
    assert train(out, train_dir, "--train-jpeg-quality", "95", *args) == 0  # resumes: all done
    metrics = json.loads((out / "metrics.json").read_text())
    effect = metrics["cv"]["lossless"]
    assert metrics["train_jpeg_quality"] == 95 and len(effect["val_ba"]) == 2
    deltas = np.subtract(effect["val_ba"], metrics["cv"]["val_ba"])
    assert effect["delta_val_ba"] == pytest.approx(deltas.tolist())
    assert 0 <= effect["decisions_agree"] <= 1 and effect["max_abs_prob_change"] >= 0
