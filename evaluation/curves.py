"""Curves of one prediction set on a split with public labels: ROC and reliability.

Only ever computed for public splits: a curve over a submitter's own scores on a hidden split
would give away the labels in score order (see ``evaluation.disclosure``).
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from evaluation.metrics import _labels, _probabilities


def roc_points(y_true, prob_atypical, *, max_points: int = 101) -> dict[str, list[float]]:
    """The ROC curve (false-positive rate, true-positive rate), thinned to ``max_points``.

    The thinning keeps the end points and evenly spaced thresholds in between, so the curve
    stays the same shape whatever the number of crops.

    Example:
        >>> roc_points([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        {'fpr': [0.0, 0.0, 0.5, 0.5, 1.0], 'tpr': [0.0, 0.5, 0.5, 1.0, 1.0]}
    """
    y = _labels(y_true)
    prob = _probabilities(y, prob_atypical)
    fpr, tpr, _ = skm.roc_curve(y, prob)
    if fpr.size > max_points:
        keep = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(v), 4) for v in fpr], "tpr": [round(float(v), 4) for v in tpr]}


def reliability_bins(y_true, prob_atypical, *, n_bins: int = 10) -> dict[str, list]:
    """The reliability diagram: per equal-width bin of P(atypical), mean against outcome.

    Each bin has its mean P(atypical), the observed fraction of atypical crops and its crop
    count; empty bins are left out.

    Example:
        >>> reliability_bins([0, 1, 1, 0], [0.05, 0.95, 0.85, 0.15], n_bins=2)
        {'mean_prob': [0.1, 0.9], 'fraction_atypical': [0.0, 1.0], 'count': [2, 2]}
    """
    y = _labels(y_true, both_classes=False)
    prob = _probabilities(y, prob_atypical)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1; found {n_bins}.")
    which = np.minimum((prob * n_bins).astype(int), n_bins - 1)
    out: dict[str, list] = {"mean_prob": [], "fraction_atypical": [], "count": []}
    for b in range(n_bins):
        inside = which == b
        if inside.any():
            out["mean_prob"].append(round(float(prob[inside].mean()), 4))
            out["fraction_atypical"].append(round(float(y[inside].mean()), 4))
            out["count"].append(int(inside.sum()))
    return out
