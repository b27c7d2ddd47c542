"""Metrics of atypical-vs-normal classification, with bootstrap confidence intervals.

Pure functions in scikit-learn's style: ``(y_true, y_pred_or_score, *, options)``; atypical is the
positive class (``y_true == 1``); point values come from scikit-learn, intervals are ours.

The stratified bootstrap resamples atypical and normal crops separately with replacement, so
every resample keeps the split's class counts. For thresholded metrics it is drawn exactly and
cheaply: the number of correct calls among ``n`` resampled positives is Binomial(n, TPR).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval ``[low, high]``."""

    estimate: float
    low: float
    high: float
    confidence: float


@dataclass(frozen=True)
class Confusion:
    """Confusion counts with atypical as the positive class."""

    tp: int
    fn: int
    tn: int
    fp: int


def _labels(y_true, *, both_classes: bool = True) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array; found shape {y.shape}.")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 (normal) and 1 (atypical).")
    y = y.astype(np.int8)
    if both_classes and (y.min() == y.max()):
        raise ValueError(
            "y_true holds only one class; this metric needs atypical and normal crops."
        )
    return y


def _predictions(y_true: np.ndarray, y_pred, name: str = "y_pred") -> np.ndarray:
    p = np.asarray(y_pred)
    if p.shape != y_true.shape:
        raise ValueError(f"{name} has {p.size} values but y_true has {y_true.size}.")
    if not np.isin(p, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 (normal) and 1 (atypical).")
    return p.astype(np.int8)


def _probabilities(y_true: np.ndarray, y_prob, name: str = "prob_atypical") -> np.ndarray:
    p = np.asarray(y_prob, dtype=np.float64)
    if p.shape != y_true.shape:
        raise ValueError(f"{name} has {p.size} values but y_true has {y_true.size}.")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"{name} must hold finite probabilities in [0, 1].")
    return p


