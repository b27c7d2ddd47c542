from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from evaluation import metrics

Y = [0, 1, 0, 0, 1, 0]
PRED = [0, 1, 0, 0, 0, 1]
PROB = [0.1, 0.9, 0.2, 0.3, 0.4, 0.8]


def random_case(seed: int, n: int = 500, prevalence: float = 0.2):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    y[:2] = [0, 1]
    prob = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1).round(2)  # rounding makes ties
    return y, prob, (prob >= 0.5).astype(int)


def test_hand_computed_case():
    # TP=1 FN=1 TN=3 FP=1: sensitivity 1/2, specificity 3/4, BA 5/8
    assert metrics.confusion_counts(Y, PRED) == metrics.Confusion(tp=1, fn=1, tn=3, fp=1)
    assert metrics.sensitivity_score(Y, PRED) == 0.5
    assert metrics.specificity_score(Y, PRED) == 0.75
    assert metrics.balanced_accuracy_score(Y, PRED) == 0.625
    # pairs (atypical, normal) ranked right: 0.9 beats all 4; 0.4 beats 0.1, 0.2, 0.3 -> 7/8
    assert metrics.roc_auc_score(Y, PROB) == 0.875
    assert metrics.brier_score([0, 1], [0.2, 0.6]) == pytest.approx((0.04 + 0.16) / 2)
    # bins [0, .5): y mean 0, p mean .2 -> .2 ; [.5, 1]: y mean 1, p mean .8 -> .2
    assert metrics.expected_calibration_error([0, 0, 1, 1], [0.1, 0.3, 0.7, 0.9], n_bins=2) == (
        pytest.approx(0.2)
    )


@pytest.mark.parametrize("seed", range(5))
def test_point_metrics_equal_scikit_learn(seed):
    y, prob, pred = random_case(seed)
    assert metrics.balanced_accuracy_score(y, pred) == pytest.approx(
        skm.balanced_accuracy_score(y, pred), abs=1e-12
    )
    assert metrics.sensitivity_score(y, pred) == pytest.approx(skm.recall_score(y, pred))
    assert metrics.specificity_score(y, pred) == pytest.approx(skm.recall_score(1 - y, 1 - pred))
    assert metrics.roc_auc_score(y, prob) == pytest.approx(skm.roc_auc_score(y, prob))
    assert metrics.average_precision_score(y, prob) == pytest.approx(
        skm.average_precision_score(y, prob)
    )
    assert metrics.brier_score(y, prob) == pytest.approx(skm.brier_score_loss(y, prob))
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert metrics.confusion_counts(y, pred) == metrics.Confusion(tp, fn, tn, fp)


def test_ece_matches_a_direct_loop():
    y, prob, _ = random_case(3)
    bins = np.minimum((prob * 10).astype(int), 9)
    expected = sum(
        (bins == b).mean() * abs(y[bins == b].mean() - prob[bins == b].mean())
        for b in range(10)
        if (bins == b).any()
    )
    assert metrics.expected_calibration_error(y, prob) == pytest.approx(expected)


def test_ba_interval_is_the_stratified_bootstrap():
    y, _, pred = random_case(1, n=400)
    ci = metrics.balanced_accuracy_ci(y, pred, n_resamples=2000, seed=1)
    # the same bootstrap drawn by index resampling, class by class
    rng = np.random.default_rng(7)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    samples = [
        skm.balanced_accuracy_score(y[idx], pred[idx])
        for idx in (
            np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
            for _ in range(2000)
        )
    ]
    low, high = np.percentile(samples, [2.5, 97.5])
    assert ci.estimate == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert ci.low == pytest.approx(low, abs=0.01)
    assert ci.high == pytest.approx(high, abs=0.01)
    assert ci.low < ci.estimate < ci.high


def test_auroc_interval_matches_index_resampling():
    y, prob, _ = random_case(2, n=300)
    ci = metrics.roc_auc_ci(y, prob, n_resamples=2000, seed=2)
    rng = np.random.default_rng(5)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    samples = [
        skm.roc_auc_score(y[idx], prob[idx])
        for idx in (
            np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
            for _ in range(2000)
        )
    ]
    low, high = np.percentile(samples, [2.5, 97.5])
    assert ci.estimate == pytest.approx(skm.roc_auc_score(y, prob))
    assert ci.low == pytest.approx(low, abs=0.01)
    assert ci.high == pytest.approx(high, abs=0.01)


