"""What the board may show of a job's results: the release policy applied with the Ladder.

``evaluation.disclosure`` says what a split may release and when a scoring is released; this
module applies it to the store. The decision reads the account's earlier released entries at
full precision, so it runs inside the transaction that writes the results, under the
submitter's account lock (concurrent workers decide one at a time per account). The labels are
never read here: only scores the worker wrote.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evaluation.disclosure import (
    HIDDEN,
    PUBLIC_METRICS,
    ladder_releases,
    release_split,
    withheld_note,
)
from evaluation.splits import get_split
from leaderboard.results import Result
from submissions.quota import lock_account
from submissions.tables import Job, JobStatus, Submission


def release(session: Session, job: Job, rows: list[Result]) -> None:
    """Set what anyone may read of a job's results: the policy, with the Ladder's decision.

    Runs inside the transaction that writes the results; the submitter's account lock makes
    concurrent decisions for one account happen one at a time.
    """
    for row in rows:
        if not get_split(row.split).hidden:
            row.published = release_split(row.split, _metrics(row))
    hidden = [row for row in rows if get_split(row.split).hidden]
    if not hidden:
        return
    user = job.submission.user
    lock_account(session, user)
    best = best_released_mean(session, user, before_submission=job.submission_id)
    if ladder_releases(float(np.mean([row.ba for row in hidden])), best):
        for row in hidden:
            row.published = release_split(row.split, _metrics(row))
        job.disclosure = "released"
    else:
        for row in hidden:
            row.published = None
        job.disclosure = withheld_note(best)


def best_released_mean(session: Session, user: str, *, before_submission: int) -> float | None:
    """The best full-precision hidden mean BA of ``user``'s released entries submitted earlier.

    Only earlier entries count, so re-scoring replays the Ladder's original decisions.
    """
    rows = session.execute(
        select(Result.submission_id, Result.ba)
        .join(Submission, Submission.id == Result.submission_id)
        .where(
            Submission.user == user,
            Result.current.is_(True),
            Result.split.in_(HIDDEN),
            Result.published.is_not(None),
            Result.submission_id < before_submission,
        )
    ).all()
    by_submission: dict[int, list[float]] = {}
    for submission_id, ba in rows:
        by_submission.setdefault(submission_id, []).append(ba)
    means = [float(np.mean(v)) for v in by_submission.values() if len(v) == len(HIDDEN)]
    return max(means) if means else None


def release_pending(sessions: sessionmaker) -> int:
    """Apply the release policy to finished jobs written before it existed, oldest first."""
    with sessions.begin() as session:
        pending = session.scalars(
            select(Job)
            .where(
                Job.status == JobStatus.FINISHED,
                (Job.disclosure.is_(None)) | (Job.disclosure == ""),
            )
            .order_by(Job.id)
        ).all()
        for job in pending:
            rows = session.scalars(select(Result).where(Result.job_id == job.id)).all()
            release(session, job, list(rows))
            session.flush()
    return len(pending)


def _metrics(row: Result) -> dict:
    return {**{k: getattr(row, k) for k in PUBLIC_METRICS}, "curves": row.curves}
