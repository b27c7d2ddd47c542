"""The scores: one row per split per evaluation, with provenance; and what of them is released.

A row holds the full-precision metrics (private: kept for the maintainers, never shown) and
``published``, what the release policy (``evaluation.disclosure``) lets anyone read; every
reader shows only the latter. Re-scoring adds rows and marks the older ones not current, so
history is kept. Written by the worker only (and the paper's rows by ``leaderboard.paper``).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship, sessionmaker

from submissions.intake import JobView
from submissions.tables import Base, Job, utcnow


class Result(Base):
    """Every metric of one split for one job, with provenance."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("job_id", "split"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    split: Mapped[str] = mapped_column(String(32))
    current: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    n: Mapped[int | None] = mapped_column(Integer)
    n_atypical: Mapped[int | None] = mapped_column(Integer)
    ba: Mapped[float] = mapped_column(Float)
    ba_low: Mapped[float | None] = mapped_column(Float)
    ba_high: Mapped[float | None] = mapped_column(Float)
    ba_std: Mapped[float | None] = mapped_column(Float)  # paper rows: std over 5 fold models
    sensitivity: Mapped[float | None] = mapped_column(Float)
    specificity: Mapped[float | None] = mapped_column(Float)
    auroc: Mapped[float | None] = mapped_column(Float)
    auroc_low: Mapped[float | None] = mapped_column(Float)
    auroc_high: Mapped[float | None] = mapped_column(Float)
    average_precision: Mapped[float | None] = mapped_column(Float)
    brier: Mapped[float | None] = mapped_column(Float)
    ece: Mapped[float | None] = mapped_column(Float)
    tp: Mapped[int | None] = mapped_column(Integer)
    fn: Mapped[int | None] = mapped_column(Integer)
    tn: Mapped[int | None] = mapped_column(Integer)
    fp: Mapped[int | None] = mapped_column(Integer)
    decisions: Mapped[bytes | None] = mapped_column(LargeBinary)  # packed bits, sorted-id order
    curves: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))  # public splits only
    published: Mapped[dict | None] = mapped_column(
        JSON(none_as_null=True)
    )  # what anyone may read; None: withheld
    scorer_version: Mapped[str] = mapped_column(String(16), default="")
    label_set_hash: Mapped[str] = mapped_column(String(64), default="")
    versions: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    job: Mapped[Job | None] = relationship()


def released_scores(sessions: sessionmaker, job_id: int) -> dict[str, dict | None]:
    """What the release policy published of one job's results, by split (None: withheld)."""
    with sessions() as session:
        rows = session.execute(
            select(Result.split, Result.published).where(Result.job_id == job_id)
        ).all()
    return {split: published for split, published in sorted(rows)}


def job_report(sessions: sessionmaker, view: JobView) -> dict:
    """A job view with its released scores: what ``/submission_status`` returns."""
    return {**asdict(view), "scores": released_scores(sessions, view.job_id)}
