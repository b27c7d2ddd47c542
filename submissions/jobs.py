"""Job states and transitions: claim with a lease, heartbeat, finish or fail once, reap.

Every transition is one conditional UPDATE, so two workers can never both own a job, and a
worker whose lease expired (presumed dead) can no longer write its result.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from submissions.errors import JobNotFound
from submissions.queue import EvaluationQueue
from submissions.tables import Job, JobStatus, Submission, utcnow

log = logging.getLogger(__name__)


def claim(sessions: sessionmaker, job_id: int, worker: str, lease_s: int) -> str | None:
    """Take a queued job: returns a claim token, or None when it is not queued any more."""
    token = secrets.token_hex(8)
    now = utcnow()
    with sessions.begin() as session:
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(
                status=JobStatus.RUNNING,
                claim_token=token,
                worker=worker,
                started_at=now,
                lease_expires_at=now + timedelta(seconds=lease_s),
                attempts=Job.attempts + 1,
            )
        ).rowcount
    return token if claimed else None


def heartbeat(sessions: sessionmaker, job_id: int, token: str, lease_s: int) -> bool:
    """Extend the lease; False when the job is no longer ours."""
    with sessions.begin() as session:
        return bool(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.claim_token == token, Job.status == JobStatus.RUNNING)
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
            ).rowcount
        )


def finish(
    sessions: sessionmaker,
    job_id: int,
    token: str,
    write_results: Callable[[Session, Job], None],
    *,
    charged_s: float = 0.0,
) -> bool:
    """Mark the job finished and write its results in one transaction, only if still ours.

    ``write_results`` runs inside the transaction (the worker's: it writes the scores and
    records on the job what was released); nothing is written when the lease was lost.
    """
    with sessions.begin() as session:
        done = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.claim_token == token, Job.status == JobStatus.RUNNING)
            .values(
                status=JobStatus.FINISHED,
                finished_at=utcnow(),
                lease_expires_at=None,
                charged_s=charged_s,
            )
        ).rowcount
        if done:
            write_results(session, session.get(Job, job_id))
    return bool(done)


def fail(
    sessions: sessionmaker, job_id: int, token: str, reason: str, *, charged_s: float = 0.0
) -> bool:
    """Mark the job failed with ``reason``; failed jobs never count against the quota.

    ``charged_s`` is what the attempt costs the submitter's compute allowance (the run time
    of a checkpoint that hit the time limit; nothing for errors that are not theirs).
    """
    with sessions.begin() as session:
        return bool(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.claim_token == token, Job.status == JobStatus.RUNNING)
                .values(
                    status=JobStatus.FAILED,
                    reason=reason,
                    finished_at=utcnow(),
                    lease_expires_at=None,
                    charged_s=charged_s,
                )
            ).rowcount
        )


def cancel(sessions: sessionmaker, job_id: int, user: str) -> bool:
    """Cancel one of ``user``'s jobs that has not started."""
    with sessions.begin() as session:
        owned = select(Submission.id).where(Submission.user == user)
        return bool(
            session.execute(
                update(Job)
                .where(
                    Job.id == job_id, Job.status == JobStatus.QUEUED, Job.submission_id.in_(owned)
                )
                .values(status=JobStatus.CANCELLED, finished_at=utcnow())
            ).rowcount
        )


def reap(
    sessions: sessionmaker,
    *,
    stale_after_s: float = 30.0,
    max_attempts: int = 3,
    include_stale: bool = True,
) -> list[int]:
    """Jobs to enqueue again.

    Running jobs whose lease expired go back to queued (or fail after ``max_attempts``). With
    ``include_stale`` (the worker sets it when the queue holds no message, so a lost message is
    the only way a job can still wait) queued jobs older than ``stale_after_s`` are returned too.
    """
    now = utcnow()
    with sessions.begin() as session:
        expired = session.execute(
            select(Job.id, Job.attempts).where(
                Job.status == JobStatus.RUNNING, Job.lease_expires_at < now
            )
        ).all()
        for job_id, attempts in expired:
            values = (
                {
                    "status": JobStatus.FAILED,
                    "finished_at": now,
                    "reason": f"the worker stopped {attempts} times while running this job",
                }
                if attempts >= max_attempts
                else {"status": JobStatus.QUEUED}
            )
            session.execute(
                update(Job)
                .where(
                    Job.id == job_id, Job.status == JobStatus.RUNNING, Job.lease_expires_at < now
                )
                .values(claim_token="", lease_expires_at=None, **values)
            )
        stale = (
            []
            if not include_stale
            else session.scalars(
                select(Job.id).where(
                    Job.status == JobStatus.QUEUED,
                    Job.created_at < now - timedelta(seconds=stale_after_s),
                )
            ).all()
        )
    return sorted(set(stale) | {j for j, a in expired if a < max_attempts})


def queue_position(session: Session, job: Job) -> int:
    """1 + the queued jobs ahead of ``job`` (1: runs next); 0 once it has started."""
    if job.status != JobStatus.QUEUED:
        return 0
    ahead = select(func.count(Job.id)).where(Job.status == JobStatus.QUEUED, Job.id < job.id)
    return 1 + session.scalar(ahead)


def user_job(session: Session, job_id: int, user: str) -> Job:
    """``user``'s job ``job_id``; other users' jobs are indistinguishable from missing ones."""
    job = session.get(Job, job_id)
    if job is None or job.submission.user != user:
        raise JobNotFound(f"You have no submission with job id {job_id}.")
    return job


def requeue_lost(
    sessions: sessionmaker, queue: EvaluationQueue, *, stale_after_s: float
) -> list[int]:
    """Enqueue again every job whose worker died or whose message was lost; returns their ids."""
    idle = queue.pending() == 0
    lost = reap(sessions, stale_after_s=stale_after_s, include_stale=idle)
    for job_id in lost:
        queue.enqueue(job_id)
    return lost


def reap_forever(
    sessions: sessionmaker, queue: EvaluationQueue, stop: threading.Event, interval_s: float = 2.0
) -> None:
    """Run :func:`requeue_lost` every ``interval_s`` until ``stop`` is set.

    Workers and the app both run it, so a job whose worker died goes back to the queue even
    when no worker is alive to notice.
    """
    while not stop.wait(interval_s):
        try:
            for job_id in requeue_lost(sessions, queue, stale_after_s=max(5.0, interval_s * 5)):
                log.warning("job %d had lost its worker or its message: queued again", job_id)
        except Exception:
            log.exception("reaper")