def _check_bootstrap(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1; found {n_resamples}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1; found {confidence}.")


def confusion_counts(y_true, y_pred) -> Confusion:
    """Confusion counts; TP = atypical called atypical, TN = normal called normal.

    Example:
        >>> confusion_counts([0, 1, 0, 0, 1, 0], [0, 1, 0, 0, 0, 1])
        Confusion(tp=1, fn=1, tn=3, fp=1)
    """
    y = _labels(y_true, both_classes=False)
    p = _predictions(y, y_pred)
    tp = int(np.sum((y == 1) & (p == 1)))
    tn = int(np.sum((y == 0) & (p == 0)))
    return Confusion(tp=tp, fn=int(np.sum(y == 1)) - tp, tn=tn, fp=int(np.sum(y == 0)) - tn)


def sensitivity_score(y_true, y_pred) -> float:
    """Sensitivity (recall of atypical) = TP / (TP + FN).

    Example:
        >>> sensitivity_score([0, 1, 0, 1], [0, 1, 1, 0])
        0.5
    """
    y = _labels(y_true)
    return float(skm.recall_score(y, _predictions(y, y_pred), pos_label=1))


def specificity_score(y_true, y_pred) -> float:
    """Specificity (recall of normal) = TN / (TN + FP).

    Example:
        >>> specificity_score([0, 1, 0, 0], [0, 1, 1, 0])
        0.6666666666666666
    """
    y = _labels(y_true)
    return float(skm.recall_score(y, _predictions(y, y_pred), pos_label=0))


def balanced_accuracy_score(y_true, y_pred) -> float:
    """Balanced accuracy BA = (TP / (TP + FN) + TN / (TN + FP)) / 2. Chance 0.5, perfect 1.0.

    Raises:
        ValueError: inputs of different length, empty, not binary, or one class in y_true.

    Example:
        >>> balanced_accuracy_score([0, 1, 0, 0, 1, 0], [0, 1, 0, 0, 0, 1])
        0.625
    """
    y = _labels(y_true)
    return float(skm.balanced_accuracy_score(y, _predictions(y, y_pred)))


def roc_auc_score(y_true, prob_atypical) -> float:
    """Area under the ROC curve.

    AUROC = P(score of a random atypical > score of a random normal), ties counted one half.

    Example:
        >>> roc_auc_score([0, 1, 0, 1], [0.1, 0.9, 0.6, 0.4])
        0.75
    """
    y = _labels(y_true)
    return float(skm.roc_auc_score(y, _probabilities(y, prob_atypical)))


def average_precision_score(y_true, prob_atypical) -> float:
    """Average precision AP = sum_k (R_k - R_{k-1}) P_k over descending score thresholds.

    Example:
        >>> average_precision_score([0, 1, 0, 1], [0.1, 0.9, 0.6, 0.4])
        0.8333333333333333
    """
    y = _labels(y_true)
    return float(skm.average_precision_score(y, _probabilities(y, prob_atypical)))


def brier_score(y_true, prob_atypical) -> float:
    """Brier score = mean((prob_atypical - y_true)^2). 0 is perfect; always 0.5 scores 0.25.

    Example:
        >>> brier_score([0, 1], [0.2, 0.6])
        0.1
    """
    y = _labels(y_true, both_classes=False)
    return float(skm.brier_score_loss(y, _probabilities(y, prob_atypical), pos_label=1))


def expected_calibration_error(y_true, prob_atypical, *, n_bins: int = 10) -> float:
    """ECE = sum_b (n_b / n) * |mean(y_true in b) - mean(prob_atypical in b)|.

    Bins are ``n_bins`` equal-width intervals of prob_atypical over [0, 1] (the last one
    closed), empty bins skipped.

    Example:
        >>> expected_calibration_error([0, 0, 1, 1], [0.1, 0.3, 0.7, 0.9], n_bins=2)
        0.2
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1; found {n_bins}.")
    y = _labels(y_true, both_classes=False)
    p = _probabilities(y, prob_atypical)
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    gap = np.bincount(bins, weights=y - p, minlength=n_bins)
    return float(np.abs(gap).sum() / y.size)


def _class_recalls(y: np.ndarray, correct: np.ndarray) -> tuple[int, int, int, int]:
    pos = y == 1
    return int(pos.sum()), int(correct[pos].sum()), int((~pos).sum()), int(correct[~pos].sum())


def _interval(estimate: float, samples: np.ndarray, confidence: float) -> Interval:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), confidence)


def balanced_accuracy_ci(
    y_true, y_pred, *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """Balanced accuracy with a stratified bootstrap percentile confidence interval.

    BA = (TP / (TP + FN) + TN / (TN + FP)) / 2. A resample draws n_pos atypical and n_neg normal
    crops with replacement; its TP ~ Binomial(n_pos, TP/n_pos) and TN ~ Binomial(n_neg,
    TN/n_neg), which is that resampling exactly.

    Raises:
        ValueError: inputs of different length, empty, not binary, or one class in y_true.

    Example:
        >>> balanced_accuracy_ci([0, 1, 0, 0, 1, 0], [0, 1, 0, 0, 0, 1]).estimate
        0.625
    """
    _check_bootstrap(n_resamples, confidence)
    y = _labels(y_true)
    p = _predictions(y, y_pred)
    n_pos, tp, n_neg, tn = _class_recalls(y, p == y)
    rng = np.random.default_rng(seed)
    samples = (
        rng.binomial(n_pos, tp / n_pos, n_resamples) / n_pos
        + rng.binomial(n_neg, tn / n_neg, n_resamples) / n_neg
    ) / 2
    return _interval(balanced_accuracy_score(y, p), samples, confidence)


def _bootstrap_counts(rng: np.random.Generator, n: int, n_resamples: int) -> np.ndarray:
    """(n_resamples, n) multiplicities of n items drawn with replacement, one row a resample."""
    draws = rng.integers(0, n, size=(n_resamples, n), dtype=np.int32)
    draws += (np.arange(n_resamples, dtype=np.int32) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=n_resamples * n).reshape(n_resamples, n)


def roc_auc_ci(
    y_true, prob_atypical, *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """AUROC with a stratified bootstrap percentile confidence interval.

    AUROC = sum_i sum_j w_i v_j [1(s_i > s_j) + 1(s_i = s_j) / 2] / (n_pos n_neg) over atypical
    crops i and normal crops j, where w and v are a resample's multiplicities (all ones for the
    point estimate). Sorting the normal scores once turns the double sum into a cumulative sum
    and a gather per resample.

    Raises:
        ValueError: inputs of different length, empty, outside [0, 1], or one class in y_true.

    Example:
        >>> roc_auc_ci([0, 1, 0, 1], [0.1, 0.9, 0.6, 0.4]).estimate
        0.75
    """
    _check_bootstrap(n_resamples, confidence)
    y = _labels(y_true)
    s = _probabilities(y, prob_atypical)
    pos, neg = s[y == 1], np.sort(s[y == 0])
    below = np.searchsorted(neg, pos, side="left")
    at_or_below = np.searchsorted(neg, pos, side="right")
    rng = np.random.default_rng(seed)
    w = _bootstrap_counts(rng, pos.size, n_resamples)
    v = _bootstrap_counts(rng, neg.size, n_resamples)
    cum = np.zeros((n_resamples, neg.size + 1), dtype=np.int64)
    np.cumsum(v, axis=1, out=cum[:, 1:])
    wins = cum[:, below] + (cum[:, at_or_below] - cum[:, below]) / 2
    samples = (w * wins).sum(axis=1) / (pos.size * neg.size)
    return _interval(roc_auc_score(y, s), samples, confidence)


def simultaneous_margin(
    y_true_by_split,
    y_pred_by_split,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> float:
    """The gap in mean balanced accuracy that tells two of K entries apart, for all pairs at once.

    Entry k's score is its mean balanced accuracy over S splits, m_k = (1/S) sum_s BA_s,k. One
    stratified bootstrap resamples each split's atypical and normal crops with replacement,
    the same draw for every entry (paired), giving m*_k and the deviations d_k = m*_k - m_k.
    The margin c is the ``confidence`` quantile of the range R = max_k d_k - min_k d_k. As
    |d_i - d_j| <= R for every pair, with probability ``confidence`` every pairwise difference
    is within c of its estimate at once (Tukey-style simultaneous intervals from the bootstrap
    max statistic), so calling a pair different only when |m_i - m_j| > c keeps the chance of
    separating *any* truly equal pair at or below 1 - ``confidence``, however many entries.

    Args:
        y_true_by_split: one 0/1 label array per split.
        y_pred_by_split: one (K, n_s) 0/1 decision array per split, entries in the same order.
        n_resamples: bootstrap resamples.
        confidence: the simultaneous coverage (0.95: a 5 % family-wise error rate).
        seed: of the resampling, so a board is reproducible.

    Raises:
        ValueError: no split, splits with different K, decisions of the wrong shape or not 0/1,
            labels not 0/1 or with one class.

    Example:
        >>> twins = [[0, 1, 0, 0], [0, 1, 0, 0]]  # two entries, the same decisions
        >>> simultaneous_margin([[0, 1, 1, 0]], [twins])
        0.0
    """
    _check_bootstrap(n_resamples, confidence)
    if len(y_true_by_split) == 0 or len(y_true_by_split) != len(y_pred_by_split):
        raise ValueError(
            "Give one label array and one decision array per split; found "
            f"{len(y_true_by_split)} and {len(y_pred_by_split)}."
        )
    preds = [np.atleast_2d(np.asarray(p)) for p in y_pred_by_split]
    n_entries = preds[0].shape[0]
    rng = np.random.default_rng(seed)
    deviation = np.zeros((n_resamples, n_entries))
    for s, (y_true, pred) in enumerate(zip(y_true_by_split, preds, strict=True)):
        y = _labels(y_true)
        if pred.shape != (n_entries, y.size) or not np.isin(pred, (0, 1)).all():
            raise ValueError(
                f"Split {s}: decisions must be a ({n_entries}, {y.size}) array of 0/1; found "
                f"shape {pred.shape}."
            )
        right = pred == y
        for cls in (1, 0):
            mask = y == cls
            n = int(mask.sum())
            correct = right[:, mask].astype(np.float32)
            weights = _bootstrap_counts(rng, n, n_resamples).astype(np.float32)
            recall = weights @ correct.T / n
            deviation += (recall - correct.mean(axis=1)) / (2 * len(preds))
    spread = deviation.max(axis=1) - deviation.min(axis=1)
    return float(np.quantile(spread, confidence, method="higher"))


@dataclass(frozen=True)
class ReaderAgreement:
    """One reader's balanced accuracy against the majority of the other readers."""

    reader: int
    balanced_accuracy: float
    n: int  # crops compared (the others did not split evenly)
    n_atypical: int  # of them, atypical by the others' majority
    tied: int = 0  # crops where the others split evenly (left out, or counted per ``ties``)


