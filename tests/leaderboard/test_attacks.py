"""Attacks on the hidden labels, run the way a participant would run them.

Each attack submits real prediction files through the real intake, lets the worker's own code
score and release them, then reads *everything a user can read* (the board, its CSV and JSON
exports, the Hub sync's rows, every entry's details, the submitter's job views) and decodes
what it can. Certainty is judged for the strongest attacker: one who knows the exact confusion
counts of its baseline and its account's best (which the policy never shows), so that every
label counted is one that the released numbers alone pin down. Decoded labels are checked
against the truth.

Goal (issue 8): no attack recovers more than 2 hidden labels with certainty per scoring. Each
attack also runs against an unprotected release (every metric at full precision, no Ladder: what
the board published before the policy) to show that it is a real attack and the test can fail;
the attack on publish requests keeps the Ladder and makes only the numbers exact.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from evaluation.bundle import LabelStore
from evaluation.disclosure import (
    HIDDEN,
    RELEASE_NOISE,
    bits_per_scoring,
    hidden_mean,
    ladder_releases,
    release_bar,
    release_noise,
    round_hidden,
)
from evaluation.metrics import balanced_accuracy_score
from leaderboard import publication
from leaderboard.board import build_board
from leaderboard.cards import entry_card
from leaderboard.columns import display_table
from leaderboard.errors import NotPublishable
from leaderboard.export import board_rows, to_csv, to_json
from leaderboard.publication import account_bar
from settings import REPO_ROOT, Settings
from store.entry import EntryMetadata
from store.shared_values import shared_value
from submissions.intake import Submissions
from submissions.receipts import released_scores
from worker import Worker

pytestmark = pytest.mark.slow  # processes, servers or real training: `make test` only

BELOW_FLOOR = "below the floor"  # withheld, and a publish request refused for the floor
FORBIDDEN = ("sensitivity", "specificity", "auroc", "average_precision", "brier", "ece", "tp")


CARD_LINE = re.compile(
    r"^\| (AtNorM-Br|AtNorM-MD) \(hidden\) \| ([0-9.]+)(?: \[([0-9.]+), ([0-9.]+)\])? \|",
    re.MULTILINE,
)


def card_numbers(card: str) -> dict:
    """The hidden-split numbers an entry card shows, keyed like the export's columns."""
    name = card.splitlines()[0].removeprefix("### ").split(" — ")[0].replace("\\", "")
    found = {"model_name": name}
    for title, ba, low, high in CARD_LINE.findall(card):
        split = title.lower().replace("-", "_")
        found.update({f"{split}_ba": ba, f"{split}_ba_low": low, f"{split}_ba_high": high})
    return found


