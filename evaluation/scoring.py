"""Scoring validated predictions per split (``evaluation.prediction_file`` reads the file)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation import metrics
from evaluation.bundle import LabelStore, PublicBundle, SplitLabels
from evaluation.curves import reliability_bins, roc_points
from evaluation.errors import InvalidPredictionFile
from evaluation.prediction_file import Predictions
from evaluation.splits import AMIBR_TEST, TEST_SPLITS, get_split

SCORER_VERSION = "1.0"  # dotted numbers: a change of scores that makes older ones stale


@dataclass(frozen=True)
class SplitScore:
    """Every metric of one split; intervals are stratified-bootstrap 95 % CIs."""

    split: str
    n: int
    n_atypical: int
    balanced_accuracy: metrics.Interval
    sensitivity: float
    specificity: float
    auroc: metrics.Interval
    average_precision: float
    brier: float
    ece: float
    confusion: metrics.Confusion
    curves: dict | None = None  # ROC and reliability: public splits only

    def to_dict(self) -> dict:
        """Plain JSON-ready form."""
        return asdict(self)


def score_split(
    y_true: np.ndarray,
    prob_atypical: np.ndarray,
    predicted: np.ndarray,
    *,
    split: str,
    n_resamples: int = 2000,
    seed: int = 0,
) -> SplitScore:
    """Every metric of one split from aligned arrays."""
    return SplitScore(
        split=split,
        n=int(y_true.size),
        n_atypical=int(y_true.sum()),
        balanced_accuracy=metrics.balanced_accuracy_ci(
            y_true, predicted, n_resamples=n_resamples, seed=seed
        ),
        sensitivity=metrics.sensitivity_score(y_true, predicted),
        specificity=metrics.specificity_score(y_true, predicted),
        auroc=metrics.roc_auc_ci(y_true, prob_atypical, n_resamples=n_resamples, seed=seed),
        average_precision=metrics.average_precision_score(y_true, prob_atypical),
        brier=metrics.brier_score(y_true, prob_atypical),
        ece=metrics.expected_calibration_error(y_true, prob_atypical),
        confusion=metrics.confusion_counts(y_true, predicted),
        curves=None
        if get_split(split).hidden
        else {
            "roc": roc_points(y_true, prob_atypical),
            "reliability": reliability_bins(y_true, prob_atypical),
        },
    )


def score_predictions(
    predictions: Predictions,
    labels: Mapping[str, SplitLabels],
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, SplitScore]:
    """Score validated predictions on every split in ``labels``."""
    position = pd.Index(predictions.image_ids)
    scores = {}
    for split, truth in labels.items():
        rows = position.get_indexer(truth.image_ids)
        if (rows < 0).any():
            raise InvalidPredictionFile(
                f"The predictions lack {int((rows < 0).sum())} crop(s) of split '{split}'."
            )
        scores[split] = score_split(
            truth.y_true,
            predictions.prob_atypical[rows],
            predictions.predicted[rows],
            split=split,
            n_resamples=n_resamples,
            seed=seed,
        )
    return scores


def default_splits(labels_dir: Path) -> list[str]:
    """Every test split where the private label store exists, else AMi-Br test (public)."""
    if LabelStore.if_present(labels_dir) is None:
        return [AMIBR_TEST.name]
    return [s.name for s in TEST_SPLITS]


def load_labels(
    bundle: PublicBundle, labels_dir: Path, splits: Iterable[str]
) -> tuple[dict[str, SplitLabels], str | None]:
    """Labels of ``splits`` and the label-set hash (None when the private store is absent).

    AMi-Br test is public and scores without the private store; a hidden split without it
    raises ``LabelsUnavailable``.
    """
    hidden = any(get_split(s).hidden for s in splits)
    store = LabelStore(labels_dir) if hidden else LabelStore.if_present(labels_dir)
    if store is None:
        return {AMIBR_TEST.name: bundle.public_labels()}, None
    return {s: store.split_labels(s) for s in splits}, store.label_set_hash


def format_table(scores: Mapping[str, SplitScore]) -> str:
    """A fixed-width table of the main metrics, one split a line (for the command lines)."""
    lines = [
        f"{'split':<11} {'n':>5}  {'BA [95% CI]':<22} {'sens':>6} {'spec':>6}  "
        f"{'AUROC [95% CI]':<22} {'AP':>6} {'Brier':>6} {'ECE':>6}"
    ]
    for split, s in scores.items():
        ba, auc = s.balanced_accuracy, s.auroc
        lines.append(
            f"{get_split(split).title:<11} {s.n:>5}  "
            f"{ba.estimate:.4f} [{ba.low:.4f}, {ba.high:.4f}] {s.sensitivity:>6.4f} "
            f"{s.specificity:>6.4f}  {auc.estimate:.4f} [{auc.low:.4f}, {auc.high:.4f}] "
            f"{s.average_precision:>6.4f} {s.brier:>6.4f} {s.ece:>6.4f}"
        )
    return "\n".join(lines)
