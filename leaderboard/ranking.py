"""The board: released results per entry, ranked, with rank intervals and the top group.

Everything here reads only what the release policy published (``Result.published`` and the
standing's released margin, see ``evaluation.disclosure``); the full-precision metrics, the
per-crop decisions and the labels are never read. The rank is by the hidden mean of the
released per-split balanced accuracies; equal values share a rank and are listed by entry id,
so the order reveals nothing beyond the released values.

Tested entries (those in the newest standing, ``leaderboard.standings``) get a simultaneous
95 % rank interval among the tested entries; the *top group* is those whose interval includes
rank 1, i.e. the entries not told apart from the leader, the best tested entry. Paper rows
have no per-crop predictions, so they are ranked by their published means but never tested.
Entries whose hidden scores the Ladder withheld are listed after the ranked ones, unranked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from evaluation.disclosure import HIDDEN, hidden_mean, rank_intervals, round_hidden
from leaderboard.standings import StandingView
from store.entry import EntryMetadata
from store.schema import SOURCE_OF_KIND, Job, Result, Submission, utc_text

PAPER_NOTE = (
    "the mean of 5 fold models, each trained on 80 % of AMi-Br train; ± is the "
    "spread (std) over those folds. No per-crop predictions, so no confidence interval and no "
    "rank interval or top-group test; a submission is one model trained on all of AMi-Br "
    "train, a different quantity."
)


PATHOLOGIST_NOTE = (
    "Reference: one AtNorM-MD expert scored against the majority of the other four experts. "
    "Crops where those four split 2-2 (the hardest ones) are left out for the expert but not "
    "for the models, which are scored against the majority of all five on every crop, so the "
    "references differ. Not ranked."
)


def pathologist_note(released: dict) -> str:
    """The reference note with how the expert's BA moves when the ties count either way."""
    if "ba_ties_normal" not in released:  # rows written before the tie rules were released
        return PATHOLOGIST_NOTE
    return (
        f"{PATHOLOGIST_NOTE} Left out for this expert: {released['tied_percent']} % of the "
        f"crops; counted as normal, its BA is {released['ba_ties_normal']:.2f}; as atypical, "
        f"{released['ba_ties_atypical']:.2f}."
    )


@dataclass
class Entry:
    """One row of the board: who submitted what, and its released numbers per split."""

    submission_id: int
    source: str
    meta: EntryMetadata
    user: str = ""
    sha256: str | None = None
    hub_ref: str = ""  # owner/name@commit of a checkpoint submitted by Hub id
    scores: dict[str, dict] = field(default_factory=dict)
    withheld: bool = False
    maintainer_run: bool = False  # released under a maintainer-run account (every scoring)
    disclosure: str = ""
    provenance: dict = field(default_factory=dict)
    rank: int | None = None
    rank_range: tuple[int, int] | None = None  # among the tested entries
    ranked_among: int | None = None  # how many entries were tested
    top_group: bool | None = None  # None: not tested
    rank_margin: float | None = None  # the released margin the interval was computed with
    parameters: int | None = None
    ms_per_crop: float | None = None  # verified entries: forward time on a worker
    measured_on: str | None = None

    @property
    def comparison(self) -> str:
        """What the entry's numbers are and how it was compared, in words."""
        if self.source == "paper":
            return f"Paper row: {PAPER_NOTE}"
        if self.source == "pathologist":
            return pathologist_note(self.scores.get("atnorm_md") or {})
        if self.withheld:
            return "Hidden-split scores withheld by the release policy: not ranked."
        if self.rank_range is None:
            return "Not tested yet: its rank interval follows the next standing."
        low, high = self.rank_range
        where = "in the top group" if self.top_group else "not in the top group"
        return (
            f"One model as submitted; [ ] is a 95 % bootstrap CI. Rank {low}-{high} of "
            f"{self.ranked_among} tested entries (95 % simultaneous interval), {where}."
        )

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
        """Mean of the released BAs of AtNorM-Br and AtNorM-MD (None when not released).

        Each at the released precision (0.01), paper rows' four-decimal values too, so every
        row is ranked at one precision.
        """
        return hidden_mean(
            {s: {"ba": round_hidden(v["ba"])} for s, v in self.scores.items() if v and "ba" in v}
        )


