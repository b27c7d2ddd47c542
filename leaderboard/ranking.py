"""The board: current results per entry, ranked, with the group statistically tied with #1.

The rank is by the mean balanced accuracy over the two hidden sets (AtNorM-Br, AtNorM-MD).

Tie test: for every entry with per-crop decisions (verified and self-reported ones) a paired
stratified bootstrap of its hidden-mean BA minus that of the best such entry (the reference);
tied when the two-sided p-value is at least 0.05. Paper rows have no per-crop decisions, so
their tie status is "n/a". Entries more than ``TIE_MARGIN`` below the reference are not tested:
at these sample sizes such a gap is never a tie.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from evaluation.bundle import LabelStore
from evaluation.metrics import paired_ba_differences
from evaluation.splits import HIDDEN_SPLITS
from leaderboard.store import EntrySource, Result, Submission

TIE_MARGIN = 0.1
TIE_ALPHA = 0.05
HIDDEN = tuple(s.name for s in HIDDEN_SPLITS)


@dataclass
class Entry:
    """One row of the board."""

    submission_id: int
    model_name: str
    team: str
    user: str
    source: str
    method_type: str
    backbone: str
    pretraining: str
    training_data: str
    uses_midog: bool
    paper_url: str
    code_url: str
    description: str
    sha256: str | None
    results: dict[str, Result] = field(default_factory=dict)
    rank: int = 0
    tied_with_first: str = "n/a"
    p_vs_first: float | None = None

    @property
    def hidden_mean_ba(self) -> float | None:
        """Mean BA over AtNorM-Br and AtNorM-MD (None until both are scored)."""
        if not all(s in self.results for s in HIDDEN):
            return None
        return float(np.mean([self.results[s].ba for s in HIDDEN]))


def load_entries(session: Session) -> list[Entry]:
    """Every entry with current results on both hidden splits (plain rows, no ORM objects)."""
    submissions = {row.id: row for row in session.execute(select(Submission.__table__))}
    entries: dict[int, Entry] = {}
    current = select(Result.__table__).where(Result.current.is_(True))
    for result in session.execute(current):
        entry = entries.get(result.submission_id)
        if entry is None:
            s = submissions[result.submission_id]
            entry = entries[s.id] = Entry(
                s.id,
                s.model_name,
                s.team,
                s.user,
                str(EntrySource(s.source)),
                s.method_type,
                s.backbone,
                s.pretraining,
                s.training_data,
                s.uses_midog,
                s.paper_url,
                s.code_url,
                s.description,
                s.sha256,
            )
        entry.results[result.split] = result
    return [e for e in entries.values() if e.hidden_mean_ba is not None]


def rank_entries(
    entries: list[Entry], labels: LabelStore | None, *, n_resamples: int = 2000, seed: int = 0
) -> list[Entry]:
    """Sort by hidden-mean BA (competition ranking: equal values share a rank) and mark ties."""
    ordered = sorted(entries, key=lambda e: (-e.hidden_mean_ba, e.submission_id))
    for i, entry in enumerate(ordered):
        same = i and entry.hidden_mean_ba == ordered[i - 1].hidden_mean_ba
        entry.rank = ordered[i - 1].rank if same else i + 1
    if labels is not None:
        _mark_ties(ordered, labels, n_resamples, seed)
    return ordered


def _decisions(result: Result, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(result.decisions, np.uint8))[:n].astype(np.int8)


def _mark_ties(ordered: list[Entry], labels: LabelStore, n_resamples: int, seed: int) -> None:
    scored = [e for e in ordered if all(e.results[s].decisions for s in HIDDEN)]
    if not scored:
        return
    reference = scored[0]
    reference.tied_with_first, reference.p_vs_first = "reference", 1.0
    close = []
    for entry in scored[1:]:
        if reference.hidden_mean_ba - entry.hidden_mean_ba > TIE_MARGIN:
            entry.tied_with_first, entry.p_vs_first = "no", 0.0
        else:
            close.append(entry)
    if not close:
        return
    diff = np.zeros((n_resamples, len(close)))
    for k, split in enumerate(HIDDEN):
        split_truth = labels.split_labels(split)
        truth = split_truth.y_true[np.argsort(split_truth.image_ids)]  # decisions: sorted ids
        others = np.stack([_decisions(e.results[split], truth.size) for e in close])
        diff += paired_ba_differences(
            truth,
            _decisions(reference.results[split], truth.size),
            others,
            n_resamples=n_resamples,
            seed=seed + k,
        )
    diff /= len(HIDDEN)
    p_values = np.minimum(1.0, 2 * np.minimum((diff <= 0).mean(0), (diff >= 0).mean(0)))
    for entry, p in zip(close, p_values, strict=True):
        entry.p_vs_first = float(p)
        entry.tied_with_first = "yes" if p >= TIE_ALPHA else "no"


def best_per_team(entries: list[Entry]) -> list[Entry]:
    """The best-ranked entry of each team (the user when no team is given)."""
    seen, best = set(), []
    for entry in entries:
        key = entry.team or entry.user
        if key not in seen:
            seen.add(key)
            best.append(entry)
    return best