class Platform:
    """The real release, a fresh store, the intake and the worker's scoring, in this process.

    ``protected`` False makes every released number exact in the worker; ``ladder`` False
    releases every scoring besides.
    """

    def __init__(
        self, release: Settings, tmp_path, protected: bool = True, ladder: bool = True
    ) -> None:
        self.protected, self.ladder = protected, ladder
        self.settings = Settings.from_env(
            {
                "MITOSIS_DATA_DIR": str(release.data_dir),
                "MITOSIS_DATABASE_URL": f"sqlite:///{tmp_path / 'board.db'}",
                "MITOSIS_QUEUE_URL": f"sqlite:///{tmp_path / 'queue.db'}",
                "MITOSIS_HIDDEN_QUOTA": "100000",  # the campaign, not the quota, is under test
                "MITOSIS_BOOTSTRAP_RESAMPLES": "1000",
            }
        )
        self.worker = Worker(self.settings)
        self.service = Submissions(self.settings, self.worker.sessions)
        self.manifest = pd.read_csv(release.public_dir / "manifest.csv", dtype=str)
        store = LabelStore(release.labels_dir)
        self.truth = {s: store.split_labels(s) for s in HIDDEN}
        self.counter = itertools.count()

    def file(self, prob: pd.Series) -> bytes:
        frame = self.manifest[["image_id"]].assign(
            prob_atypical=prob.reindex(self.manifest["image_id"]).to_numpy()
        )
        return frame.to_csv(index=False, float_format="%.17g").encode()

    def score(self, user: str, prob: pd.Series, name: str | None = None) -> dict:
        """Submit a file of ``prob`` (indexed by image id) and return what anyone can read."""
        name = name or f"probe {next(self.counter)}"
        view = self.service.submit_predictions(user, self.file(prob), EntryMetadata(name))
        self.worker.run_job(view.job_id)
        return {**self.readable(user, name), "job_id": view.job_id}

    def ask_to_publish(self, user: str, job_id: int, name: str) -> tuple | str:
        """What a publish request of a withheld scoring tells: its released values when it is
        published, "below the floor" when refused for the floor, else only "withheld"."""
        try:
            publication.publish(self.worker.sessions, self.settings, user, job_id)
        except NotPublishable as refusal:
            return BELOW_FLOOR if "below the release floor" in str(refusal) else "withheld"
        return outcome(self.readable(user, name)["values"])

    def need(self, user: str) -> float:
        """What the account's next scoring must reach: the bar the Submit tab shows."""
        with self.worker.sessions() as session:
            return release_bar(account_bar(session, user), floor=self.settings.release_floor)

    def readable(self, user: str, name: str) -> dict:
        """Every value about the hidden splits of entry ``name`` on every surface, by key."""
        board = build_board(self.worker.sessions)
        rows = board_rows(board)
        surfaces = [
            *json.loads(to_json(rows)),  # the JSON export
            *csv.DictReader(io.StringIO(to_csv(rows))),
            *(  # the results dataset the worker wrote after this job (what the Hub sync commits)
                json.loads(path.read_text())
                for path in (self.settings.results_dataset_dir / "results").glob("*.json")
            ),
        ]
        seen: dict[str, set] = {}
        for row in surfaces:
            if row.get("model_name") != name:
                continue
            for key, value in row.items():
                if key.startswith(HIDDEN) and value not in (None, ""):
                    seen.setdefault(key, set()).add(float(value))
        table = display_table(board)
        shown = table[table["model"] == name].iloc[0].to_dict()
        for view in self.service.my_submissions(user):
            if view.model_name == name:
                for split, released in released_scores(self.worker.sessions, view.job_id).items():
                    for key, value in (released or {}).items():
                        if split in HIDDEN and value is not None:
                            seen.setdefault(f"{split}_{key}", set()).add(float(value))
        (entry,) = [e for e in board if e.model_name == name]
        card = card_numbers(
            entry_card(board, entry.submission_id)
        )  # display digits, like the table
        return {"values": seen, "table": shown, "card": card}


@dataclass
class Probe:
    """The crops of one hidden split whose labels an attack file puts in question.

    Whatever the file, the split's confusion counts depend on them only through ``a``, the
    number of atypical crops among them: TP = tp0 + tp_slope * a and TN = tn0 + tn_slope * a,
    with the constants known to the (strongest) attacker.
    """

    split: str
    crops: np.ndarray
    tp0: int
    tp_slope: int
    tn0: int
    tn_slope: int


def outcome(values: dict) -> tuple | str:
    """What the attacker reads about the released hidden BAs: the pair, or 'withheld'."""
    if not all(f"{s}_ba" in values for s in HIDDEN):
        return "withheld"
    return tuple(min(values[f"{s}_ba"]) for s in HIDDEN)


def consistent(platform: Platform, full: dict[str, float], observed, need: float) -> bool:
    """Whether exact hidden BAs ``full`` could have given ``observed`` under the policy.

    Under the policy each released BA is the exact one plus an unknown offset in
    ``±RELEASE_NOISE``, rounded; the Ladder releases when the released mean reaches ``need``
    (which the attacker knows: the Submit tab shows it), and a publish request is refused
    when it is below the floor. Unprotected, every number is exact; without the Ladder,
    nothing is withheld.
    """
    if observed not in (BELOW_FLOOR, "withheld"):  # the released values
        if not platform.protected:
            return np.allclose([full[s] for s in HIDDEN], observed, rtol=0, atol=1e-9)
        window = 0.005 + RELEASE_NOISE + 1e-9
        return all(abs(full[s] - o) <= window for s, o in zip(HIDDEN, observed, strict=True))
    if not platform.ladder:
        return False
    if platform.protected:  # the lowest released mean the unknown offsets allow
        mean = float(np.mean([round_hidden(max(0.0, full[s] - RELEASE_NOISE)) for s in HIDDEN]))
    else:
        mean = hidden_mean({s: {"ba": full[s]} for s in HIDDEN})
    if observed == BELOW_FLOOR:
        return mean < platform.settings.release_floor - 1e-9
    return not ladder_releases(mean, None, floor=need)


