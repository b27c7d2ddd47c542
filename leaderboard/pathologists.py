"""Pathologists on the board: AtNorM-MD's five experts as reference rows.

Each expert's balanced accuracy against the majority of the other four
(``evaluation.metrics.reader_agreement``; crops where those four split 2-2 left out), released
rounded to two decimals, with the same BA when the crops the other four split 2-2 on (the
hardest ones, left out for the expert but not for the models) count as normal and as atypical,
and the share of such crops in whole percent; nothing else: the number of crops compared and
their class counts come from the votes, so they stay private, and no interval is derived from
them. The worker passes the votes in (nothing here opens the label store) and the rows are
rewritten whenever the label set changes: 20 values of at most 101 each per label set, at most
20 log2(101) = 133 bits about the votes per label set.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from evaluation.disclosure import round_hidden
from evaluation.metrics import reader_agreement
from store.entry import EntryMetadata
from store.locks import PATHOLOGIST_ROWS, hold_lock
from store.schema import PATHOLOGISTS_USER, Result, Submission

KIND = "pathologist"
SPLIT = "atnorm_md"


def seed_pathologist_rows(
    sessions: sessionmaker, votes: np.ndarray | None, label_set_hash: str
) -> int:
    """Write the experts' rows for this label set unless they are there; how many were written."""
    if votes is None:
        return 0
    with sessions.begin() as session:
        hold_lock(session, PATHOLOGIST_ROWS)  # workers seed at the same moment
        current = session.scalars(
            select(Result)
            .join(Submission, Submission.id == Result.submission_id)
            .where(Submission.kind == KIND, Result.current.is_(True))
        ).all()
        if current and all(r.label_set_hash == label_set_hash for r in current):
            return 0
        session.execute(
            update(Result).where(Result.id.in_([r.id for r in current])).values(current=False)
        )
        experts = {
            s.meta["model_name"]: s
            for s in session.scalars(select(Submission).where(Submission.kind == KIND))
        }
        agreements = reader_agreement(votes)
        as_normal = reader_agreement(votes, ties="normal")
        as_atypical = reader_agreement(votes, ties="atypical")
        for agreement, normal, atypical in zip(agreements, as_normal, as_atypical, strict=True):
            name = f"Pathologist {agreement.reader + 1} of {len(agreements)}"
            submission = experts.get(name) or Submission(
                sha256=None, kind=KIND, user=PATHOLOGISTS_USER, meta=_meta(name, len(agreements))
            )
            session.add(submission)
            session.flush()
            released = {
                "ba": round_hidden(agreement.balanced_accuracy),
                "ba_ties_normal": round_hidden(normal.balanced_accuracy),
                "ba_ties_atypical": round_hidden(atypical.balanced_accuracy),
                "tied_percent": round(100 * agreement.tied / len(votes)),
            }
            session.add(
                Result(
                    submission_id=submission.id,
                    split=SPLIT,
                    n=agreement.n,
                    n_atypical=agreement.n_atypical,
                    ba=agreement.balanced_accuracy,
                    published=released,
                    scorer_version="readers",
                    label_set_hash=label_set_hash,
                )
            )
        return len(agreements)


def _meta(name: str, readers: int) -> dict:
    return EntryMetadata(
        model_name=name,
        team="AtNorM-MD experts",
        method_type="other",
        description=(
            f"One of the {readers} experts who labelled AtNorM-MD, scored against the majority "
            f"of the other {readers - 1}; crops where they split evenly are left out."
        ),
    ).to_dict()
