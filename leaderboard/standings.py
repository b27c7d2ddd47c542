"""The rank standing: one paired bootstrap over the hidden crops of every tested entry.

An entry is *tested* when its hidden scores are released and the store holds its per-crop
decisions on every hidden split under the current label set (any scored submission; the
paper's rows have no per-crop decisions). Withdrawn and taken-down entries stay in the
comparison though the board no longer shows them: a withdrawal then publishes no new margin
(a free look at the labels), and a margin over more entries is only wider, never too narrow.

After each scoring the worker recomputes the standing from those decisions and the labels it
passes in (nothing here opens the label store) and stores the one number the release policy
lets out of it: the simultaneous margin, rounded up (``evaluation.disclosure``), with the
entries it covers. The board derives rank intervals and the top group from it and the released
means; nothing is computed on a page view.

Recomputation runs under one store-wide lock, so the newest standing always covers every entry
released before it started; when the tested results have not changed, nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evaluation.bundle import SplitLabels
from evaluation.disclosure import HIDDEN, release_margin
from evaluation.metrics import simultaneous_margin
from store.locks import STANDINGS, hold_lock
from store.schema import SCORED_KINDS, Result, Standing, Submission

CONFIDENCE = 0.95
SEED = 0


@dataclass(frozen=True)
class StandingView:
    """What the board reads of the newest standing (released values only)."""

    margin: float
    submission_ids: frozenset[int]
    n_resamples: int
    computed_at: datetime


def latest_standing(session: Session) -> StandingView | None:
    """The newest standing, or None before the first tested entry."""
    row = session.scalar(select(Standing).order_by(Standing.id.desc()).limit(1))
    if row is None:
        return None
    return StandingView(
        margin=row.margin,
        submission_ids=frozenset(row.submission_ids),
        n_resamples=row.n_resamples,
        computed_at=row.created_at,
    )


def update_standing(
    sessions: sessionmaker,
    labels: Mapping[str, SplitLabels],
    *,
    label_set_hash: str,
    n_resamples: int,
) -> StandingView | None:
    """Recompute the standing when the tested results changed; the newest standing after."""
    with sessions.begin() as session:
        hold_lock(session, STANDINGS)
        tested = _tested_results(session, label_set_hash)
        result_ids = sorted(row.id for rows in tested.values() for row in rows.values())
        newest = session.scalar(select(Standing).order_by(Standing.id.desc()).limit(1))
        if (
            newest is not None
            and newest.result_ids == result_ids
            and newest.n_resamples == n_resamples
        ):
            return latest_standing(session)
        if not tested:
            return None
        submission_ids = sorted(tested)
        y_true, decisions = [], []
        for split in HIDDEN:
            truth = labels[split]
            order = np.argsort(truth.image_ids)
            y_true.append(truth.y_true[order])
            decisions.append(
                np.stack(
                    [
                        np.unpackbits(
                            np.frombuffer(tested[s][split].decisions, np.uint8),
                            count=len(order),
                        )
                        for s in submission_ids
                    ]
                )
            )
        margin = simultaneous_margin(
            y_true, decisions, n_resamples=n_resamples, confidence=CONFIDENCE, seed=SEED
        )
        session.add(
            Standing(
                margin=release_margin(margin),
                submission_ids=submission_ids,
                result_ids=result_ids,
                n_resamples=n_resamples,
                label_set_hash=label_set_hash,
            )
        )
        session.flush()
        return latest_standing(session)


def _tested_results(session: Session, label_set_hash: str) -> dict[int, dict[str, Result]]:
    """Current, released hidden results with decisions, of entries complete on every split."""
    rows = session.scalars(
        select(Result)
        .join(Submission, Submission.id == Result.submission_id)
        .where(
            Submission.kind.in_(SCORED_KINDS),
            Result.current.is_(True),
            Result.split.in_(HIDDEN),
            Result.published.is_not(None),
            Result.decisions.is_not(None),
            Result.label_set_hash == label_set_hash,
        )
    ).all()
    by_submission: dict[int, dict[str, Result]] = {}
    for row in rows:
        by_submission.setdefault(row.submission_id, {})[row.split] = row
    return {s: r for s, r in by_submission.items() if len(r) == len(HIDDEN)}