def certain_labels(
    platform: Platform, probes: list[Probe], others: dict[str, float], observed, need
) -> dict:
    """Labels of the probed crops that the released outcome pins down (exact inference).

    The attacker enumerates every count of atypical crops per probe, applies the release
    policy (:func:`consistent`) to each, and keeps the counts that could give what was
    observed; ``others`` holds the exact BA of unprobed splits. A probe's crops are all known
    when every consistent count is 0 or all of them.
    """
    possible = []
    for counts in itertools.product(*(range(len(p.crops) + 1) for p in probes)):
        full = dict(others)
        for probe, a in zip(probes, counts, strict=True):
            truth = platform.truth[probe.split].y_true
            n_pos = int(truth.sum())
            tp = probe.tp0 + probe.tp_slope * a
            tn = probe.tn0 + probe.tn_slope * a
            full[probe.split] = (tp / n_pos + tn / (truth.size - n_pos)) / 2
        if consistent(platform, full, observed, need):
            possible.append(counts)
    assert possible, "the true counts must be consistent with what was released"
    known = {}
    for k, probe in enumerate(probes):
        values = {c[k] for c in possible}
        if values in ({0}, {len(probe.crops)}):
            known.update({i: int(values != {0}) for i in probe.crops})
    return known


def check(platform: Platform, known: dict) -> int:
    """The number of labels recovered, each checked against the truth."""
    truth = {}
    for split in HIDDEN:
        truth.update(
            zip(platform.truth[split].image_ids, platform.truth[split].y_true, strict=True)
        )
    assert all(truth[i] == label for i, label in known.items()), "a decoder was wrong"
    return len(known)


def report(platform: Platform, name: str, per_scoring: list[int]) -> None:
    policy = "release policy" if platform.protected else "UNPROTECTED release"
    print(
        f"\n{name} ({policy}): {len(per_scoring)} scoring(s), {sum(per_scoring)} hidden labels "
        f"recovered with certainty ({np.mean(per_scoring):.2f} per scoring, at most "
        f"{max(per_scoring)} in one)"
    )


def counts(platform: Platform, split: str, called: np.ndarray) -> tuple[int, int, int, int]:
    """TP, TN, positives and negatives of a split's decisions (the strongest attacker's)."""
    y = platform.truth[split].y_true.astype(bool)
    return int((called & y).sum()), int((~called & ~y).sum()), int(y.sum()), int((~y).sum())


@pytest.fixture(params=["released", "unprotected"])
def platform(request, real_release, tmp_path, monkeypatch):
    protected = request.param == "released"
    if not protected:
        monkeypatch.setattr(
            publication, "release_split", lambda split, metrics, noise=0.0: dict(metrics)
        )
        monkeypatch.setattr(publication, "ladder_releases", lambda mean, best, floor=0.5: True)
    return Platform(real_release, tmp_path, protected, ladder=protected)


def expect(platform: Platform, per_scoring: list[int], unprotected_at_least: float) -> None:
    """The goal under the policy; a real leak without it (so the attack is a real one)."""
    if platform.protected:
        assert np.mean(per_scoring) <= 2
    else:
        assert np.mean(per_scoring) >= unprotected_at_least


def test_brier_bits_attack(platform):
    """The reproduced attack: 42 crops per split at 0.5 - 2^-(j+2), every other crop at 0.5."""
    rng = np.random.default_rng(0)
    prob = pd.Series(0.5, index=platform.manifest["image_id"])
    chosen = {}
    for split in HIDDEN:
        chosen[split] = rng.choice(platform.truth[split].image_ids, 42, replace=False)
        prob[chosen[split]] = 0.5 - 2.0 ** -(np.arange(42) + 2)
    need = platform.need("mallory")
    seen = platform.score("mallory", prob)["values"]
    known = {}
    for split in HIDDEN:  # n * Brier - sum(p^2) - 0.25 (n - 42) = sum_j y_j 2^-(j+1)
        n = platform.truth[split].y_true.size
        p = prob[chosen[split]].to_numpy()
        for brier in seen.get(f"{split}_brier", ()):
            residue = n * brier - (p**2).sum() - 0.25 * (n - 42)
            # a bit is certain only where float error (well under 1e-11 here) cannot flip it
            low, high = _bits(residue - 1e-11), _bits(residue + 1e-11)
            for j, image_id in enumerate(chosen[split]):
                if low[: j + 1] != high[: j + 1]:
                    break
                known[image_id] = low[j]
    # the chosen crops are called normal and every other crop atypical: TP = P - a, TN = 42 - a
    probes = [
        Probe(s, chosen[s], counts(platform, s, np.ones(1, bool))[2], -1, 42, -1) for s in HIDDEN
    ]
    known.update(certain_labels(platform, probes, {}, outcome(seen), need))
    recovered = check(platform, known)
    report(platform, "Brier-bits attack", [recovered])
    assert platform.protected == (not any(key.endswith(FORBIDDEN) for key in seen))
    expect(platform, [recovered], unprotected_at_least=60)


