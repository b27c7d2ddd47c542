"""The simultaneous rank margin: exact against loop resampling, and its error rate simulated."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.disclosure import rank_intervals, release_margin, round_hidden
from evaluation.metrics import simultaneous_margin

CLASS_COUNTS = ((128, 746), (219, 2107))  # AtNorM-Br and AtNorM-MD: (atypical, crops)


def loop_margin(ys, preds, n_resamples, confidence, seed):
    """The same bootstrap written as index resampling, one resample at a time."""
    rng = np.random.default_rng(seed)
    draws = []  # the generator's calls in the vectorised order: split, then class 1, class 0
    for y in ys:
        for cls in (1, 0):
            n = int((y == cls).sum())
            draws.append(rng.integers(0, n, size=(n_resamples, n)))
    spreads = []
    for b in range(n_resamples):
        deviations = np.zeros(len(preds[0]))
        d = iter(draws)
        for y, pred in zip(ys, preds, strict=True):
            for cls in (1, 0):
                members = np.flatnonzero(y == cls)
                sample = members[next(d)[b]]
                right = pred[:, sample] == cls
                full = pred[:, members] == cls
                deviations += (right.mean(axis=1) - full.mean(axis=1)) / (2 * len(ys))
        spreads.append(deviations.max() - deviations.min())
    return float(np.quantile(spreads, confidence, method="higher"))


def crops_and_entries(rng, n_entries, accuracy_gap=0.0, scale=1):
    """One simulated board: labels with the hidden splits' class counts, and entries whose
    true balanced accuracies are equal (or, with ``accuracy_gap``, the first one better).

    Crops are easy (every entry right 90 % of the time) or hard (45 %), so entries err on the
    same crops, as real models do.
    """
    ys, preds = [], []
    for atypical, n in CLASS_COUNTS:
        atypical, n = atypical // scale, n // scale
        y = np.zeros(n, dtype=int)
        y[:atypical] = 1
        hard = rng.random(n) < 0.3
        p_right = np.where(hard, 0.45, 0.9)[None, :].repeat(n_entries, axis=0)
        p_right[0] = np.minimum(p_right[0] + accuracy_gap, 1.0)
        right = rng.random((n_entries, n)) < p_right
        ys.append(y)
        preds.append(np.where(right, y, 1 - y))
    return ys, preds


def hidden_means(ys, preds):
    per_split = [
        ((p == y) & (y == 1)).sum(1) / (y == 1).sum() / 2
        + ((p == y) & (y == 0)).sum(1) / (y == 0).sum() / 2
        for y, p in zip(ys, preds, strict=True)
    ]
    return per_split


def test_the_vectorised_margin_is_the_loop_bootstrap_exactly():
    rng = np.random.default_rng(3)
    ys, preds = crops_and_entries(rng, n_entries=4, scale=20)
    fast = simultaneous_margin(ys, preds, n_resamples=300, seed=11)
    slow = loop_margin(ys, preds, 300, 0.95, 11)
    assert fast == pytest.approx(slow, abs=1e-6)
    assert 0 < fast < 0.5


def test_twins_need_no_margin_and_more_entries_need_a_wider_one():
    rng = np.random.default_rng(4)
    ys, preds = crops_and_entries(rng, n_entries=20)
    twins = [np.repeat(p[:1], 2, axis=0) for p in preds]
    assert simultaneous_margin(ys, twins, n_resamples=200) == 0.0
    two = simultaneous_margin(ys, [p[:2] for p in preds], n_resamples=500)
    twenty = simultaneous_margin(ys, preds, n_resamples=500)
    assert twenty > 1.3 * two


def test_equal_entries_are_separated_at_most_at_the_nominal_rate():
    """200 simulated boards of K = 10 truly equal entries, 500 resamples each (about 20 s).

    The family-wise rate of separating any pair must stay at or below the nominal 5 % plus a
    tolerance of 5 points (about three binomial standard errors at 200 boards). The same
    simulation without the multiplicity control (each pair judged by a two-entry margin)
    exceeds 20 %, so the test can tell a procedure that controls the rate from one that does
    not. The published rule (released means, released margin) is at most as often wrong.
    """
    rng = np.random.default_rng(2026)
    boards, k, resamples = 200, 10, 500
    controlled = unadjusted = published = 0
    for board in range(boards):
        ys, preds = crops_and_entries(rng, n_entries=k)
        means = np.mean(hidden_means(ys, preds), axis=0)
        spread = means.max() - means.min()
        margin = simultaneous_margin(ys, preds, n_resamples=resamples, seed=board)
        pair_margin = simultaneous_margin(
            ys, [p[:2] for p in preds], n_resamples=resamples, seed=board
        )
        controlled += spread > margin
        unadjusted += spread > pair_margin
        released = np.mean([round_hidden(m) for m in hidden_means(ys, preds)], axis=0)
        intervals = rank_intervals(dict(enumerate(released)), release_margin(margin))
        published += any(interval != (1, k) for interval in intervals.values())
    rates = {
        "controlled": controlled / boards,
        "unadjusted": unadjusted / boards,
        "published": published / boards,
    }
    print(f"\nfamily-wise false-separation rates, K = {k}: {rates}")
    assert rates["controlled"] <= 0.05 + 0.05
    assert rates["published"] <= rates["controlled"]
    assert rates["unadjusted"] > 0.20


def test_a_clearly_better_entry_is_told_apart():
    rng = np.random.default_rng(5)
    ys, preds = crops_and_entries(rng, n_entries=5, accuracy_gap=0.16)
    released = np.mean([round_hidden(m) for m in hidden_means(ys, preds)], axis=0)
    margin = release_margin(simultaneous_margin(ys, preds))
    intervals = rank_intervals(dict(enumerate(released)), margin)
    assert intervals[0] == (1, 1)
    assert all(intervals[i][0] >= 2 for i in range(1, 5))


@pytest.mark.parametrize(
    ("ys", "preds", "message"),
    [
        ([], [], "one label array and one decision array per split"),
        ([[0, 1]], [[[0, 1, 1]]], "must be a (1, 2) array of 0/1"),
        ([[0, 1], [0, 1]], [[[0, 1]], [[0, 1], [1, 1]]], "must be a (1, 2) array"),
        ([[0, 1]], [[[0, 2]]], "array of 0/1"),
        ([[1, 1]], [[[0, 1]]], "only one class"),
    ],
)
def test_invalid_inputs_raise_specific_errors(ys, preds, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        simultaneous_margin(ys, preds, n_resamples=10)
