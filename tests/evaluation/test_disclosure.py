from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.disclosure import (
    HIDDEN_METRICS,
    LADDER_MARGIN,
    MARGIN_VALUES,
    PUBLIC_METRICS,
    RELEASE_FLOOR,
    RELEASE_NOISE,
    Z95,
    ba_standard_error,
    bits_per_scoring,
    ladder_releases,
    rank_intervals,
    release_bar,
    release_margin,
    release_noise,
    release_split,
    released_ba_interval,
    released_values,
    round_hidden,
    withheld_note,
)
from evaluation.splits import ATNORM_BR, ATNORM_MD

METRICS = {
    "ba": 0.78712,
    "ba_low": 0.75,
    "ba_high": 0.82,
    "sensitivity": 0.70312,
    "specificity": 0.87112,
    "auroc": 0.8812,
    "auroc_low": 0.85,
    "auroc_high": 0.91,
    "average_precision": 0.61,
    "brier": 0.10234567,
    "ece": 0.051,
    "n": 746,
    "n_atypical": 128,
}


def test_the_public_split_keeps_every_metric_and_hidden_splits_only_a_rounded_ba():
    assert release_split("amibr_test", METRICS) == {k: METRICS[k] for k in PUBLIC_METRICS}
    hidden = release_split("atnorm_br", METRICS)
    assert set(hidden) == set(HIDDEN_METRICS)
    assert hidden["ba"] == 0.79 and hidden["n"] == 746 and hidden["n_atypical"] == 128
    assert hidden["ba_low"] < 0.79 < hidden["ba_high"]
    assert hidden == release_split("atnorm_br", {**METRICS, "ba": 0.7851, "brier": 0.3})


def test_rounding_is_half_up_and_never_finer_than_two_decimals():
    assert [round_hidden(x) for x in (0.784999, 0.785, 0.7850001, 1.0, 0.0)] == [
        0.78,
        0.79,
        0.79,
        1.0,
        0.0,
    ]
    values = released_values(128, 746)
    assert np.allclose(values * 100, np.round(values * 100))


def test_the_standard_error_is_the_largest_over_every_sensitivity_and_specificity():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p, n = int(rng.integers(5, 300)), int(rng.integers(5, 2000))
        ba = float(rng.uniform(0.01, 0.99))
        s = np.linspace(max(0, 2 * ba - 1), min(1, 2 * ba), 20001)
        t = 2 * ba - s
        brute = np.sqrt(s * (1 - s) / p + t * (1 - t) / n).max() / 2
        assert ba_standard_error(ba, p, n) == pytest.approx(brute, rel=1e-6, abs=1e-9)


def test_the_released_interval_covers_the_estimate_s_own_interval():
    """Whatever the confusion matrix and the offset behind a released BA, its Wald interval
    lies inside the released one."""
    p, n = ATNORM_BR.n_atypical, ATNORM_BR.n_normal
    for tp in range(0, p + 1, 3):
        for tn in range(0, n + 1, 11):
            sens, spec = tp / p, tn / n
            ba = (sens + spec) / 2
            se = math.sqrt(sens * (1 - sens) / p + spec * (1 - spec) / n) / 2
            for noise in (-RELEASE_NOISE, 0.0, RELEASE_NOISE):
                shown = round_hidden(min(1.0, max(0.0, ba + noise)))
                low, high = released_ba_interval(shown, p, n)
                assert low <= max(0.0, ba - Z95 * se) + 1e-12
                assert high >= min(1.0, ba + Z95 * se) - 1e-12


def test_the_offset_is_keyed_bounded_uniform_and_fixed_per_file_and_split():
    offsets = np.array([release_noise(b"key", f"{i:064x}", "atnorm_br") for i in range(4000)])
    assert np.abs(offsets).max() <= RELEASE_NOISE
    assert abs(offsets.mean()) < 0.0005 and offsets.std() == pytest.approx(
        RELEASE_NOISE / math.sqrt(3), rel=0.05
    )  # uniform on [-w, w]
    assert release_noise(b"key", "ab", "atnorm_br") == release_noise(b"key", "ab", "atnorm_br")
    assert release_noise(b"key", "ab", "atnorm_br") != release_noise(b"key", "ab", "atnorm_md")
    assert release_noise(b"key", "ab", "atnorm_br") != release_noise(b"other", "ab", "atnorm_br")
    hidden = release_split("atnorm_br", METRICS, noise=0.009)
    assert hidden["ba"] == round_hidden(METRICS["ba"] + 0.009) == 0.80


