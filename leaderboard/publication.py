"""What the board may show of a job's results: the release policy applied with the Ladder.

``evaluation.disclosure`` says what a split may release and when a scoring is released; this
module applies it to the store. Every decision runs under the submitter's account lock, in the
transaction that writes what it decides, so concurrent workers decide one at a time per account.

The Ladder's bar is stored with the account (``Account.ladder_bar``) and only rises: it is the
best hidden mean ever released for the account, whatever was submitted, cancelled, failed,
retried, withdrawn or re-scored since. Each submission's decision is stored
(``Submission.release``) and replayed when it is scored again. The labels are never read here:
only scores the worker wrote.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from evaluation.disclosure import (
    HIDDEN,
    PUBLIC_METRICS,
    hidden_mean,
    ladder_releases,
    release_bar,
    release_noise,
    release_split,
    withheld_note,
)
from evaluation.splits import get_split
from leaderboard.errors import NotPublishable
from settings import Settings
from store.clock import store_now
from store.locks import lock_account
from store.schema import (
    PUBLIC_ONLY,
    SHIPPED_MODEL_USER,
    Account,
    Job,
    JobStatus,
    Result,
    Submission,
)
from store.shared_values import shared_value

NOISE_KEY = "release-noise-key"
RELEASED, WITHHELD, PUBLISHED, MAINTAINER = "released", "withheld", "published", "maintainer"
PUBLISH_WINDOW = timedelta(days=30)
MAINTAINER_NOTE = "maintainer-run account: every scoring is released (rounded, as for everyone)"


def is_maintainer(user: str, settings: Settings) -> bool:
    """Whether ``user``'s scorings are always released (the shipped model's account is)."""
    return user == SHIPPED_MODEL_USER or user in settings.maintainer_accounts


def release(session: Session, job: Job, rows: list[Result], settings: Settings) -> None:
    """Set what anyone may read of a job's results: the policy, with the Ladder's decision.

    Runs inside the transaction that writes the results.
    """
    for row in rows:
        if not get_split(row.split).hidden:
            row.published = release_split(row.split, _metrics(row))
    hidden = [row for row in rows if get_split(row.split).hidden]
    if not hidden:
        job.disclosure = (
            "public split only: no hidden split scored" if (job.scope == PUBLIC_ONLY) else ""
        )
        return
    submission = job.submission
    lock_account(session, submission.user)
    session.refresh(submission)  # a publication may have been decided while this job ran
    candidate = _candidate(session, submission, hidden)
    bar = account_bar(session, submission.user)
    maintainer = is_maintainer(submission.user, settings)
    decision = stored_decision(session, submission, other_than=job.id)
    if maintainer:
        released = True
    elif decision:  # re-scoring replays the stored decision
        released = decision in (RELEASED, PUBLISHED, MAINTAINER)
    else:
        released = ladder_releases(hidden_mean(candidate), bar, floor=settings.release_floor)
    if released:
        for row in hidden:
            row.published = candidate[row.split]
        _raise_bar(session, submission.user, hidden_mean(candidate), bar)
        submission.release = MAINTAINER if maintainer else (decision or RELEASED)
        job.disclosure = MAINTAINER_NOTE if maintainer else "released"
    else:
        for row in hidden:
            row.published = None
        submission.release = WITHHELD
        job.disclosure = withheld_note(bar, floor=settings.release_floor)


def stored_decision(session: Session, submission: Submission, *, other_than: int = 0) -> str:
    """The submission's stored decision ("" before the first).

    A store written before decisions were stored has none: then the results of its jobs
    that were decided (other than ``other_than``, the one being decided) say what was: released
    if any hidden split was, withheld if they were scored. A job from before the policy, not
    decided yet (:func:`release_pending` decides them oldest first), says nothing.
    """
    if submission.release:
        return submission.release
    earlier = session.scalars(
        select(Result.published)
        .join(Job, Job.id == Result.job_id)
        .where(
            Result.submission_id == submission.id,
            Result.split.in_(HIDDEN),
            Job.id != other_than,
            Job.disclosure.is_not(None),
            Job.disclosure != "",
        )
    ).all()
    if not earlier:
        return ""
    return RELEASED if any(p is not None for p in earlier) else WITHHELD


def account_bar(session: Session, user: str) -> float | None:
    """The best hidden mean ever released for ``user`` (None before the first release).

    The stored bar, or (for a store written before the bar was stored) the best released mean
    of any of the account's scorings, a re-scoring's earlier values included, whichever is
    higher; it never falls.
    """
    stored = session.scalar(select(Account.ladder_bar).where(Account.user == user))
    rows = session.execute(
        select(Result.job_id, Result.split, Result.published)
        .join(Submission, Submission.id == Result.submission_id)
        .where(
            Submission.user == user,
            Result.split.in_(HIDDEN),
            Result.published.is_not(None),
            Result.job_id.is_not(None),
        )
    ).all()
    released: dict[int, dict] = {}  # per job: one scoring's released values
    for job_id, split, published in rows:
        released.setdefault(job_id, {})[split] = published
    means = [m for m in map(hidden_mean, released.values()) if m is not None]
    known = [v for v in (stored, max(means, default=None)) if v is not None]
    return max(known) if known else None


def release_status(sessions: sessionmaker, settings: Settings, user: str) -> str:
    """What ``user``'s next hidden scoring must reach to be released, in words."""
    with sessions() as session:
        if is_maintainer(user, settings):
            return f"This is a {MAINTAINER_NOTE}."
        bar = account_bar(session, user)
        left = settings.publish_allowance - _published_since(session, user)
    best = (
        "You have no released hidden mean BA yet"
        if bar is None
        else f"Your best released hidden mean BA is {bar:.3f}"
    )
    need = release_bar(bar, floor=settings.release_floor)
    return (
        f"{best}: a new scoring is released when its hidden mean BA, as released, is at least "
        f"{need:.3f} (otherwise it is withheld and shown as such). Withheld scorings you may "
        f"still publish: {max(0, left)} of {settings.publish_allowance} in 30 days."
    )


