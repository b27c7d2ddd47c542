"""Building the board from the store: the one function the app and exports call."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from leaderboard.ranking import Entry, load_entries, rank_entries
from leaderboard.standings import latest_standing
from store.schema import SHIPPED_MODEL_USER, Job, JobStatus, Result, Standing, Submission


def build_board(sessions: sessionmaker) -> list[Entry]:
    """Ranked entries, from released numbers only (no labels, no full-precision metrics)."""
    with sessions() as session:
        return rank_entries(load_entries(session), latest_standing(session))


def last_updated(sessions: sessionmaker) -> datetime | None:
    """When the board last changed (None before any change).

    The newest result, standing, withdrawal, publication, take-down or restore.
    """
    with sessions() as session:
        moments = [
            session.scalar(select(func.max(Result.created_at))),
            session.scalar(select(func.max(Standing.created_at))),
            session.scalar(select(func.max(Submission.withdrawn_at))),
            session.scalar(select(func.max(Submission.published_at))),
            session.scalar(select(func.max(Submission.moderated_at))),
        ]
    known = [m for m in moments if m is not None]  # aware UTC (the column type)
    return max(known) if known else None


def verified_checkpoints(sessions: sessionmaker, data_dir: Path) -> dict[str, Path]:
    """Stored checkpoint zip of every verified entry the worker has run, by display name.

    The name is "<model name> (#<entry id>)": the id keeps names that submitters chose from
    colliding with each other or with the shipped model. The shipped model's own entry (the
    same files as the first choice) and withdrawn entries are not offered.
    """
    with sessions() as session:
        rows = session.execute(
            select(Submission.id, Submission.meta, Submission.path)
            .join(Job)
            .where(
                Submission.kind == "checkpoint",
                Submission.user != SHIPPED_MODEL_USER,
                Submission.withdrawn_at.is_(None),
                Job.status == JobStatus.FINISHED,
            )
            .order_by(Submission.id)
        ).all()
    stored = {f"{meta['model_name']} (#{i})": Path(data_dir) / path for i, meta, path in rows}
    return {label: path for label, path in stored.items() if path.is_file()}


def classify_models(
    sessions: sessionmaker, default_checkpoint: Path, data_dir: Path, default_name: str
) -> dict[str, Path]:
    """The Classify tab's model choices: the shipped model first, then every verified one."""
    return {default_name: Path(default_checkpoint), **verified_checkpoints(sessions, data_dir)}


def shipped_model_status(sessions: sessionmaker) -> str:
    """Why the shipped model is not on the board yet, or '' when it is (never silent)."""
    with sessions() as session:
        job = session.scalar(
            select(Job)
            .join(Submission)
            .where(Submission.user == SHIPPED_MODEL_USER, Submission.kind == "checkpoint")
            .order_by(Job.id.desc())
        )
        if job is None:
            return "The shipped model has not been queued yet: no evaluation worker has started."
        if job.status == JobStatus.FINISHED:
            return ""
        if job.status == JobStatus.FAILED:
            return (
                f"The shipped model's evaluation failed: {job.reason} It is tried again when a "
                "worker starts."
            )
        progress = (
            f" ({job.progress_done}/{job.progress_total} crops)" if job.progress_total else ""
        )
        return f"The shipped model is being evaluated{progress}; its verified entry follows."