def test_the_ladder_releases_only_improvements_over_the_bar_and_above_the_floor():
    assert not ladder_releases(0.505, None)  # chance is the first bar
    assert ladder_releases(0.5 + LADDER_MARGIN, None)
    assert not ladder_releases(0.78, 0.775) and ladder_releases(0.785, 0.775)
    assert not ladder_releases(0.9, 0.95)
    assert not ladder_releases(0.595, None, floor=0.6) and ladder_releases(0.6, None, floor=0.6)
    assert not ladder_releases(0.6, 0.595, floor=0.6)  # the floor does not lower the step
    assert release_bar(0.775, floor=0.6) == 0.785 and release_bar(None, floor=0.6) == 0.6


def test_rank_intervals_by_hand():
    # released means 0.80, 0.76, 0.70, 0.69 and margin 0.03: a pair is told apart when its
    # released means differ by more than 0.03 + 0.01 (rounding) + 0.02 (offsets) = 0.06
    means = {"a": 0.80, "b": 0.76, "c": 0.70, "d": 0.69}
    assert rank_intervals(means, 0.03) == {"a": (1, 2), "b": (1, 3), "c": (2, 4), "d": (3, 4)}
    # exactly at the bar is not apart: 0.80 - 0.74 = 0.06
    assert rank_intervals({"a": 0.80, "b": 0.74}, 0.03) == {"a": (1, 2), "b": (1, 2)}
    assert rank_intervals({"a": 0.80, "b": 0.7399}, 0.03) == {"a": (1, 1), "b": (2, 2)}
    # a chain: b is not apart from a or c, but a and c are
    chain = rank_intervals({"a": 0.80, "b": 0.76, "c": 0.72}, 0.02)
    assert chain == {"a": (1, 2), "b": (1, 3), "c": (2, 3)}
    # margin 0: only the rounding and offset slack separates
    assert rank_intervals({"a": 0.80, "b": 0.78, "c": 0.74}, 0.0)["c"] == (3, 3)
    assert rank_intervals({}, 0.05) == {}


def test_the_released_margin_is_rounded_up():
    assert release_margin(0.0301) == 0.04
    assert release_margin(0.03) == 0.03
    assert release_margin(0.0) == 0.0
    assert release_margin(1.7) == 1.0
    values = {release_margin(m) for m in np.linspace(0, 1, 5001)}
    assert len(values) == MARGIN_VALUES


def test_one_scoring_reveals_at_most_20_bits():
    counts = {
        "atnorm_br": (ATNORM_BR.n_atypical, ATNORM_BR.n),
        "atnorm_md": (ATNORM_MD.n_atypical, ATNORM_MD.n),
    }
    assert released_values(*counts["atnorm_br"]).size == 101
    bits = bits_per_scoring(counts)
    print(f"\none scoring reveals at most {bits:.2f} bits about the hidden labels")
    assert bits == pytest.approx(math.log2(1 + 101 * 101 * 101)) and bits <= 20.0


def test_an_account_is_released_by_the_ladder_at_most_41_times():
    """Released hidden means step by 0.005 (two values to 0.01): every one from the floor up
    is tried in turn, the most the Ladder can release."""
    bar, released = None, 0
    for mean in np.round(np.arange(RELEASE_FLOOR, 1.0 + 1e-9, 0.005), 3):
        if ladder_releases(float(mean), bar, floor=RELEASE_FLOOR):
            bar, released = float(mean), released + 1
    assert released == round((1 - RELEASE_FLOOR) / LADDER_MARGIN) + 1 == 41


def test_curves_are_released_for_the_public_split_and_never_for_a_hidden_one():
    curves = {"roc": {"fpr": [0, 1], "tpr": [0, 1]}}
    assert release_split("amibr_test", {**METRICS, "curves": curves})["curves"] == curves
    assert "curves" not in release_split("atnorm_br", {**METRICS, "curves": curves})


def test_the_withheld_note_reads_for_a_first_scoring_and_a_later_one():
    first = withheld_note(None, floor=0.6)
    assert (
        "below 0.600 (this account has no released hidden mean yet, so the bar is the floor"
        in first
    )
    later = withheld_note(0.775, floor=0.6)
    assert (
        "below 0.785 (this account's best released hidden mean is 0.775; a release needs 0.01 more"
        in later
    )
    # a withheld scoring below the floor cannot be published: the note says so (from the bar
    # and the floor alone, never the scoring's own value)
    assert first.endswith("Below the floor of 0.60, it cannot be published.")  # bar = floor
    assert later.endswith(
        "If it reaches the floor of 0.60, you can publish it from your allowance on the Submit tab."
    )
