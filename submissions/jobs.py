"""Job states and transitions: claim with a lease, heartbeat, finish or fail once, reap.

Every transition is one conditional UPDATE, so two workers can never both own a job, and a
worker whose lease expired (presumed dead) can no longer write its result.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import pandas as pd
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from store.clock import store_now
from store.schema import (
    OPEN_STATES,
    Job,
    JobStatus,
    Submission,
)
from submissions.errors import JobNotFound
from submissions.queue import LANES, EvaluationQueue

log = logging.getLogger(__name__)


def claim(sessions: sessionmaker, job_id: int, worker: str, lease_s: int) -> str | None:
    """Take a queued job: returns a claim token, or None when it is not queued any more."""
    token = secrets.token_hex(8)
    with sessions.begin() as session:
        now = store_now(session)  # leases are judged by other hosts: the server's clock
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
                .values(lease_expires_at=store_now(session) + timedelta(seconds=lease_s))
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
                finished_at=store_now(session),
                lease_expires_at=None,
                charged_s=func.coalesce(Job.charged_s, 0.0) + charged_s,
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
                    finished_at=store_now(session),
                    lease_expires_at=None,
                    charged_s=func.coalesce(Job.charged_s, 0.0) + charged_s,
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
                .values(status=JobStatus.CANCELLED, finished_at=store_now(session))
            ).rowcount
        )


def reap(
    sessions: sessionmaker,
    *,
    stale_after_s: float = 30.0,
    max_attempts: int = 3,
    stale_lanes: Iterable[str] = LANES,
) -> list[tuple[int, str]]:
    """Jobs to enqueue again, with their lanes.

    Running jobs whose lease expired go back to queued (or fail after ``max_attempts``); a
    submitted model-lane attempt ended this way (a killed or out-of-memory worker) is charged
    to the submitter's compute allowance, from its start to its last heartbeat's lease. Queued
    jobs older than ``stale_after_s`` in ``stale_lanes`` are returned too: the caller names the
    lanes whose queue holds no message, where a lost message is the only way a job can wait.
    """
    with sessions.begin() as session:
        now = store_now(session)
        expired = session.execute(
            select(
                Job.id,
                Job.attempts,
                Job.lane,
                Job.started_at,
                Job.lease_expires_at,
                Job.counts_toward_quota,
            ).where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
        ).all()
        for job_id, attempts, lane, started, lease_end, counted in expired:
            charged = started is not None and counted and lane != "files"
            spent = (lease_end - started).total_seconds() if charged else 0.0
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
                .values(
                    claim_token="",
                    lease_expires_at=None,
                    charged_s=func.coalesce(Job.charged_s, 0.0) + spent,
                    **values,
                )
            )
        stale = session.execute(
            select(Job.id, Job.lane).where(
                Job.status == JobStatus.QUEUED,
                Job.lane.in_(list(stale_lanes)),
                Job.created_at < now - timedelta(seconds=stale_after_s),
            )
        ).all()
    again = {(j, lane) for j, a, lane, *_ in expired if a < max_attempts}
    return sorted(again | {(j, lane) for j, lane in stale})


def progress(sessions: sessionmaker, job_id: int, token: str, done: int, total: int) -> bool:
    """Record how many crops a running job has predicted; False when it is no longer ours."""
    with sessions.begin() as session:
        return bool(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.claim_token == token, Job.status == JobStatus.RUNNING)
                .values(progress_done=done, progress_total=total)
            ).rowcount
        )


def queue_position(session: Session, job: Job) -> int:
    """1 + the queued jobs ahead of ``job`` in its lane (1: runs next); 0 once it has started."""
    if job.status != JobStatus.QUEUED:
        return 0
    ahead = select(func.count(Job.id)).where(
        Job.status == JobStatus.QUEUED, Job.lane == job.lane, Job.id < job.id
    )
    return 1 + session.scalar(ahead)


def size_class(lane: str, estimated_s: float) -> str:
    """How big a job is, as the public queue shows it."""
    if lane == "files":
        return "prediction file"
    if lane == "gpu":
        return "needs a GPU"
    return "under 1 min" if estimated_s < 60 else f"about {max(1, round(estimated_s / 60))} min"


def display_state(job: Job) -> str:
    """The job's state in words: a queued job of the GPU lane is waiting for a GPU worker."""
    if job.status == JobStatus.QUEUED and job.lane == "gpu":
        return "waiting for a GPU worker"
    return str(job.status)


