"""Choosing the shipped model by cross-validation: the grid, resuming, budgets, distillation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from models.checkpoint import load_checkpoint
from settings import REPO_ROOT
from training import select
from training.augment import hed_jitter
from training.candidates import fold_models, read_grid, recipe_from, run_grid, summarise
from training.fit import Recipe, Teacher, fit, folds, predict_proba
from training.trainset import TrainSet

pytestmark = pytest.mark.slow  # processes, servers or real training: `make test` only

TINY = {"model": "vit_tiny_test", "pretrained": False, "epochs": 1, "batch_size": 8}
SMALL = {**TINY, "input_size": 32}


def tiny_trainset(n: int = 40) -> TrainSet:
    rng = np.random.default_rng(0)
    y = (np.arange(n) % 4 == 0).astype(np.int8)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    images[y == 1, :8] = 255  # a learnable mark
    return TrainSet(images, y, np.array([f"s{i % 10}" for i in range(n)]), np.arange(n).astype(str))


def write_grid(path, candidates):
    path.write_text(json.dumps({"candidates": candidates}))
    return read_grid(path)[0]


@pytest.fixture
def grid(tmp_path):
    return write_grid(
        tmp_path / "grid.json",
        [
            {"name": "a", "recipe": SMALL},
            {
                "name": "b",
                "members": 2,
                "recipe": {**TINY, "input_size": 32, "augment": {"hed": 0.2}},
            },
            {
                "name": "c",
                "teacher": "b",
                "recipe": {**TINY, "input_size": 32, "distill_weight": 0.5},
            },
        ],
    )


def test_the_grid_says_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="'s' learns from 'later', not listed before it"):
        write_grid(tmp_path / "g.json", [{"name": "s", "teacher": "later"}, {"name": "later"}])
    with pytest.raises(ValueError, match="a teacher and a distill_weight > 0 go together"):
        write_grid(tmp_path / "g.json", [{"name": "s", "recipe": {"distill_weight": 0.5}}])
    with pytest.raises(ValueError, match="Unknown recipe field\\(s\\) epoch"):
        recipe_from({"epoch": 3})
    assert recipe_from({"augment": {"hed": 0.3}}).augment.dihedral  # merged field by field


def test_the_committed_grid_names_registered_models_and_the_shipped_recipe():
    grid, baseline = read_grid(REPO_ROOT / "models" / "default-evidence" / "grid.json")
    assert baseline == "mnv2-128-x3" and grid[baseline].members == 3
    shipped = json.loads((REPO_ROOT / "models" / "default" / "config.json").read_text())
    recipe = shipped["mitosis"]["provenance"]["recipe"]
    assert grid[baseline].recipe.model == recipe["model"] and grid[baseline].size == 128
    sizes = {c.recipe.model.split(".")[0]: c.size for c in grid.values()}
    assert sizes["tf_efficientnet_lite2"] == 260 and sizes["mobilenetv2_100"] in (128, 224)
    assert any(c.teacher for c in grid.values()) and any(
        c.recipe.augment.stain_vectors for c in grid.values()
    )


def test_cross_validation_resumes_after_the_last_finished_fold(grid, tmp_path, monkeypatch):
    trainset, state_path = tiny_trainset(), tmp_path / "cv.json"
    state = run_grid(grid, trainset, state_path, torch.device("cpu"), only=["a"])
    assert sorted(state["candidates"]["a"]["folds"]) == ["0", "1", "2", "3", "4"]
    fold = state["candidates"]["a"]["folds"]["2"]
    assert len(fold["val_prob"]) == 8 and 0 <= fold["val_ba"] <= 1
    saved = json.loads(state_path.read_text())
    del saved["candidates"]["a"]["folds"]["3"], saved["candidates"]["a"]["folds"]["4"]
    state_path.write_text(json.dumps(saved))
    calls = []
    real_fit = select.run_grid.__globals__["fit"]
    monkeypatch.setattr(
        "training.candidates.fit", lambda *a, **k: calls.append(a[0].seed) or real_fit(*a, **k)
    )
    again = run_grid(grid, trainset, state_path, torch.device("cpu"), only=["a"])
    assert calls == [3, 4]  # only the missing folds, with their own seeds
    assert again["candidates"]["a"]["folds"]["2"] == fold
    with pytest.raises(ValueError, match="holds folds of other training crops \\(40 crops"):
        run_grid(grid, tiny_trainset(30), state_path, torch.device("cpu"))
    jpeg_like = tiny_trainset()
    jpeg_like.images[0, 0, 0] ^= 1  # the same crops in another encoding: other pixels
    with pytest.raises(ValueError, match="encoding and --limit included"):
        run_grid(grid, jpeg_like, state_path, torch.device("cpu"))


def test_a_changed_recipe_runs_its_folds_again(grid, tmp_path, monkeypatch):
    trainset, state_path = tiny_trainset(), tmp_path / "cv.json"
    run_grid(grid, trainset, state_path, torch.device("cpu"), only=["a"])
    edited = write_grid(tmp_path / "edited.json", [{"name": "a", "recipe": {**SMALL, "lr": 0.1}}])
    assert summarise(edited, json.loads(state_path.read_text()), trainset)[0]["folds_done"] == 0
    calls = []
    real_fit = select.run_grid.__globals__["fit"]
    monkeypatch.setattr(
        "training.candidates.fit", lambda *a, **k: calls.append(a[0].lr) or real_fit(*a, **k)
    )
    state = run_grid(edited, trainset, state_path, torch.device("cpu"))
    assert calls == [0.1] * 5 and "cv_ba_mean" in summarise(edited, state, trainset)[0]


def test_smoke_runs_cannot_touch_the_committed_evidence():
    with pytest.raises(SystemExit):
        select.main(["run", "--limit", "40"])


def test_a_budget_stops_between_folds(grid, tmp_path):
    state_path = tmp_path / "cv.json"
    state_path.write_text(
        json.dumps(
            {
                "train_crops": 40,
                "candidates": {
                    "b": {"folds": {"0": {"seconds": 1e6, "val_prob": [], "val_ba": 0}}}
                },
            }
        )
    )
    state = run_grid(grid, tiny_trainset(), state_path, torch.device("cpu"), budget_s=600)
    # the slowest fold seen (b's) would not fit in what is left: nothing more starts
    assert state["candidates"]["a"]["folds"] == {}
    assert set(state["candidates"]["b"]["folds"]) == {"0"}
    assert json.loads(state_path.read_text()) == state  # written before it stopped


def test_ensembles_and_students_are_cross_validated_fold_by_fold(grid, tmp_path):
    trainset = tiny_trainset()
    state = run_grid(grid, trainset, tmp_path / "cv.json", torch.device("cpu"))
    assert state["candidates"]["c"]["teacher"] == "b"
    rows = {r["name"]: r for r in summarise(grid, state, trainset)}
    oof = np.full(40, np.nan)
    for k, (_, val_idx) in enumerate(folds(trainset)):
        oof[val_idx] = state["candidates"]["c"]["folds"][str(k)]["val_prob"]
    row = rows["c"]
    assert row["oof_ba"] == pytest.approx(balanced_accuracy_score(trainset.y, oof >= 0.5))
    assert row["oof_auroc"] == pytest.approx(roc_auc_score(trainset.y, oof))
    at_threshold = balanced_accuracy_score(trainset.y, oof >= row["oof_threshold"])
    assert row["oof_ba_at_threshold"] == pytest.approx(at_threshold)
    assert row["oof_ba_at_threshold"] >= row["oof_ba"]
    assert row["cv_ba_mean"] == pytest.approx(
        np.mean([state["candidates"]["c"]["folds"][str(k)]["val_ba"] for k in range(5)])
    )
    report = select.table(grid, state, trainset, tmp_path / "missing", measure=False)
    assert "| c | vit_tiny_test | 32 | 1 | b |" in select.markdown(report)


def test_a_student_with_full_distillation_ignores_the_labels():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    teacher_net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(1))
    teacher_net(torch.zeros(1, 3, 32, 32))
    teacher = Teacher(teacher_net, size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    recipe = Recipe(**TINY, input_size=32, distill_weight=1.0, teacher="t")
    ones, zeros = torch.ones(16, dtype=torch.long), torch.zeros(16, dtype=torch.long)
    ones[0] = zeros[1] = 1 - ones[0]  # both classes, for the balanced sampler
    a = fit(recipe, images, ones, progress=False, teacher=teacher).model.state_dict()
    b = fit(recipe, images, 1 - ones, progress=False, teacher=teacher).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="no teacher was given"):
        fit(recipe, images, ones, progress=False)


def test_stain_vector_jitter_changes_the_hue_and_keeps_the_old_draws():
    x = torch.rand(6, 3, 16, 16) * 0.8 + 0.1
    assert torch.allclose(hed_jitter(x, 0.0, vectors=0.0), x, atol=1e-4)
    plain = hed_jitter(x, 0.1, torch.Generator().manual_seed(3))
    same = hed_jitter(x, 0.1, torch.Generator().manual_seed(3), vectors=0.0)
    assert torch.equal(plain, same)  # recipes without the new kind train as before
    moved = hed_jitter(x, 0.0, torch.Generator().manual_seed(3), vectors=0.2)
    ratio = (moved / x.clamp_min(1e-3)).mean(dim=(2, 3))
    assert (ratio.std(dim=1) > 1e-3).all()  # channels move differently: a colour change


def test_pack_fits_the_carry_or_says_what_to_do(grid, tmp_path, monkeypatch):
    train = tmp_path / "train"
    (train / "crops").mkdir(parents=True)
    trainset = tiny_trainset(8)
    for name, image in zip(trainset.names, trainset.images, strict=True):
        Image.fromarray(image).save(train / "crops" / f"{name}.png")
    (train / "labels.csv").write_text(
        "image,slide,label\n"
        + "".join(
            f"{n}.png,{g},{'atypical' if y else 'normal'}\n"
            for n, g, y in zip(trainset.names, trainset.groups, trainset.y, strict=True)
        )
    )
    report = select.pack(grid, ["a"], train, tmp_path / "carry", 92, None)
    assert (tmp_path / "carry" / "train.npz").is_file() and report["carry_mb"] < 1
    assert not list((tmp_path / "carry" / "weights").iterdir())  # not pretrained: no weights
    monkeypatch.setattr(select, "CARRY_LIMIT", 1)
    with pytest.raises(SystemExit, match="over the 64 MiB that may travel"):
        select.pack(grid, ["a"], train, tmp_path / "carry", 92, None)


def test_the_default_is_the_best_candidate_fast_enough():
    def row(name, ba, slowdown, mb=10.0):
        return {"name": name, "cv_ba_mean": ba, "vs_shipped": slowdown, "mb": mb}

    report = {
        "candidates": [
            row("big", 0.84, 3.0),
            row("fat", 0.83, 1.0, mb=90),
            row("quick", 0.82, 1.15),
            row("slowish", 0.81, 1.3),
            {"name": "unfinished", "folds_done": 2},
        ]
    }
    assert select.choose(report) == {"fast": "quick", "accurate": "big"}
    with pytest.raises(ValueError, match="--measure"):
        select.choose({"candidates": [{"name": "x", "cv_ba_mean": 0.8}]})


def test_final_chooses_from_the_written_table_only_while_it_holds_the_state_s_results(tmp_path):
    current = {"candidates": [{"name": "a", "cv_ba_mean": 0.8}, {"name": "b", "folds_done": 2}]}
    written = {
        "shipped": {"ms_per_crop": 2.0},
        "candidates": [
            {"name": "a", "cv_ba_mean": 0.8, "vs_shipped": 1.1, "mb": 9.0},
            {"name": "b", "folds_done": 2},
        ],
    }
    path = tmp_path / "candidates.json"
    path.write_text(json.dumps(written))
    assert select.measured_table(path, current) == written
    assert select.choose(select.measured_table(path, current))["fast"] == "a"
    current["candidates"][0]["cv_ba_mean"] = 0.81  # a fold re-run since the table was built
    with pytest.raises(ValueError, match="other cross-validation results than --state: build"):
        select.measured_table(path, current)
    for broken in ("[]", "{", '{"candidates": [{}]}'):
        path.write_text(broken)
        with pytest.raises(ValueError, match="is not a table written by table --out"):
            select.measured_table(path, current)
    with pytest.raises(ValueError, match="is not a table written by table --out"):
        select.measured_table(tmp_path / "missing.json", current)


def test_the_selection_script_runs_start_to_finish(real_release, tmp_path):
    grid = tmp_path / "grid.json"
    grid.write_text(
        json.dumps(
            {
                "candidates": [
                    {"name": "small", "recipe": SMALL},
                    {"name": "pair", "members": 2, "recipe": SMALL},
                ]
            }
        )
    )
    env = {
        **os.environ,
        "MITOSIS_DATA_DIR": str(real_release.data_dir),
        "MITOSIS_BOOTSTRAP_RESAMPLES": "1000",
        "STATE": str(tmp_path / "evidence" / "cv.json"),
        "PYTHON": sys.executable,
    }
    subprocess.run(
        [
            "bash",
            "scripts/train_default_model.sh",
            str(real_release.public_dir / "amibr_train"),
            str(tmp_path / "runs"),
            "--grid",
            str(grid),
            "--limit",
            "40",
            "--device",
            "cpu",
        ],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    evidence = tmp_path / "evidence"
    table = json.loads((evidence / "candidates.json").read_text())
    assert {r["name"] for r in table["candidates"]} == {"small", "pair"}
    assert table["shipped"]["vs_shipped"] == 1.0
    config = json.loads((tmp_path / "runs" / "final" / "model" / "config.json").read_text())
    chosen = config["mitosis"]["provenance"]["selected"]
    assert chosen in ("small", "pair") and config["mitosis"]["ensemble_size"] == (
        2 if chosen == "pair" else 1
    )
    (reading,) = json.loads((evidence / "test_readings.json").read_text())
    assert reading["reason"].startswith("the selected recipe's final model")
    scores = json.loads((evidence / "test_scores.json").read_text())
    assert scores["summary"]["atnorm_md"]["ba_mean"] == reading["ba"]["atnorm_md"]["ba_mean"]


def test_fold_models_are_the_cross_validation_s_own(grid, tmp_path):
    trainset, state_path = tiny_trainset(), tmp_path / "cv.json"
    state = run_grid(grid, trainset, state_path, torch.device("cpu"), only=["b"])
    paths = fold_models(grid, "b", trainset, torch.device("cpu"), tmp_path / "folds")
    assert [p.name for p in paths] == [f"fold{k}" for k in range(5)]
    images = torch.from_numpy(trainset.images).permute(0, 3, 1, 2).contiguous()
    for k, (_, val_idx) in enumerate(folds(trainset)):
        loaded = load_checkpoint(paths[k])
        assert loaded.config["mitosis"]["ensemble_size"] == 2
        pretrained = loaded.config["pretrained_cfg"]
        prob = predict_proba(
            loaded.model,
            images[val_idx],
            size=32,
            mean=pretrained["mean"],
            std=pretrained["std"],
            bf16=False,
        )
        expected = state["candidates"]["b"]["folds"][str(k)]["val_prob"]
        assert np.allclose(prob, expected, atol=1e-4)  # the same seeds, data and recipe