def _bits(residue: float, k: int = 42) -> list[int]:
    """The binary expansion sum_j b_j 2^-(j+1) of ``residue``, greedily."""
    bits = []
    for j in range(k):
        bits.append(int(residue >= 2.0 ** -(j + 1)))
        residue -= bits[-1] * 2.0 ** -(j + 1)
    return bits


def test_ba_count_attack_from_a_blank_baseline(platform):
    """A fresh account calls everything normal (BA exactly 0.5), then flips chosen crops."""
    rng = np.random.default_rng(1)
    blank = pd.Series(0.1, index=platform.manifest["image_id"])
    assert (outcome(platform.score("eve", blank)["values"]) == "withheld") == platform.protected
    per_scoring = []
    for split, sizes in (("atnorm_md", (1, 2, 5, 9, 19, 20, 40)), ("atnorm_br", (1, 3, 5, 7))):
        other = {s: 0.5 for s in HIDDEN if s != split}
        negatives = counts(platform, split, np.zeros(1, bool))[3]
        for s in sizes:
            crops = rng.choice(platform.truth[split].image_ids, s, replace=False)
            prob = blank.copy()
            prob[crops] = 0.9
            need = platform.need("eve")
            seen = platform.score("eve", prob)["values"]
            probe = Probe(split, crops, 0, 1, negatives - s, 1)  # TP = a, TN = N - s + a
            known = certain_labels(platform, [probe], other, outcome(seen), need)
            per_scoring.append(check(platform, known))
    report(platform, "BA-count attack, blank baseline", per_scoring)
    expect(platform, per_scoring, unprotected_at_least=2.5)


def test_ba_count_attack_from_a_strong_baseline(platform):
    """An account with a good model (the shipped one's predictions) flips its doubtful calls."""
    base = shipped_baseline()
    assert outcome(platform.score("trudy", base)["values"]) != "withheld"
    exact, bas = baseline_counts(platform, base)
    per_scoring = []
    for split, up, sizes in (
        ("atnorm_br", True, (1, 2, 3, 5, 6)),
        ("atnorm_md", True, (3, 9, 10, 12)),
        ("atnorm_br", False, (5, 25, 30)),
        ("atnorm_md", False, (20, 80)),
    ):
        for k in sizes:
            flipped, probe = flip_probe(platform, base, split, up, k, exact)
            need = platform.need("trudy")
            seen = platform.score("trudy", flipped)["values"]
            others = {x: bas[x] for x in HIDDEN if x != split}
            known = certain_labels(platform, [probe], others, outcome(seen), need)
            per_scoring.append(check(platform, known))
    report(platform, "BA-count attack, strong baseline", per_scoring)
    expect(platform, per_scoring, unprotected_at_least=2.5)


