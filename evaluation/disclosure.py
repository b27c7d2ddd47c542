"""The release policy: what anyone may read about a scoring, in one place.

A full-precision Brier score of a crafted prediction file decodes dozens of hidden labels from
one submission, and a 3-decimal balanced accuracy still gives the exact confusion counts. So
the worker stores two things for every result: the full-precision metrics (private: kept for
the maintainers, never shown) and the numbers this module *releases*, and every reader (board,
entry details, exports, the submission status API, the Hub sync) shows only the released ones.

The policy, derived from the arithmetic (see docs/release-policy.md):

1. **Public split** (AMi-Br test, whose labels are public): every metric, as computed.
2. **Hidden splits**: the balanced accuracy rounded to ``HIDDEN_DECIMALS`` (one true positive
   on AtNorM-Br moves BA by 1/256, so two decimals hide the exact count), the number of crops
   and of atypical crops (fixed facts of the label set). Never sensitivity, specificity, AUROC,
   AP, Brier, ECE, confusion counts, curves, p-values or anything per crop.
   Before rounding, each hidden BA gets a **keyed offset**, uniform in ``±RELEASE_NOISE``,
   fixed by a server secret, the split and the file's decisions on it (:func:`release_noise`):
   the same decisions always get the same offset, changed ones a new one. Rounding alone lets
   an attacker who knows a baseline's exact counts place a rounding boundary between "all k
   flipped crops are normal" and "one is atypical" and read k labels from one scoring; the
   offset makes where the boundary lies unknown to them.
3. **The Ladder** (Blum & Hardt, ICML 2015), on released values: a scoring's hidden numbers
   are released only when its released hidden mean is at least ``LADDER_MARGIN`` above the
   account's *bar*, and at least the release floor (``MITOSIS_RELEASE_FLOOR``, default
   ``RELEASE_FLOOR``). The bar is the best hidden mean the account has had released, stored
   with the account; it only rises (withdrawing, cancelling, failing or re-scoring never
   lowers it), and each submission's decision is stored and replayed when it is re-scored.
   Otherwise the numbers are withheld, and all anyone learns is "below the bar". The bar is
   a released value, so the Submit tab can show it. An account can be released by the
   Ladder at most ``(1 - floor) / LADDER_MARGIN + 1`` = 41 times (the first at the floor, up
   to 1.00), plus the scorings its owner
   publishes from the allowance (``MITOSIS_PUBLISH_ALLOWANCE`` per 30 days). The floor keeps
   scorings near chance off the board: a file with no information about the labels (the
   boosting attack's raw material) is never released. Maintainer-run accounts
   (``MITOSIS_MAINTAINER_ACCOUNTS``) have every scoring released, rounded and offset alike.
4. **The rank margin.** Entries with per-crop decisions are compared by one paired bootstrap
   over the hidden crops (``evaluation.metrics.simultaneous_margin``): the one number it
   yields, the gap in hidden mean BA that tells two entries apart for all pairs at once, is
   released rounded *up* to ``MARGIN_DECIMALS``. Rank intervals and the top group are
   computed from it and the released means alone (:func:`rank_intervals`). Only released
   entries take part, so a withheld scoring changes nothing; withdrawn ones stay, so taking an
   entry off the board publishes no new margin.
5. Everything else shown about a hidden split (the hidden mean, the 95 % interval, the rank)
   is computed from the released values and the public class counts alone, so it adds no
   information.

Hence one scoring reveals at most ``log2(1 + V_br * V_md * V_margin)`` bits about the labels,
where V is the number of values a rounded BA can take (101) and V_margin the number of
released margins (101): see :func:`bits_per_scoring`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping

import numpy as np

from evaluation.splits import HIDDEN_SPLITS, get_split

HIDDEN_DECIMALS = 2
MARGIN_DECIMALS = 2
MARGIN_VALUES = 10**MARGIN_DECIMALS + 1  # 0.00, 0.01, ..., 1.00
LADDER_MARGIN = 0.01
RELEASE_NOISE = 0.01  # half-width of the keyed offset added before rounding
RELEASE_FLOOR = 0.6  # the default of MITOSIS_RELEASE_FLOOR
CHANCE = 0.5
Z95 = 1.959963984540054
PUBLIC_METRICS = (
    "ba",
    "ba_low",
    "ba_high",
    "sensitivity",
    "specificity",
    "auroc",
    "auroc_low",
    "auroc_high",
    "average_precision",
    "brier",
    "ece",
    "n",
    "n_atypical",
)
HIDDEN_METRICS = ("ba", "ba_low", "ba_high", "n", "n_atypical")
HIDDEN = tuple(s.name for s in HIDDEN_SPLITS)


def round_hidden(ba):
    """Balanced accuracy as released for a hidden split: half-up to ``HIDDEN_DECIMALS``.

    Works on floats and arrays alike (the bound in :func:`bits_per_scoring` uses the same
    function as the release).

    Example:
        >>> round_hidden(0.78499), round_hidden(0.785)
        (0.78, 0.79)
    """
    scale = 10**HIDDEN_DECIMALS
    rounded = np.floor(np.asarray(ba, dtype=np.float64) * scale + 0.5 + 1e-9) / scale
    return float(rounded) if rounded.ndim == 0 else rounded


def ba_standard_error(ba: float, n_atypical: int, n_normal: int) -> float:
    """The largest standard error a balanced accuracy of ``ba`` can have on these class counts.

    Var(BA) = (s(1 - s)/P + t(1 - t)/N) / 4 with sensitivity s and specificity t, s + t = 2 BA.
    Only BA is released for a hidden split, so this maximises over every split of 2 BA into
    s and t (a concave function of s, maximal at s* = (N - P + 4 BA P) / (2 (N + P)), clipped
    to the feasible range).

    Example:
        >>> round(ba_standard_error(0.5, 100, 100), 4)
        0.0354
    """
    p, n = n_atypical, n_normal
    low, high = max(0.0, 2 * ba - 1), min(1.0, 2 * ba)
    s = min(max((n - p + 4 * ba * p) / (2 * (n + p)), low), high)
    t = 2 * ba - s
    return math.sqrt(max(s * (1 - s) / p + t * (1 - t) / n, 0.0)) / 2


def released_ba_interval(ba: float, n_atypical: int, n_normal: int) -> tuple[float, float]:
    """A conservative 95 % interval around a released (rounded) hidden-split BA.

    The true value lies within half a rounding step plus the release offset of ``ba``; the
    interval adds 1.96 times the largest standard error over that range, and is rounded
    outwards to ``HIDDEN_DECIMALS``.
    """
    step = 0.5 * 10**-HIDDEN_DECIMALS + RELEASE_NOISE
    se = max(ba_standard_error(b, n_atypical, n_normal) for b in (ba - step, ba, ba + step))
    scale = 10**HIDDEN_DECIMALS
    low = math.floor((ba - step - Z95 * se) * scale + 1e-9) / scale
    high = math.ceil((ba + step + Z95 * se) * scale - 1e-9) / scale
    return max(0.0, low), min(1.0, high)


def release_noise(key: bytes, decisions_digest: str, split: str) -> float:
    """The keyed offset of a BA on one split: uniform in ``±RELEASE_NOISE``.

    HMAC-SHA256 of the digest of the split's per-crop decisions under the server's secret
    ``key``, so it is the same whenever those decisions are scored and unpredictable without
    the key.

    Example:
        >>> abs(release_noise(b"k", "ab12", "atnorm_br")) <= RELEASE_NOISE
        True
    """
    digest = hmac.new(key, f"{decisions_digest}:{split}".encode(), hashlib.sha256).digest()
    uniform = int.from_bytes(digest[:8], "big") / 2**64
    return (2 * uniform - 1) * RELEASE_NOISE


def release_split(
    split: str, metrics: Mapping[str, float | int | None], *, noise: float = 0.0
) -> dict:
    """The numbers of one split that anyone may read, from its full-precision metrics.

    ``metrics`` holds at least ``PUBLIC_METRICS``; a hidden split keeps only its BA plus the
    keyed offset ``noise``, rounded, the conservative interval computed from it, and its class
    counts.
    """
    if not get_split(split).hidden:
        released = {k: metrics[k] for k in PUBLIC_METRICS if metrics.get(k) is not None}
        if metrics.get("curves"):  # ROC and reliability: never for a hidden split
            released["curves"] = metrics["curves"]
        return released
    n, n_atypical = int(metrics["n"]), int(metrics["n_atypical"])
    ba = round_hidden(min(1.0, max(0.0, metrics["ba"] + noise)))
    low, high = released_ba_interval(ba, n_atypical, n - n_atypical)
    return {"ba": ba, "ba_low": low, "ba_high": high, "n": n, "n_atypical": n_atypical}


def hidden_mean(released: Mapping[str, Mapping | None]) -> float | None:
    """Mean BA over the hidden splits, from released values (None until both are released)."""
    values = [released.get(s) for s in HIDDEN]
    if any(v is None or v.get("ba") is None for v in values):
        return None
    return round(sum(v["ba"] for v in values) / len(values), HIDDEN_DECIMALS + 2)


def release_margin(margin: float) -> float:
    """The simultaneous margin as released: rounded up to ``MARGIN_DECIMALS`` (never narrower).

    Example:
        >>> release_margin(0.0312), release_margin(0.03), release_margin(0.0)
        (0.04, 0.03, 0.0)
    """
    scale = 10**MARGIN_DECIMALS
    return min(1.0, math.ceil(margin * scale - 1e-9) / scale)


def rank_intervals(means: Mapping, margin: float) -> dict:
    """Simultaneous 95 % rank intervals of the tested entries, from released values only.

    ``means`` maps each tested entry to its released hidden mean BA; ``margin`` is the released
    simultaneous margin. Each released mean is within half a rounding step plus the release
    offset of the true one, so two entries are told apart only when their released means
    differ by more than ``margin + 10**-HIDDEN_DECIMALS + 2 * RELEASE_NOISE``. Entry i's
    interval is [1 + a_i, K - b_i], with a_i and b_i the entries told apart above and below
    it; the top group is those with 1 in theirs.

    Example:
        >>> rank_intervals({"a": 0.80, "b": 0.76, "c": 0.70, "d": 0.69}, 0.03)
        {'a': (1, 2), 'b': (1, 3), 'c': (2, 4), 'd': (3, 4)}
    """
    gap = margin + 10**-HIDDEN_DECIMALS + 2 * RELEASE_NOISE + 1e-9
    values = np.array(list(means.values()), dtype=np.float64)
    above = (values[None, :] - values[:, None] > gap).sum(axis=1)
    below = (values[:, None] - values[None, :] > gap).sum(axis=1)
    return {
        key: (1 + int(a), len(values) - int(b))
        for key, a, b in zip(means, above, below, strict=True)
    }


def release_bar(best_released: float | None, *, floor: float = CHANCE) -> float:
    """What a scoring's released hidden mean must reach to be released by the Ladder.

    The account's best released hidden mean plus ``LADDER_MARGIN`` (chance before the first),
    and never below ``floor``.

    Example:
        >>> release_bar(None), release_bar(0.775), release_bar(None, floor=0.6)
        (0.51, 0.785, 0.6)
    """
    bar = (best_released if best_released is not None else CHANCE) + LADDER_MARGIN
    return round(max(floor, bar), HIDDEN_DECIMALS + 2)


def ladder_releases(
    released_mean: float, best_released: float | None, *, floor: float = CHANCE
) -> bool:
    """The Ladder's decision on a scoring's released hidden mean.

    Example:
        >>> ladder_releases(0.515, None), ladder_releases(0.505, None)
        (True, False)
        >>> ladder_releases(0.78, 0.775), ladder_releases(0.785, 0.775)
        (False, True)
        >>> ladder_releases(0.59, None, floor=0.6)
        False
    """
    return released_mean >= release_bar(best_released, floor=floor) - 1e-9


def withheld_note(best_released: float | None, *, floor: float = CHANCE) -> str:
    """What the submitter and everyone else learn about a withheld scoring: below the bar."""
    bar = release_bar(best_released, floor=floor)
    why = (
        f"this account has no released hidden mean yet, so the bar is the floor of {floor:.2f}"
        if best_released is None
        else f"this account's best released hidden mean is {best_released:.3f}; a release "
        f"needs {LADDER_MARGIN} more, and at least {floor:.2f}"
    )
    return (
        f"hidden-split scores withheld: the released hidden mean BA would be below {bar:.3f} "
        f"({why}). Scores are released only for such improvements, so repeated "
        "submissions cannot read the hidden labels (the release policy, see About). "
        + (
            f"Below the floor of {floor:.2f}, it cannot be published."
            if bar <= floor
            else f"If it reaches the floor of {floor:.2f}, you can publish it from your "
            "allowance on the Submit tab."
        )
    )


def released_values(n_atypical: int, n: int) -> np.ndarray:
    """Every value the released BA of a split with these class counts can take."""
    p, normal = n_atypical, n - n_atypical
    tp = np.arange(p + 1)[:, None]
    tn = np.arange(normal + 1)[None, :]
    return np.unique(round_hidden((tp / p + tn / normal) / 2))


def bits_per_scoring(counts: Mapping[str, tuple[int, int]]) -> float:
    """The most one scoring can reveal about the labels, in bits.

    ``counts`` maps each hidden split to ``(n_atypical, n)``. A scoring is either withheld
    (nothing changes) or released with one rounded BA per hidden split and a new released rank
    margin; everything else is derived from those. The bound counts every outcome, enumerating
    all confusion matrices of every split.
    """
    outcomes = MARGIN_VALUES
    for n_atypical, n in counts.values():
        outcomes *= released_values(n_atypical, n).size
    return math.log2(1 + outcomes)


WITHHELD = "withheld"  # what a reader sees in place of a number the policy did not release


def released_number(value) -> str:
    """A released number with the digits it was released with (at least two, at most four)."""
    if value is None:
        return ""
    text = f"{value:.4f}".rstrip("0")
    return text + "0" * max(0, 2 - len(text.split(".")[1]))


def released_interval(value, low, high) -> str:
    """A released number and its interval, all three with the digits the most precise has.

    Example:
        >>> released_interval(0.787, 0.7513, 0.8224), released_interval(0.8, 0.75, 0.85)
        ('0.7870 [0.7513, 0.8224]', '0.80 [0.75, 0.85]')
    """
    digits = max(len(released_number(v).split(".")[1]) for v in (value, low, high))
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
