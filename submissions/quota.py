"""Per-user limits, checked and consumed atomically in the database.

Every decision that reads a user's jobs and then writes (a new submission; the Ladder's release
decision) starts by locking the user's account row (``store.locks.lock_account``). So any number
of app processes and workers, on any number of hosts, decide one at a time per user, and a
quota of 3 admits exactly 3.

Limits (all per user, rolling 24 hours on the database server's clock, documented in
docs/operations.md):

- hidden-split scorings: ``MITOSIS_HIDDEN_QUOTA``; failed and cancelled jobs do not count;
- open checkpoint jobs (queued or running) at any moment: ``MITOSIS_MAX_OPEN_CHECKPOINTS``;
- checkpoint compute: ``MITOSIS_COMPUTE_ALLOWANCE_S`` seconds, charged for finished
  checkpoint jobs and for those that fail for the model's own reasons (the time limit,
  memory, non-finite outputs: ``evaluation.errors.ModelRunFailed``), less the
  worker's pauses for the Space's users (a model too slow or too big costs its submitter, so
  nobody can keep the workers busy with failures); the server's own faults cost nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from settings import Settings
from store.clock import store_now
from store.schema import OPEN_STATES, PUBLIC_ONLY, Job, JobStatus, Submission
from submissions.errors import QuotaExceeded

COUNTED = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FINISHED)
WINDOW = timedelta(hours=24)


def check_limits(session: Session, user: str, kind: str, settings: Settings) -> None:
    """Raise ``QuotaExceeded`` if ``user`` may not submit a ``kind`` now (hold the lock)."""
    since = store_now(session) - WINDOW  # one clock for every app host: the server's
    if settings.hidden_quota == 0:
        raise QuotaExceeded(
            "This server scores no hidden splits (MITOSIS_HIDDEN_QUOTA is 0); score AMi-Br test "
            "locally with `python -m evaluation.score`."
        )
    counted = hidden_jobs_since(session, user, since)
    if len(counted) >= settings.hidden_quota:
        raise QuotaExceeded(
            f"You have used your {settings.hidden_quota} hidden-split scorings of the last 24 "
            f"hours; the next one is available at {_next_slot(counted[0])} UTC. Invalid uploads "
            "and failed jobs do not count."
        )
    if kind != "checkpoint":
        return
    open_jobs = _open_jobs(
        session, user, Submission.kind == kind, Job.counts_toward_quota.is_(True)
    )
    if open_jobs >= settings.max_open_checkpoints:
        raise QuotaExceeded(
            f"You already have {open_jobs} checkpoint job(s) queued or running; at most "
            f"{settings.max_open_checkpoints} at a time. Submit the next one when it has ended."
        )
    charged = compute_charged_since(session, user, since)
    if charged >= settings.compute_allowance_s:
        raise QuotaExceeded(
            f"Your checkpoints used {charged:.0f} s of evaluation time in the last 24 hours; "
            f"the allowance is {settings.compute_allowance_s} s (a model's own failures count). "
            "Submit a faster model later, or a prediction file now."
        )


def check_public_only(session: Session, user: str) -> None:
    """One public-split check per user at a time (they spend no hidden scoring).

    A re-scoring of a check that was scored before is the maintainers', not the user's.
    """
    scored = select(Job.submission_id).where(Job.status == JobStatus.FINISHED)
    if _open_jobs(session, user, Job.scope == PUBLIC_ONLY, ~Job.submission_id.in_(scored)):
        raise QuotaExceeded(
            "You already have a public-split check queued or running; submit the next one "
            "when it has ended (they take seconds)."
        )


def _open_jobs(session: Session, user: str, *conditions) -> int:
    """How many of ``user``'s jobs meeting ``conditions`` are queued or running."""
    return session.scalar(
        select(func.count(Job.id))
        .join(Submission)
        .where(Submission.user == user, Job.status.in_(OPEN_STATES), *conditions)
    )


def hidden_jobs_since(session: Session, user: str, since: datetime) -> list[datetime]:
    """Creation times, oldest first, of ``user``'s quota-counting scorings since ``since``.

    Hidden-split jobs count unless they failed or were cancelled.
    """
    return list(
        session.scalars(
            select(Job.created_at)
            .join(Submission)
            .where(
                Submission.user == user,
                Job.counts_toward_quota.is_(True),
                Job.created_at >= since,
                Job.status.in_(COUNTED),
            )
            .order_by(Job.created_at)
        )
    )


def compute_charged_since(session: Session, user: str, since: datetime) -> float:
    """Seconds of checkpoint evaluation charged to ``user`` for jobs started since ``since``."""
    return float(
        session.scalar(
            select(func.coalesce(func.sum(Job.charged_s), 0.0))
            .join(Submission)
            .where(Submission.user == user, Job.started_at >= since)
        )
    )


def remaining_scorings(session: Session, user: str, settings: Settings) -> str:
    """How many hidden-split scorings ``user`` has left in the rolling 24 hours, in words."""
    counted = hidden_jobs_since(session, user, store_now(session) - WINDOW)
    left = max(0, settings.hidden_quota - len(counted))
    text = f"Hidden-split scorings left in the last 24 hours: {left} of {settings.hidden_quota}."
    if counted:
        text += f" The next one frees up at {_next_slot(counted[0])} UTC."
    return text + " Invalid uploads and failed jobs do not count."


def _next_slot(oldest: datetime) -> str:
    return f"{oldest + WINDOW:%Y-%m-%d %H:%M}"