def test_auroc_ordering_attack(platform):
    """Twelve AtNorM-Br crops ranked at the top in a known order, everything else tied."""
    rng = np.random.default_rng(2)
    split = "atnorm_br"
    chosen = rng.choice(platform.truth[split].image_ids, 12, replace=False)
    prob = pd.Series(0.3, index=platform.manifest["image_id"])
    prob[chosen] = 0.99 - 0.01 * np.arange(12)
    need = platform.need("oscar")
    seen = platform.score("oscar", prob)["values"]
    _, _, n_pos, n_neg = counts(platform, split, np.zeros(1, bool))
    known = {}
    for auroc in seen.get(f"{split}_auroc", ()):  # every labelling of the 12, scored exactly
        patterns = np.array(list(itertools.product((0, 1), repeat=12)))
        negatives_below = np.cumsum((1 - patterns)[:, ::-1], axis=1)[:, ::-1] - (1 - patterns)
        a = patterns.sum(1)
        outside_negatives = n_neg - (12 - a)
        u = (patterns * (outside_negatives[:, None] + negatives_below)).sum(1)
        u = u + 0.5 * (n_pos - a) * outside_negatives
        match = patterns[np.abs(u / (n_pos * n_neg) - auroc) < 1e-9]
        for j, image_id in enumerate(chosen):
            if match.size and (match[:, j] == match[0, j]).all():
                known[image_id] = int(match[0, j])
    probe = Probe(split, chosen, 0, 1, n_neg - 12, 1)  # the 12 called atypical, the rest normal
    known.update(certain_labels(platform, [probe], {"atnorm_md": 0.5}, outcome(seen), need))
    recovered = check(platform, known)
    report(platform, "AUROC-ordering attack", [recovered])
    expect(platform, [recovered], unprotected_at_least=5)


def test_every_surface_shows_the_released_numbers_only(platform):
    if not platform.protected:
        pytest.skip("a property of the release policy")
    model = pd.read_csv(REPO_ROOT / "tests" / "data" / "default_model_predictions.csv")
    base = pd.Series(model["prob_atypical"].to_numpy(), index=model["image_id"].astype(str))
    read = platform.score("walter", base)
    values = read["values"]
    released = ("ba", "ba_low", "ba_high", "n", "n_atypical")
    assert set(values) == {f"{s}_{k}" for s in HIDDEN for k in released}
    for split in HIDDEN:
        for key in ("ba", "ba_low", "ba_high"):
            (value,) = values[f"{split}_{key}"]  # one value, the same on every surface
            assert value == round_hidden(value)
    (br,) = values["atnorm_br_ba"]
    assert read["table"]["AtNorM-Br BA"].startswith(f"{br:.2f} [")
    assert {"atnorm_br_ba", "atnorm_md_ba_high"} <= set(read["card"])
    for key, shown in read["card"].items():  # the entry card shows the same numbers
        if key != "model_name":
            assert float(shown) == min(values[key]), key
    bound = bits_per_scoring(
        {s: (int(platform.truth[s].y_true.sum()), platform.truth[s].y_true.size) for s in HIDDEN}
    )
    print(f"\nstated bound: at most {bound:.2f} bits about the hidden labels per scoring")
    assert bound <= 20.0  # two rounded BAs and the released rank margin
    rows = [r for r in board_rows(build_board(platform.worker.sessions)) if r["rank_low"]]
    margins = {r["rank_margin"] for r in rows}
    assert len(margins) == 1 and all(round(m * 100) == pytest.approx(m * 100) for m in margins)


def shipped_baseline() -> pd.Series:
    """The public shipped model's P(atypical) per test crop (its card publishes its counts)."""
    model = pd.read_csv(REPO_ROOT / "tests" / "data" / "default_model_predictions.csv")
    return pd.Series(model["prob_atypical"].to_numpy(), index=model["image_id"].astype(str))


def crops_that_matter(base: pd.Series, platform: Platform) -> set:
    """Hidden crops whose labels would raise a score: the baseline gets them wrong or calls
    them within 0.3 of the cut-off (issue 19's measure)."""
    found = set()
    for split in HIDDEN:
        truth = platform.truth[split]
        p = base[truth.image_ids].to_numpy()
        wrong = (p >= 0.5) != truth.y_true.astype(bool)
        found.update(truth.image_ids[wrong | (np.abs(p - 0.5) < 0.3)])
    return found


def flip_probe(platform, base, split, up, k, exact):
    """``k`` doubtful calls of ``split`` flipped (normal to atypical when ``up``)."""
    probs = base[platform.truth[split].image_ids]
    if up:  # the normal calls closest to the threshold, called atypical
        crops = probs[probs < 0.5].sort_values(ascending=False).index[:k].to_numpy()
    else:  # the atypical calls closest to the threshold, called normal
        crops = probs[probs >= 0.5].sort_values().index[:k].to_numpy()
    flipped = base.copy()
    flipped[crops] = 0.9 if up else 0.1
    tp, tn = exact[split]
    probe = Probe(split, crops, tp, 1, tn - k, 1) if up else Probe(split, crops, tp, -1, tn + k, -1)
    return flipped, probe


