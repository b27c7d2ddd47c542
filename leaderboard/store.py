"""The project's database: submissions, jobs and results (SQLAlchemy 2).

SQLite (WAL, a busy timeout, foreign keys) by default; any SQLAlchemy URL from
``MITOSIS_DATABASE_URL`` (PostgreSQL for a shared deployment). It is the source of truth the UI
reads: the queue engine only carries job ids. A result row keeps its provenance (file hash,
scorer version, label-set hash, package versions) and re-scoring adds rows, marking the older
ones not current, so history is kept.

A result row holds the full-precision metrics (private: never shown) and ``published``, what
the release policy (``evaluation.disclosure``) lets anyone read; every reader shows only the
latter. ``accounts`` has one row per submitting user: locking it serialises that user's quota
check and insert, and the Ladder's release decision, across processes and hosts. ``workers``
holds every evaluation worker's heartbeat and current job, for the Space to show.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker


def utcnow() -> datetime:
    """Timezone-aware now, the one clock of the store."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""


class EntrySource(enum.StrEnum):
    """Where an entry's numbers come from."""

    VERIFIED = "verified"  # a checkpoint the server ran
    SELF_REPORTED = "self-reported"  # a prediction file
    PAPER = "paper"  # reported in the benchmark paper


class JobStatus(enum.StrEnum):
    """States of an evaluation job."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Submission(Base):
    """One uploaded file (or a paper row) and what its author says about it."""

    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # predictions | checkpoint | paper
    source: Mapped[EntrySource] = mapped_column(Enum(EntrySource, native_enum=False))
    user: Mapped[str] = mapped_column(String(100), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    team: Mapped[str] = mapped_column(String(200), default="")
    method_type: Mapped[str] = mapped_column(String(32), default="other")
    backbone: Mapped[str] = mapped_column(String(200), default="")
    pretraining: Mapped[str] = mapped_column(String(200), default="")
    training_data: Mapped[str] = mapped_column(String(300), default="")
    uses_midog: Mapped[bool] = mapped_column(Boolean, default=False)
    paper_url: Mapped[str] = mapped_column(String(500), default="")
    code_url: Mapped[str] = mapped_column(String(500), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    path: Mapped[str] = mapped_column(String(500), default="")  # relative to MITOSIS_DATA_DIR
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    jobs: Mapped[list[Job]] = relationship(back_populates="submission", order_by="Job.id")


class Job(Base):
    """One evaluation of a submission; at most one set of results per job."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    status: Mapped[JobStatus] = mapped_column(Enum(JobStatus, native_enum=False), index=True)
    hidden: Mapped[bool] = mapped_column(Boolean, default=True)  # counts against the quota
    reason: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    disclosure: Mapped[str] = mapped_column(Text, default="")  # what the Ladder released
    charged_s: Mapped[float] = mapped_column(Float, default=0.0)  # compute allowance used
    claim_token: Mapped[str] = mapped_column(String(32), default="")
    worker: Mapped[str] = mapped_column(String(100), default="")
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    submission: Mapped[Submission] = relationship(back_populates="jobs")
    results: Mapped[list[Result]] = relationship(back_populates="job")


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
    published: Mapped[dict | None] = mapped_column(
        JSON(none_as_null=True)
    )  # what anyone may read; None: withheld
    scorer_version: Mapped[str] = mapped_column(String(16), default="")
    label_set_hash: Mapped[str] = mapped_column(String(64), default="")
    versions: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    job: Mapped[Job | None] = relationship(back_populates="results")


class Account(Base):
    """One row per submitting user; its row lock serialises quota and release decisions."""

    __tablename__ = "accounts"

    user: Mapped[str] = mapped_column(String(100), primary_key=True)
    touched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WorkerRecord(Base):
    """An evaluation worker: where it runs, its heartbeat and what it is doing."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)  # host:pid
    host: Mapped[str] = mapped_column(String(100), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    device: Mapped[str] = mapped_column(String(100), default="")
    state: Mapped[str] = mapped_column(String(16), default="idle")  # idle | running | stopped
    job_id: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_store(url: str) -> sessionmaker:
    """A session factory on ``url``; creates the tables when missing."""
    engine: Engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    Base.metadata.create_all(engine)
    _add_missing_columns(engine)
    return sessionmaker(engine, expire_on_commit=False)


def _add_missing_columns(engine: Engine) -> None:
    """Bring a database written by an earlier version up to date (new columns are nullable).

    Results written before ``published`` existed are released by the worker at its start.
    """
    inspector = inspect(engine)
    with engine.begin() as connection:
        for table in Base.metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    kind = column.type.compile(dialect=engine.dialect)
                    connection.execute(
                        text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                    )