def public_row(job: Job, *, own: bool, now: datetime) -> dict:
    """One job as anyone may see it: its id only for its owner.

    Ages and the ETA are measured to ``now``, the database server's time (``store_now``), the
    clock the job's times were stamped with.
    """
    eta = None
    if job.started_at and job.progress_done and job.progress_total:
        elapsed = max((now - job.started_at).total_seconds(), 1e-3)
        eta = round((job.progress_total - job.progress_done) * elapsed / job.progress_done)
    return {
        "job": job.id if own else None,
        "lane": job.lane,
        "size": size_class(job.lane, job.estimated_s),
        "state": display_state(job),
        "age_s": round((now - job.created_at).total_seconds()),
        "done": job.progress_done,
        "total": job.progress_total,
        "eta_s": eta,
    }


def public_queue(
    session: Session, viewer: str | None = None, *, maintainer: bool = False
) -> list[dict]:
    """Every queued and running job as anyone may see it, oldest first.

    The viewer's own jobs carry their ids; others' are anonymised to lane, size, state, age,
    and, while running, progress and ETA. A maintainer (``python -m worker --status``) sees
    every job's id, entry and account.
    """
    rows = session.execute(
        select(Job, Submission.user)
        .join(Submission)
        .where(Job.status.in_(OPEN_STATES))
        .order_by(Job.id)
    ).all()
    queue, now = [], store_now(session)
    for job, user in rows:
        row = public_row(job, own=maintainer or (viewer is not None and user == viewer), now=now)
        if maintainer:
            row |= {"entry": job.submission_id, "user": user}
        queue.append(row)
    return queue


def ahead_of(session: Session, job: Job, now: datetime) -> list[dict]:
    """What runs or waits before ``job`` in its lane, anonymised."""
    if job.status != JobStatus.QUEUED:
        return []
    rows = session.scalars(
        select(Job)
        .where(
            Job.lane == job.lane,
            (Job.status == JobStatus.RUNNING)
            | ((Job.status == JobStatus.QUEUED) & (Job.id < job.id)),
        )
        .order_by(Job.id)
    ).all()
    return [public_row(other, own=False, now=now) for other in rows]


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
    idle = [lane for lane in queue.lanes if queue.pending(lane) == 0]
    lost = reap(sessions, stale_after_s=stale_after_s, stale_lanes=idle)
    for job_id, lane in lost:
        if lane in queue.lanes:
            queue.enqueue(job_id, lane)
    return [job_id for job_id, _ in lost]


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


def queue_table(
    sessions: sessionmaker, viewer: str | None = None, *, maintainer: bool = False
) -> pd.DataFrame:
    """The public queue as the Space shows it (the viewer's own jobs with their ids)."""
    with sessions() as session:
        rows = public_queue(session, viewer, maintainer=maintainer)
    columns = ["job", "lane", "size", "state", "waiting or running for", "progress", "ETA"]
    if maintainer:
        columns[1:1] = ["entry", "user"]
    return pd.DataFrame(
        [
            {
                "entry": r.get("entry"),
                "user": r.get("user"),
                "job": "" if r["job"] is None else r["job"],
                "lane": r["lane"],
                "size": r["size"],
                "state": r["state"],
                "waiting or running for": f"{r['age_s']} s",
                "progress": f"{r['done']}/{r['total']}" if r["total"] else "",
                "ETA": "" if r["eta_s"] is None else f"{r['eta_s']} s",
            }
            for r in rows
        ],
        columns=columns,
    )