def baseline_counts(platform, base):
    exact, bas = {}, {}
    for s in HIDDEN:
        tp, tn, n_pos, n_neg = counts(platform, s, base[platform.truth[s].image_ids].values >= 0.5)
        exact[s], bas[s] = (tp, tn), (tp / n_pos + tn / n_neg) / 2
    return exact, bas


FIRST_PROBES = [(s, up, k) for s in HIDDEN for up in (True, False) for k in (2, 6, 12)]


def test_first_scoring_probes_from_fresh_accounts(platform):
    """Every account's first scoring faces the floor, not an earned bar: flip-k probes of the
    shipped model's doubtful calls, each from a new account, plus the 22 AtNorM-MD crops the
    model is surest are normal (the probe that read 22 labels under rounding alone)."""
    base = shipped_baseline()
    exact, bas = baseline_counts(platform, base)
    matter = crops_that_matter(base, platform)
    per_scoring, mattering = [], []
    for i, (split, up, k) in enumerate(FIRST_PROBES):
        flipped, probe = flip_probe(platform, base, split, up, k, exact)
        need = platform.need(f"fresh {i}")
        seen = platform.score(f"fresh {i}", flipped)["values"]
        others = {x: bas[x] for x in HIDDEN if x != split}
        known = certain_labels(platform, [probe], others, outcome(seen), need)
        per_scoring.append(check(platform, known))
        mattering.append(len(set(known) & matter))
    md = base[platform.truth["atnorm_md"].image_ids]
    surest = md.sort_values().index[:22].to_numpy()
    flipped = base.copy()
    flipped[surest] = 0.9
    tp, tn = exact["atnorm_md"]
    probe = Probe("atnorm_md", surest, tp, 1, tn - 22, 1)
    need = platform.need("fresh surest")
    seen = platform.score("fresh surest", flipped)["values"]
    known = certain_labels(platform, [probe], {"atnorm_br": bas["atnorm_br"]}, outcome(seen), need)
    per_scoring.append(check(platform, known))
    mattering.append(len(set(known) & matter))
    report(platform, "First-scoring probes, fresh accounts (all labels)", per_scoring)
    report(platform, "First-scoring probes, fresh accounts (labels that matter)", mattering)
    if platform.protected:
        assert np.mean(mattering) <= 1 and np.mean(per_scoring) <= 2
    else:
        assert np.mean(mattering) >= 1.5


def test_cancel_and_retry_order_faces_the_bar_of_its_moment(platform):
    """Queue flip probes, cancel each, get the baseline released, retry the probes newest
    first (the order that read 223 labels in 45 scorings before the bar was stored)."""
    base = shipped_baseline()
    exact, bas = baseline_counts(platform, base)
    matter = crops_that_matter(base, platform)
    probes = [flip_probe(platform, base, s, up, k, exact) for s, up, k in FIRST_PROBES[:6]]
    queued = []
    for i, (flipped, _) in enumerate(probes):
        view = platform.service.submit_predictions(
            "rita", platform.file(flipped), EntryMetadata(f"retry {i}")
        )
        platform.service.cancel("rita", view.job_id)
        queued.append(view.job_id)
    assert outcome(platform.score("rita", base, "baseline")["values"]) != "withheld"
    per_scoring, mattering = [], []
    for i in reversed(range(len(probes))):
        flipped, probe = probes[i]
        need = platform.need("rita")
        seen = platform.score("rita", flipped, f"retry {i}")["values"]
        others = {x: bas[x] for x in HIDDEN if x != probe.split}
        known = certain_labels(platform, [probe], others, outcome(seen), need)
        per_scoring.append(check(platform, known))
        mattering.append(len(set(known) & matter))
    report(platform, "Cancel-and-retry order (labels that matter)", mattering)
    report(platform, "Cancel-and-retry order (all labels)", per_scoring)
    if platform.protected:  # each retry judged against the bar when it ran
        assert np.mean(mattering) <= 1 and np.mean(per_scoring) <= 2
    else:  # the same order reads labels when every scoring is released
        assert sum(per_scoring) >= 1


@pytest.fixture(params=["released", "exact floor"])
def floor_platform(request, real_release, tmp_path, monkeypatch):
    """The policy, or the Ladder over exact numbers: a publish request then tells whether a
    withheld scoring's exact hidden mean reaches the floor."""
    if request.param == "exact floor":
        monkeypatch.setattr(
            publication, "release_split", lambda split, metrics, noise=0.0: dict(metrics)
        )
    return Platform(real_release, tmp_path, protected=request.param == "released")


