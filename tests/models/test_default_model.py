from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from evaluation.bundle import PublicBundle
from evaluation.model_card import generated_card
from evaluation.prediction_file import read_predictions
from evaluation.run_checkpoint import load_split_crops
from evaluation.scoring import load_labels, score_predictions
from models import load_checkpoint
from models.predictor import Predictor
from settings import REPO_ROOT, Settings

DEFAULT = Settings.from_env({}).default_checkpoint
PREDICTIONS = REPO_ROOT / "tests" / "data" / "default_model_predictions.csv"


def card_table() -> dict[str, list[float]]:
    """Numbers of the model card's results table, per split."""
    rows = {}
    for line in (DEFAULT / "README.md").read_text().splitlines():
        match = re.match(r"\| (amibr_test|atnorm_br|atnorm_md) \| \d+ \(\d+\) \| (.*) \|$", line)
        if match:
            rows[match[1]] = [float(x) for x in re.findall(r"\d\.\d{4}", match[2])]
    return rows


def test_default_checkpoint_is_shipped_offline_and_small():
    weights = (DEFAULT / "model.safetensors").stat().st_size
    assert weights <= 60 * 2**20
    checkpoint = load_checkpoint(DEFAULT)
    provenance = checkpoint.config["mitosis"]["provenance"]
    assert provenance["train_split"] == "amibr_train"
    assert checkpoint.config["mitosis"]["ensemble_size"] == 3
    assert checkpoint.threshold == 0.5 and checkpoint.input_size == 128


def test_model_card_numbers_are_reproduced_by_the_scorer(real_release):
    bundle = PublicBundle(real_release.public_dir)
    splits = ["amibr_test", "atnorm_br", "atnorm_md"]
    labels, label_hash = load_labels(bundle, real_release.labels_dir, splits)
    assert label_hash in (DEFAULT / "README.md").read_text()
    predictions = read_predictions(PREDICTIONS, bundle.manifest)
    scores = score_predictions(predictions, labels)
    table = card_table()
    assert set(table) == set(splits)
    for split, s in scores.items():
        ba, auc = s.balanced_accuracy, s.auroc
        measured = [
            ba.estimate,
            ba.low,
            ba.high,
            s.sensitivity,
            s.specificity,
            auc.estimate,
            auc.low,
            auc.high,
        ]
        assert table[split] == pytest.approx(measured, abs=5e-5)


def test_the_card_is_what_the_generator_gives(real_release):
    """Its numbers come from the scorer, its evidence table from the files on disk."""
    card = DEFAULT / "README.md"
    assert generated_card(real_release, card) == card.read_text()
    no_cv = "| how the recipe was chosen (CV table) | `models/default-evidence/cv.json` | **no**"
    assert no_cv in card.read_text()  # until a GPU session commits it (issue 22)


def test_the_model_still_makes_those_predictions(real_release):
    bundle = PublicBundle(real_release.public_dir)
    stored = pd.read_csv(PREDICTIONS, dtype={"image_id": str}).set_index("image_id")
    predictor = Predictor(DEFAULT, device="cpu")
    for split in ("amibr_test", "atnorm_br", "atnorm_md"):
        ids = bundle.split_ids(split)[:24]
        crops = load_split_crops(bundle, split, None)[:24]
        prob = predictor.predict_array(crops)
        assert np.allclose(prob, stored.loc[ids, "prob_atypical"], atol=2e-6)