def publish(sessions: sessionmaker, settings: Settings, user: str, job_id: int) -> str:
    """Release a withheld scoring of ``user`` from the publish allowance; returns a note.

    Raises:
        NotPublishable: the job is not ``user``'s finished, withheld scoring; its released
            hidden mean would be below the release floor; or the allowance is used up.
    """
    with sessions.begin() as session:
        lock_account(session, user)
        job = session.get(Job, job_id)
        if job is None or job.submission.user != user:
            raise NotPublishable(f"You have no job {job_id}; see My submissions for your jobs.")
        submission = job.submission
        rows = session.scalars(
            select(Result).where(
                Result.submission_id == submission.id,
                Result.current.is_(True),
                Result.split.in_(HIDDEN),
            )
        ).all()
        decided = stored_decision(session, submission)
        if job.status != JobStatus.FINISHED or decided != WITHHELD or not rows:
            raise NotPublishable(
                f"Job {job_id} has no withheld hidden scores to publish: only a finished "
                "scoring that the release policy withheld can be published."
            )
        used = _published_since(session, user)
        if used >= settings.publish_allowance:
            raise NotPublishable(
                f"You have published {used} withheld scorings in the last 30 days; the "
                f"allowance is {settings.publish_allowance}. A scoring that beats your bar is "
                "released without it."
            )
        candidate = _candidate(session, submission, list(rows))
        mean = hidden_mean(candidate)
        if mean < settings.release_floor - 1e-9:
            raise NotPublishable(
                f"This scoring's hidden mean BA is below the release floor "
                f"({settings.release_floor:.2f}), so it cannot be published."
            )
        for row in rows:
            row.published = candidate[row.split]
        _raise_bar(session, user, mean, account_bar(session, user))
        submission.release = PUBLISHED
        submission.published_at = store_now(session)  # the allowance's window: one clock
        for each in submission.jobs:
            if each.status == JobStatus.FINISHED:
                each.disclosure = "published from the allowance"
    return f"Job {job_id} is published: its hidden mean BA, as released, is {mean:.3f}."


def release_pending(sessions: sessionmaker, settings: Settings) -> int:
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
            release(session, job, list(rows), settings)
            session.flush()
    return len(pending)


def noise_key(session: Session) -> bytes:
    """The server's secret for the release offsets, created on first use (in the store)."""
    return bytes.fromhex(shared_value(session, NOISE_KEY, lambda: secrets.token_hex(32)))


def _candidate(session: Session, submission: Submission, hidden: list[Result]) -> dict:
    """What each hidden split would release: its BA with the keyed offset, rounded.

    The offset is keyed by the split's per-crop decisions (which alone set the BA), so equal
    decisions always show equal numbers, whoever submits them and however often.
    """
    key = noise_key(session)
    return {
        row.split: release_split(
            row.split,
            _metrics(row),
            noise=release_noise(key, _decisions_digest(row, submission), row.split),
        )
        for row in hidden
    }


def _decisions_digest(row: Result, submission: Submission) -> str:
    if row.decisions is None:
        return submission.sha256 or f"submission-{submission.id}"
    return hashlib.sha256(row.decisions).hexdigest()


def _raise_bar(session: Session, user: str, mean: float, current: float | None) -> None:
    account = session.get(Account, user)
    account.ladder_bar = max(mean, current) if current is not None else mean


def _published_since(session: Session, user: str) -> int:
    return int(
        session.scalar(
            select(func.count(Submission.id)).where(
                Submission.user == user,
                Submission.published_at >= store_now(session) - PUBLISH_WINDOW,
            )
        )
    )


def _metrics(row: Result) -> dict:
    return {**{k: getattr(row, k) for k in PUBLIC_METRICS}, "curves": row.curves}