def floor_baseline(platform: Platform, base: pd.Series) -> tuple[pd.Series, dict, dict]:
    """``base`` with only its surest atypical calls kept, chosen so that the exact hidden mean
    lies less than one AtNorM-MD normal crop above the floor: one more false positive there
    takes it below, one more true positive keeps it above. Returns the file, its (TP, TN) and
    its BA per split (the strongest attacker knows them)."""
    floor = platform.settings.release_floor
    sizes, tallies, order = {}, {}, {}
    for s in HIDDEN:
        y = platform.truth[s].y_true.astype(bool)
        p = base[platform.truth[s].image_ids].to_numpy()
        ranked = np.argsort(-p)[: int((p >= 0.5).sum())]  # atypical calls, surest first
        order[s], sizes[s] = platform.truth[s].image_ids[ranked], (int(y.sum()), int((~y).sum()))
        # TP and TN when the first k of them are kept, for every k
        tallies[s] = np.r_[0, np.cumsum(y[ranked])], sizes[s][1] - np.r_[0, np.cumsum(~y[ranked])]
    step = 1 / (4 * sizes["atnorm_md"][1])  # what one more false positive there costs the mean
    for kept in itertools.product(*(range(len(order[s]) + 1) for s in HIDDEN)):
        exact = {
            s: (int(tallies[s][0][k]), int(tallies[s][1][k]))
            for s, k in zip(HIDDEN, kept, strict=True)
        }
        bas = {s: (tp / sizes[s][0] + tn / sizes[s][1]) / 2 for s, (tp, tn) in exact.items()}
        mean = np.mean([bas[s] for s in HIDDEN])
        if floor <= mean < floor + step:
            prob = base.copy()
            for s, k in zip(HIDDEN, kept, strict=True):
                prob[order[s][k:]] = 0.1
            return prob, exact, bas
    raise AssertionError("no such baseline")


def test_publish_requests_read_nothing_from_the_floor(floor_platform):
    """An account with a released baseline builds a file just above the floor, adds 8 of its
    doubtful AtNorM-MD normal calls as atypical, and asks to publish each withheld probe: a
    refusal for the floor would say all 8 are normal if the floor were checked on the exact
    mean. Refusals spend no allowance, so this probe is as free as the scorings."""
    platform = floor_platform
    key = "03" * 32  # a fixed release key: the same answers each run, 5 of them refusals
    with platform.worker.sessions.begin() as session:
        assert shared_value(session, publication.NOISE_KEY, lambda: key) == key
    base = shipped_baseline()
    assert outcome(platform.score("fay", base, "baseline")["values"]) != "withheld"
    at_floor, exact, bas = floor_baseline(platform, base)
    matter = crops_that_matter(base, platform)
    md = base[platform.truth["atnorm_md"].image_ids]
    doubtful = md[md < 0.5].sort_values(ascending=False).index.to_numpy()
    per_scoring, mattering, answers = [], [], []
    tp, tn = exact["atnorm_md"]
    for i in range(10):
        crops = doubtful[8 * i : 8 * (i + 1)]
        prob = at_floor.copy()
        prob[crops] = 0.9
        need = platform.need("fay")
        read = platform.score("fay", prob, f"floor probe {i}")
        assert outcome(read["values"]) == "withheld"  # far below the baseline's bar
        answer = platform.ask_to_publish("fay", read["job_id"], f"floor probe {i}")
        answers.append(answer if isinstance(answer, str) else "published")
        probe = Probe("atnorm_md", crops, tp, 1, tn - 8, 1)  # TP = tp + a, TN = tn - 8 + a
        others = {"atnorm_br": bas["atnorm_br"]}
        known = certain_labels(platform, [probe], others, answer, need)
        per_scoring.append(check(platform, known))
        mattering.append(len(set(known) & matter))
    print(f"\npublish answers: {answers}")
    report(platform, "Publish requests at the floor (labels that matter)", mattering)
    report(platform, "Publish requests at the floor (all labels)", per_scoring)
    assert answers.count("published") <= platform.settings.publish_allowance
    assert BELOW_FLOOR in answers  # the floor was asked about, under the policy too
    if platform.protected:
        assert np.mean(mattering) <= 1 and np.mean(per_scoring) <= 2
    else:  # each refusal names 8 normal crops, until two publications spend the allowance
        assert answers.count(BELOW_FLOOR) >= 3 and np.mean(mattering) >= 2.4