def load_entries(session: Session) -> list[Entry]:
    """Every entry with current results: released numbers only (plain values, no ORM rows).

    The results are read first: each statement sees what was committed before it, and a
    result is written after its submission and job, so every row a result points to is read.
    """
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
    results = session.execute(current).all()
    submissions = {row.id: row for row in session.execute(select(Submission.__table__))}
    disclosures = dict(session.execute(select(Job.id, Job.disclosure)).all())
    entries: dict[int, Entry] = {}
    for result in results:
        entry = entries.get(result.submission_id)
        if entry is None:
            s = submissions[result.submission_id]
            if s.withdrawn_at is not None:  # taken off the board by its submitter
                continue
            entry = entries[s.id] = Entry(
                submission_id=s.id,
                source=str(SOURCE_OF_KIND[s.kind]),
                meta=EntryMetadata.from_dict(s.meta),
                user=s.user,
                sha256=s.sha256,
                hub_ref=s.hub_ref or "",
                maintainer_run=s.release == "maintainer",
                parameters=s.parameters,
                ms_per_crop=s.ms_per_crop,
                measured_on=s.measured_on,
                disclosure=disclosures.get(result.job_id) or "",
                provenance={
                    "scorer_version": result.scorer_version,
                    "label_set_hash": result.label_set_hash,
                    "versions": result.versions,
                    "scored_at": utc_text(result.created_at),
                },
            )
        if result.published is None:
            entry.withheld = entry.withheld or result.split in HIDDEN
        else:
            entry.scores[result.split] = result.published
    return [
        e
        for e in entries.values()
        if e.hidden_mean_ba is not None or e.withheld or e.source == "pathologist"
    ]


def rank_entries(entries: list[Entry], standing: StandingView | None = None) -> list[Entry]:
    """Ranked entries, then the pathologists' reference rows, then withheld entries.

    The rank is competition ranking on the released hidden mean. Entries in ``standing``
    get their rank interval among the tested entries
    (:func:`evaluation.disclosure.rank_intervals`) and their top-group membership.
    """
    ranked = sorted(
        (e for e in entries if e.hidden_mean_ba is not None),
        key=lambda e: (-e.hidden_mean_ba, e.submission_id),
    )
    for i, entry in enumerate(ranked):
        same = i and entry.hidden_mean_ba == ranked[i - 1].hidden_mean_ba
        entry.rank = ranked[i - 1].rank if same else i + 1
    if standing is not None:
        tested = [e for e in ranked if e.submission_id in standing.submission_ids]
        means = {e.submission_id: e.hidden_mean_ba for e in tested}
        intervals = rank_intervals(means, standing.margin)
        for entry in tested:
            entry.rank_range = intervals[entry.submission_id]
            entry.ranked_among = len(tested)
            entry.top_group = entry.rank_range[0] == 1
            entry.rank_margin = standing.margin
    unranked = sorted(
        (e for e in entries if e.hidden_mean_ba is None),
        key=lambda e: (e.source != "pathologist", e.submission_id),
    )
    for entry in unranked:
        entry.rank = None
    return ranked + unranked


def best_per_team(entries: list[Entry]) -> list[Entry]:
    """The best-ranked entry of each team (the user when no team is given).

    The pathologists' reference rows are kept, all five: they are readers, not a team's entries.
    """
    seen, best = set(), []
    for entry in entries:
        if entry.source == "pathologist":
            best.append(entry)
            continue
        key = entry.team or entry.user
        if key not in seen:
            seen.add(key)
            best.append(entry)
    return best
