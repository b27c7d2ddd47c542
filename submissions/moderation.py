"""Entries off the board: a submitter's withdrawal, and the maintainers' take-down and restore.

A take-down is a withdrawal the maintainers make (``withdrawn_at`` is set, so every surface
leaves the entry out as it does a submitter's withdrawal) with the reason its submitter reads
on their receipt. What was released stays counted, as for a withdrawal: the account's bar and
allowances do not change, and putting the entry back releases nothing new. Both take the
account's lock, as every decision on its entries does.
"""

from __future__ import annotations

from sqlalchemy.orm import sessionmaker

from fileio import quoted
from store.entry import CONTROL_CHARACTERS
from store.locks import lock_account
from store.schema import MAX_TAKEDOWN_REASON, SCORED_KINDS, Job, Submission, utcnow
from submissions import jobs
from submissions.errors import ModerationRefused, NotWithdrawable


def withdraw(sessions: sessionmaker, user: str, job_id: int) -> None:
    """Take the entry of ``user``'s job ``job_id`` off the board, as its submitter.

    A take-down by the maintainers becomes the submitter's own withdrawal, which
    :func:`restore` does not undo. Raises ``JobNotFound`` for other users' jobs.
    """
    with sessions.begin() as session:
        lock_account(session, user)
        submission = jobs.user_job(session, job_id, user).submission
        if submission.withdrawn_at is not None and not submission.taken_down:
            raise NotWithdrawable(f"The entry of job {job_id} is already withdrawn.")
        if submission.taken_down:
            submission.taken_down, submission.moderated_at = None, utcnow()
        else:
            submission.withdrawn_at = utcnow()


def take_down(sessions: sessionmaker, entry_id: int, reason: str) -> str:
    """Take entry ``entry_id`` off the board for ``reason``; returns its model name."""
    reason = " ".join(reason.split())
    if not reason:
        raise ModerationRefused("Give the reason its submitter will read (--reason).")
    if len(reason) > MAX_TAKEDOWN_REASON:
        raise ModerationRefused(
            f"The reason has {len(reason)} characters; at most {MAX_TAKEDOWN_REASON} fit."
        )
    if CONTROL_CHARACTERS.search(reason):
        raise ModerationRefused("The reason contains a control or text-direction character.")
    with sessions.begin() as session:
        submission = _entry(session, entry_id)
        if submission.taken_down:
            reason_now = quoted(submission.taken_down, MAX_TAKEDOWN_REASON)
            raise ModerationRefused(
                f"Entry {entry_id} is already taken down, with the reason {reason_now}. To give "
                f"another, put it back with --restore {entry_id} and take it down again."
            )
        if submission.withdrawn_at is not None:
            raise ModerationRefused(f"Entry {entry_id} is withdrawn by its submitter already.")
        submission.withdrawn_at = submission.moderated_at = utcnow()
        submission.taken_down = reason
        return submission.entry.model_name


def restore(sessions: sessionmaker, entry_id: int) -> str:
    """Put a taken-down entry back on the board; returns its model name.

    A submitter's own withdrawal is theirs: it is not undone here.
    """
    with sessions.begin() as session:
        submission = _entry(session, entry_id)
        if not submission.taken_down:
            raise ModerationRefused(
                f"Entry {entry_id} was not taken down"
                + (" (its submitter withdrew it)." if submission.withdrawn_at else ".")
            )
        submission.withdrawn_at = submission.taken_down = None
        submission.moderated_at = utcnow()
        return submission.entry.model_name


def _entry(session, entry_id: int) -> Submission:
    """The entry, read again under its account's lock (which its submitter's withdrawal takes)."""
    submission = session.get(Submission, entry_id)
    if submission is None or submission.kind not in SCORED_KINDS:
        job = session.get(Job, entry_id)  # a receipt's job id, given by mistake
        hint = f" Job {entry_id} is entry {job.submission_id}." if job is not None else ""
        raise ModerationRefused(
            f"No submitted entry has id {entry_id} (the id in the board's entry details and "
            f"exports, not a job id; paper and pathologist rows are not moderated).{hint}"
        )
    lock_account(session, submission.user)
    session.refresh(submission)
    return submission