class LadderSimulation:
    """The release policy's own functions over simulated hidden labels, for many scorings.

    Hidden labels are coin flips with the real class counts; an attacker knows a fraction
    ``known`` of them, so every file it can build has the true hidden mean BA
    ``0.5 + known / 2`` on new crops, and anything released above it is overfitting.
    """

    def __init__(self, seed: int, known: float, floor: float = 0.6) -> None:
        self.rng = np.random.default_rng(seed)
        self.key = self.rng.bytes(32)
        self.floor, self.true = floor, 0.5 + known / 2
        self.y, self.known = {}, {}
        for split, (p, n) in {"atnorm_br": (128, 746), "atnorm_md": (219, 2107)}.items():
            self.y[split] = self.rng.permutation(np.r_[np.ones(p, bool), np.zeros(n - p, bool)])
            self.known[split] = self.rng.random(n) < known
        self.bars: dict[str, float | None] = {}

    def probe(self) -> dict:
        """Right where the attacker knows the label, a coin flip elsewhere."""
        return {
            s: np.where(self.known[s], self.y[s], self.rng.random(self.y[s].size) < 0.5)
            for s in self.y
        }

    def score(self, account: str, decisions: dict) -> float | None:
        """The released hidden mean, or None when withheld (the worker's decision)."""
        released = []
        for s, called in decisions.items():
            ba = balanced_accuracy_fast(self.y[s], called)
            digest = hashlib.sha256(np.packbits(called).tobytes()).hexdigest()
            released.append(round_hidden(ba + release_noise(self.key, digest, s)))
        mean = float(np.mean(released))
        if not ladder_releases(mean, self.bars.get(account), floor=self.floor):
            return None
        self.bars[account] = max(mean, self.bars.get(account) or 0.0)
        return mean


def balanced_accuracy_fast(y: np.ndarray, called: np.ndarray) -> float:
    return ((called & y).sum() / y.sum() + (~called & ~y).sum() / (~y).sum()) / 2


def boosting_attack(sim: LadderSimulation, accounts: int, scorings: int) -> float:
    """Blum & Hardt's boosting attack: probes from every account, then the majority vote of
    the released ones from each account; the most the board shows above the true value."""
    shown, kept = [], []
    for a in range(accounts):
        for _ in range(scorings - 1):
            decisions = sim.probe()
            if (mean := sim.score(f"acct {a}", decisions)) is not None:
                shown.append(mean)
                kept.append(decisions)
    if kept:
        vote = {s: np.mean([d[s] for d in kept], axis=0) > 0.5 for s in sim.y}
        for a in range(accounts):
            if (mean := sim.score(f"acct {a}", vote)) is not None:
                shown.append(mean)
    return max(shown, default=sim.true) - sim.true


def test_the_simulated_scorer_is_the_real_one():
    sim = LadderSimulation(0, known=0.4)
    decisions = sim.probe()["atnorm_br"]
    assert balanced_accuracy_fast(sim.y["atnorm_br"], decisions) == pytest.approx(
        balanced_accuracy_score(sim.y["atnorm_br"], decisions)
    )


@pytest.mark.parametrize("known", [0.0, 0.4])
def test_boosting_attack_inflation(known):
    """90 scorings (30 days at the quota) from one account, and from 10 accounts."""
    one = [boosting_attack(LadderSimulation(seed, known), 1, 90) for seed in range(3)]
    ten = [boosting_attack(LadderSimulation(seed, known), 10, 90) for seed in range(2)]
    base = "random labels" if known == 0 else f"a baseline knowing {known:.0%} of the labels"
    print(
        f"\nBoosting attack ({base}): released above the true value by {np.mean(one):.3f} "
        f"(1 account x 90 scorings), {np.mean(ten):.3f} (10 accounts x 90)"
    )
    if known == 0:  # the floor: a file with no information is never released
        assert max(one + ten) == 0.0
    else:  # the Ladder's own selection effect, above the goal of 0.01 (README: why)
        assert np.mean(one) <= 0.03 and np.mean(ten) <= 0.075
