"""The board: released results per entry, ranked, with the entries statistically tied with #1.

Everything here reads only what the release policy published (``Result.published``, see
``evaluation.disclosure``); the full-precision metrics, the per-crop decisions and the labels
are never read. The rank is by the hidden mean of the released per-split balanced accuracies;
equal values share a rank and are listed by entry id, so the order reveals nothing beyond the
released values. "Tied with #1" is the policy's public test on released values. Entries whose
hidden scores the Ladder withheld are listed after the ranked ones, without a rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from evaluation.disclosure import HIDDEN, hidden_mean, tied
from leaderboard.results import Result
from submissions.metadata import EntryMetadata
from submissions.tables import SOURCE_OF_KIND, Job, Submission


@dataclass
class Entry:
    """One row of the board: who submitted what, and its released numbers per split."""

    submission_id: int
    source: str
    meta: EntryMetadata
    user: str = ""
    sha256: str | None = None
    scores: dict[str, dict] = field(default_factory=dict)
    withheld: bool = False
    disclosure: str = ""
    provenance: dict = field(default_factory=dict)
    rank: int | None = None
    tied_with_first: str = "n/a"

    @property
    def model_name(self) -> str:
        """The entry's name (from its metadata)."""
        return self.meta.model_name

    @property
    def team(self) -> str:
        """The entry's team (from its metadata)."""
        return self.meta.team

    @property
    def hidden_mean_ba(self) -> float | None:
        """Mean of the released BAs of AtNorM-Br and AtNorM-MD (None when not released)."""
        return hidden_mean(self.scores)


def load_entries(session: Session) -> list[Entry]:
    """Every entry with current results: released numbers only (plain values, no ORM rows)."""
    submissions = {row.id: row for row in session.execute(select(Submission.__table__))}
    disclosures = dict(session.execute(select(Job.id, Job.disclosure)).all())
    entries: dict[int, Entry] = {}
    current = select(
        Result.submission_id,
        Result.job_id,
        Result.split,
        Result.published,
        Result.scorer_version,
        Result.label_set_hash,
        Result.versions,
        Result.created_at,
    ).where(Result.current.is_(True))
    for result in session.execute(current):
        entry = entries.get(result.submission_id)
        if entry is None:
            s = submissions[result.submission_id]
            entry = entries[s.id] = Entry(
                submission_id=s.id,
                source=str(SOURCE_OF_KIND[s.kind]),
                meta=EntryMetadata.from_dict(s.meta),
                user=s.user,
                sha256=s.sha256,
                disclosure=disclosures.get(result.job_id) or "",
                provenance={
                    "scorer_version": result.scorer_version,
                    "label_set_hash": result.label_set_hash,
                    "versions": result.versions,
                    "scored_at": result.created_at.isoformat(timespec="seconds"),
                },
            )
        if result.published is None:
            entry.withheld = entry.withheld or result.split in HIDDEN
        else:
            entry.scores[result.split] = result.published
    return [e for e in entries.values() if e.hidden_mean_ba is not None or e.withheld]


def rank_entries(entries: list[Entry]) -> list[Entry]:
    """Ranked entries first (competition ranking on the released hidden mean), then withheld.

    The leader is compared with every other ranked entry by :func:`evaluation.disclosure.tied`.
    """
    ranked = sorted(
        (e for e in entries if e.hidden_mean_ba is not None),
        key=lambda e: (-e.hidden_mean_ba, e.submission_id),
    )
    for i, entry in enumerate(ranked):
        same = i and entry.hidden_mean_ba == ranked[i - 1].hidden_mean_ba
        entry.rank = ranked[i - 1].rank if same else i + 1
    if ranked:
        leader = ranked[0]
        leader.tied_with_first = "#1"
        for entry in ranked[1:]:
            verdict = tied(leader.scores, entry.scores)
            entry.tied_with_first = "n/a" if verdict is None else ("yes" if verdict else "no")
    withheld = sorted(
        (e for e in entries if e.hidden_mean_ba is None), key=lambda e: e.submission_id
    )
    for entry in withheld:
        entry.rank, entry.tied_with_first = None, "withheld"
    return ranked + withheld


def best_per_team(entries: list[Entry]) -> list[Entry]:
    """The best-ranked entry of each team (the user when no team is given)."""
    seen, best = set(), []
    for entry in entries:
        key = entry.team or entry.user
        if key not in seen:
            seen.add(key)
            best.append(entry)
    return best
