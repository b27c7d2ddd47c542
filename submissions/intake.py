"""Intake of submissions.

Validate (instant; nothing is stored when invalid), deduplicate, apply the quota, store by
hash, record the submission and its job in one transaction, enqueue.

Identity is the Hugging Face username on a Space (OAuth) or the configured local identity.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload, sessionmaker

from evaluation.bundle import PublicBundle
from evaluation.scoring import read_predictions
from leaderboard.store import EntrySource, Job, JobStatus, Result, Submission, utcnow
from models.checkpoint import inspect_checkpoint, read_zip
from models.errors import CheckpointError
from settings import Settings
from submissions import jobs
from submissions.errors import DuplicateSubmission, QuotaExceeded, SubmissionError
from submissions.metadata import EntryMetadata
from submissions.queue import EvaluationQueue
from submissions.storage import sha256, store_bytes

RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class JobView:
    """What a user may see of one of their jobs: status and aggregate numbers only."""

    job_id: int
    model_name: str
    kind: str
    source: str
    status: str
    reason: str
    queue_position: int
    created_at: str
    balanced_accuracy: dict[str, float]

    def to_dict(self) -> dict:
        """Plain JSON-ready form."""
        return asdict(self)


def resolve_user(oauth_username: str | None, settings: Settings) -> str:
    """The Hugging Face username when signed in, else the configured local identity."""
    return oauth_username or settings.local_user


class Submissions:
    """The submission service used by the app (one per process)."""

    def __init__(
        self, settings: Settings, sessions: sessionmaker, queue: EvaluationQueue | None = None
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.queue = queue or EvaluationQueue(settings)
        self._bundle: PublicBundle | None = None
        self._quota_lock = threading.Lock()  # one app process: quota check and insert are atomic

    @property
    def bundle(self) -> PublicBundle:
        """The public release (loaded on first use)."""
        if self._bundle is None:
            self._bundle = PublicBundle(self.settings.public_dir)
        return self._bundle

    def submit_predictions(self, user: str, data: bytes, meta: EntryMetadata) -> JobView:
        """Validate and queue a prediction file (a self-reported entry)."""
        meta = meta.validated()
        read_predictions(
            data, self.bundle.manifest, max_bytes=self.settings.max_prediction_file_bytes
        )
        return self._record(user, data, ".csv", "predictions", EntrySource.SELF_REPORTED, meta)

    def submit_checkpoint(self, user: str, data: bytes, meta: EntryMetadata) -> JobView:
        """Validate and queue a zipped checkpoint (a verified entry once the server ran it)."""
        meta = meta.validated()
        cap = self.settings.max_checkpoint_bytes
        if len(data) > cap:
            raise CheckpointError(
                f"The zip is {len(data) / 2**20:.0f} MB; the limit is {cap / 2**20:.0f} MB."
            )
        inspect_checkpoint(read_zip(data, max_bytes=cap))
        return self._record(user, data, ".zip", "checkpoint", EntrySource.VERIFIED, meta)

    def _record(self, user, data, suffix, kind, source, meta) -> JobView:
        digest = sha256(data)
        with self._quota_lock:
            existing = self._existing(digest, user)
            if existing and existing.jobs[-1].status not in RETRYABLE:
                return self.status(user, existing.jobs[-1].id)
            self._check_quota(user)
            try:
                with self.sessions.begin() as session:
                    if existing:  # its last run failed or was cancelled: run it again
                        submission = session.get(Submission, existing.id)
                    else:
                        path = store_bytes(self.settings.data_dir / "uploads", data, suffix)
                        submission = Submission(
                            sha256=digest,
                            kind=kind,
                            source=source,
                            user=user,
                            path=str(path.relative_to(self.settings.data_dir)),
                            size_bytes=len(data),
                            **asdict(meta),
                        )
                    job = Job(submission=submission, status=JobStatus.QUEUED, hidden=True)
                    session.add_all([submission, job])
            except IntegrityError:  # the same file arrived concurrently
                again = self._existing(digest, user) or self._duplicate()
                return self.status(user, again.jobs[-1].id)
        self.queue.enqueue(job.id)
        return self.status(user, job.id)

    def _existing(self, digest: str, user: str) -> Submission | None:
        """The submission of these bytes (with its jobs loaded), if ``user`` made it."""
        with self.sessions() as session:
            submission = session.scalar(
                select(Submission)
                .options(selectinload(Submission.jobs))
                .where(Submission.sha256 == digest)
            )
        if submission is not None and submission.user != user:
            self._duplicate()
        return submission

    @staticmethod
    def _duplicate():
        raise DuplicateSubmission(
            "This exact file was already submitted by another user; entries must be your own work."
        )

    def _check_quota(self, user: str) -> None:
        quota = self.settings.hidden_quota
        since = utcnow() - timedelta(hours=24)
        with self.sessions() as session:
            counted = jobs.hidden_jobs_since(session, user, since)
        if len(counted) < quota:
            return
        oldest = counted[0]
        raise QuotaExceeded(
            f"You have used your {quota} hidden-split scorings of the last 24 hours; the next "
            f"one is available at {_as_utc(oldest) + timedelta(hours=24):%Y-%m-%d %H:%M} UTC. "
            "Invalid uploads and failed jobs do not count."
        )

    def status(self, user: str, job_id: int) -> JobView:
        """One of ``user``'s jobs."""
        with self.sessions() as session:
            job = jobs.user_job(session, job_id, user)
            return _view(session, job)

    def my_submissions(self, user: str) -> list[JobView]:
        """Every job of ``user``, newest first."""
        with self.sessions() as session:
            found = session.scalars(
                select(Job).join(Submission).where(Submission.user == user).order_by(Job.id.desc())
            ).all()
            return [_view(session, job) for job in found]

    def cancel(self, user: str, job_id: int) -> bool:
        """Cancel a queued job of ``user``."""
        return jobs.cancel(self.sessions, job_id, user)


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=utcnow().tzinfo)


def _view(session, job: Job) -> JobView:
    results = session.scalars(select(Result).where(Result.job_id == job.id)).all()
    return JobView(
        job_id=job.id,
        model_name=job.submission.model_name,
        kind=job.submission.kind,
        source=str(job.submission.source),
        status=str(job.status),
        reason=job.reason,
        queue_position=jobs.queue_position(session, job),
        created_at=_as_utc(job.created_at).isoformat(timespec="seconds"),
        balanced_accuracy={r.split: r.ba for r in results},
    )


__all__ = ["JobView", "SubmissionError", "Submissions", "resolve_user"]