def test_auroc_interval_of_a_perfect_ranking_is_a_point():
    ci = metrics.roc_auc_ci([0, 0, 1, 1, 0], [0.1, 0.2, 0.8, 0.9, 0.3])
    assert (ci.estimate, ci.low, ci.high) == (1.0, 1.0, 1.0)


def test_intervals_are_seeded_and_narrow_with_more_data():
    y, prob, pred = random_case(0, n=300)
    a = metrics.balanced_accuracy_ci(y, pred, seed=3)
    assert a == metrics.balanced_accuracy_ci(y, pred, seed=3)
    assert a != metrics.balanced_accuracy_ci(y, pred, seed=4)
    big_y, big_prob, big_pred = random_case(0, n=3000)
    big = metrics.roc_auc_ci(big_y, big_prob)
    small = metrics.roc_auc_ci(y, prob)
    assert big.high - big.low < small.high - small.low


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.balanced_accuracy_score([], []), "non-empty"),
        (lambda: metrics.balanced_accuracy_score([0, 1], [0, 1, 1]), "3 values but y_true has 2"),
        (lambda: metrics.balanced_accuracy_score([0, 2], [0, 1]), "only 0 .normal. and 1"),
        (lambda: metrics.balanced_accuracy_score([1, 1], [0, 1]), "only one class"),
        (lambda: metrics.balanced_accuracy_score([0, 1], [0.2, 1]), "y_pred must hold only"),
        (lambda: metrics.roc_auc_score([0, 1], [0.2, 1.2]), r"finite probabilities in \[0, 1\]"),
        (lambda: metrics.roc_auc_score([0, 1], [np.nan, 1]), "finite probabilities"),
        (lambda: metrics.balanced_accuracy_ci([0, 1], [0, 1], n_resamples=0), "at least 1"),
        (lambda: metrics.roc_auc_ci([0, 1], [0, 1], confidence=1.0), "strictly between"),
        (lambda: metrics.expected_calibration_error([0, 1], [0, 1], n_bins=0), "n_bins"),
    ],
)
def test_invalid_inputs_raise_specific_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_reader_agreement_by_hand():
    # five readers; reader 0 is compared with the majority of readers 1-4 (ties left out)
    votes = np.array(
        [
            [1, 1, 1, 1, 0],  # others 3 of 4 atypical -> atypical; reader 0 right
            [1, 1, 1, 0, 0],  # others 2-2 -> left out for reader 0
            [0, 0, 0, 0, 1],  # others 1 of 4 -> normal; reader 0 right
            [1, 0, 0, 0, 0],  # others 0 of 4 -> normal; reader 0 wrong
            [0, 1, 1, 1, 1],  # others 4 of 4 -> atypical; reader 0 wrong
            [0, 0, 0, 0, 0],  # normal; right
        ]
    )
    first = metrics.reader_agreement(votes)[0]
    # reference atypical: crops 0, 4 (TPR 1/2); normal: crops 2, 3, 5 (TNR 2/3)
    assert (first.n, first.n_atypical) == (5, 2)
    assert first.balanced_accuracy == pytest.approx((1 / 2 + 2 / 3) / 2)
    for agreement in metrics.reader_agreement(votes):
        others = np.delete(votes, agreement.reader, axis=1).sum(1)
        keep = others != 2
        expected = skm.balanced_accuracy_score(others[keep] > 2, votes[keep, agreement.reader])
        assert agreement.balanced_accuracy == pytest.approx(expected)
    # the tie (crop 1) counted: reader 0 said atypical, right as atypical, wrong as normal
    as_atypical = metrics.reader_agreement(votes, ties="atypical")[0]
    assert (as_atypical.n, as_atypical.n_atypical, as_atypical.tied) == (6, 3, 1)
    assert as_atypical.balanced_accuracy == pytest.approx((2 / 3 + 2 / 3) / 2)
    as_normal = metrics.reader_agreement(votes, ties="normal")[0]
    assert as_normal.balanced_accuracy == pytest.approx((1 / 2 + 2 / 4) / 2)
    with pytest.raises(ValueError, match="ties must be one of"):
        metrics.reader_agreement(votes, ties="split")
    with pytest.raises(ValueError, match="3 readers or more"):
        metrics.reader_agreement(votes[:, :2])