TIE_RULES = ("left out", "normal", "atypical")


def reader_agreement(votes, *, ties: str = "left out") -> list[ReaderAgreement]:
    """Each reader's balanced accuracy against the majority vote of the other readers.

    ``votes`` is an (n_crops, R) 0/1 array (1 = atypical), one column a reader. Reader r's
    reference on a crop is atypical when more than half of the other R - 1 readers say so and
    normal when fewer than half do; crops where they split evenly (possible when R - 1 is even)
    are left out for that reader, or counted as ``ties`` ("normal" or "atypical"). BA =
    (TPR + TNR) / 2 against that reference.

    Raises:
        ValueError: fewer than 3 readers, votes not 0/1, an unknown tie rule, or a reference
            with one class.

    Example:
        >>> votes = [[1, 1, 1], [0, 0, 0], [1, 1, 0], [0, 0, 1]]
        >>> [round(a.balanced_accuracy, 2) for a in reader_agreement(votes)]
        [1.0, 1.0, 0.5]
    """
    matrix = np.asarray(votes)
    if matrix.ndim != 2 or matrix.shape[1] < 3:
        raise ValueError(
            f"votes must be (n_crops, readers) with 3 readers or more; found {matrix.shape}."
        )
    if not np.isin(matrix, (0, 1)).all():
        raise ValueError("votes must hold only 0 (normal) and 1 (atypical).")
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {', '.join(TIE_RULES)}; found {ties!r}.")
    agreements = []
    for r in range(matrix.shape[1]):
        others = np.delete(matrix, r, axis=1)
        atypical_votes = others.sum(axis=1) * 2
        tied = atypical_votes == others.shape[1]
        reference = (atypical_votes > others.shape[1]) | (tied & (ties == "atypical"))
        kept = ~tied if ties == "left out" else np.ones(len(matrix), bool)
        agreements.append(
            ReaderAgreement(
                reader=r,
                balanced_accuracy=balanced_accuracy_score(
                    reference[kept].astype(np.int8), matrix[kept, r]
                ),
                n=int(kept.sum()),
                n_atypical=int(reference[kept].sum()),
                tied=int(tied.sum()),
            )
        )
    return agreements
