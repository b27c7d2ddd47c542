"""The project's database, and the tables of submissions: uploads, jobs, accounts, workers.

SQLAlchemy 2 on SQLite (WAL, a busy timeout, foreign keys) by default, or any URL from
``MITOSIS_DATABASE_URL`` (PostgreSQL for a shared deployment). It is the source of truth the UI
reads: the queue engine only carries job ids. Every package that owns tables declares them on
:class:`Base` (``leaderboard.results`` holds the scores); :func:`open_store` creates those
registered when it runs and brings a database written by an earlier version up to date.

- ``submissions``: one uploaded file (or a paper row), its kind and what its author says about it
  (``meta``: the fields of ``EntryMetadata``, the one definition of them);
- ``jobs``: one evaluation of a submission: state, lease, attempts, what the Ladder released;
- ``accounts``: one row per submitting user; locking it serialises that user's quota check and
  insert, and the release decision, across processes and hosts; it holds the Ladder's bar;
- ``secrets``: server secrets shared by every process (the release policy's offset key);
- ``workers``: every evaluation worker's heartbeat, device and current job.
"""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

from submissions.metadata import EntryMetadata, metadata_fields


def utcnow() -> datetime:
    """Timezone-aware now, the one clock of the store."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table of the project."""


class EntrySource(enum.StrEnum):
    """Where an entry's numbers come from, decided by the submission's kind."""

    VERIFIED = "verified"  # a checkpoint the server ran
    SELF_REPORTED = "self-reported"  # a prediction file
    PAPER = "paper"  # reported in the benchmark paper
    PATHOLOGIST = "pathologist"  # an AtNorM-MD expert against the other experts (a reference)


SHIPPED_MODEL_USER = "maintainers"  # who the shipped model's entry belongs to
PAPER_USER, PATHOLOGISTS_USER = "paper", "pathologists"  # the server's own reference rows
RESERVED_USERS = frozenset({SHIPPED_MODEL_USER, PAPER_USER, PATHOLOGISTS_USER})
SOURCE_OF_KIND = {
    "checkpoint": EntrySource.VERIFIED,
    "predictions": EntrySource.SELF_REPORTED,
    "paper": EntrySource.PAPER,
    "pathologist": EntrySource.PATHOLOGIST,
}
SCORED_KINDS = ("predictions", "checkpoint")  # the kinds the worker scores
ALL_SPLITS, PUBLIC_ONLY = "all", "public"  # a job's scope: every test split, or AMi-Br test


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
    user: Mapped[str] = mapped_column(String(100), index=True)
    meta: Mapped[dict] = mapped_column(JSON)  # EntryMetadata's fields
    path: Mapped[str] = mapped_column(String(500), default="")  # relative to MITOSIS_DATA_DIR
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # efficiency: parameters of the network, and (checkpoints) its forward time on a worker
    parameters: Mapped[int | None] = mapped_column(BigInteger)
    ms_per_crop: Mapped[float | None] = mapped_column(Float)
    measured_on: Mapped[str | None] = mapped_column(String(100))
    # a checkpoint submitted by Hub id: owner/name@commit, the revision it resolved to
    hub_ref: Mapped[str] = mapped_column(String(300), default="")
    # the release policy's decision on its hidden scores, replayed when it is re-scored:
    # "" (not decided yet), "released", "withheld", "published" (from the allowance) or
    # "maintainer" (a maintainer-run account: always released)
    release: Mapped[str | None] = mapped_column(String(16), default="")
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    jobs: Mapped[list[Job]] = relationship(back_populates="submission", order_by="Job.id")

    @property
    def source(self) -> EntrySource:
        """Verified, self-reported or paper: what the kind of the submission makes it."""
        return SOURCE_OF_KIND[self.kind]

    @property
    def entry(self) -> EntryMetadata:
        """What the author says about the entry."""
        return EntryMetadata.from_dict(self.meta)


class Job(Base):
    """One evaluation of a submission; at most one set of results per job."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    status: Mapped[JobStatus] = mapped_column(Enum(JobStatus, native_enum=False), index=True)
    counts_toward_quota: Mapped[bool] = mapped_column(Boolean, default=True)  # user-submitted
    scope: Mapped[str | None] = mapped_column(String(8), default=ALL_SPLITS)  # or PUBLIC_ONLY
    lane: Mapped[str] = mapped_column(String(8), default="files")  # see submissions.queue
    flops_per_crop: Mapped[float] = mapped_column(Float, default=0.0)  # a checkpoint's cost
    estimated_s: Mapped[float] = mapped_column(Float, default=0.0)  # on a CPU worker
    progress_done: Mapped[int] = mapped_column(Integer, default=0)  # crops predicted so far
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(Text, default="")
    disclosure: Mapped[str] = mapped_column(Text, default="")  # what the Ladder released
    charged_s: Mapped[float] = mapped_column(Float, default=0.0)  # compute allowance used
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claim_token: Mapped[str] = mapped_column(String(32), default="")
    worker: Mapped[str] = mapped_column(String(100), default="")
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    submission: Mapped[Submission] = relationship(back_populates="jobs")


class Account(Base):
    """One row per submitting user; its row lock serialises quota and release decisions."""

    __tablename__ = "accounts"

    user: Mapped[str] = mapped_column(String(100), primary_key=True)
    touched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # the best hidden mean BA ever released for this account: the Ladder's bar, only rises
    ladder_bar: Mapped[float | None] = mapped_column(Float)


class Secret(Base):
    """A server secret kept in the database, shared by every app and worker (never shown)."""

    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


class WorkerRecord(Base):
    """An evaluation worker: where it runs, its heartbeat and what it is doing."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)  # host:pid
    host: Mapped[str] = mapped_column(String(100), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    device: Mapped[str] = mapped_column(String(100), default="")
    threads: Mapped[int] = mapped_column(Integer, default=0)  # torch threads
    lanes: Mapped[str] = mapped_column(String(32), default="")  # the lanes it serves
    gflops: Mapped[float | None] = mapped_column(Float)  # measured on checkpoint jobs
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
    """A session factory on ``url``; creates the registered tables and migrates old ones."""
    engine: Engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    Base.metadata.create_all(engine)
    _migrate(engine)
    return sessionmaker(engine, expire_on_commit=False)


def _migrate(engine: Engine) -> None:
    """Bring a database written by an earlier version up to date, keeping every row.

    Version 1 kept the entry metadata in ten columns and the entry source in an eleventh (now
    ``meta`` and the kind), and called ``counts_toward_quota`` ``hidden``; later versions added
    nullable columns (results written before ``published`` existed are released by the worker
    at its start).
    """
    inspector = inspect(engine)
    tables = inspector.get_table_names()
    columns = {t: {c["name"] for c in inspector.get_columns(t)} for t in tables}
    with engine.begin() as connection:
        old = [f for f in metadata_fields() if f in columns.get("submissions", ())]
        if old:
            connection.execute(text("ALTER TABLE submissions ADD COLUMN meta JSON"))
            rows = connection.execute(
                text(f"SELECT id, {', '.join(old)} FROM submissions")
            ).mappings()
            for row in list(rows):
                meta = EntryMetadata.from_dict({f: row[f] for f in old})
                connection.execute(
                    text("UPDATE submissions SET meta = :meta WHERE id = :id"),
                    {"meta": json.dumps(meta.to_dict()), "id": row["id"]},
                )
            for column in [*old, "source"]:
                connection.execute(text(f'ALTER TABLE submissions DROP COLUMN "{column}"'))
            columns["submissions"] = (columns["submissions"] - set(old) - {"source"}) | {"meta"}
        if "hidden" in columns.get("jobs", ()):
            connection.execute(text("ALTER TABLE jobs RENAME COLUMN hidden TO counts_toward_quota"))
            columns["jobs"] = (columns["jobs"] - {"hidden"}) | {"counts_toward_quota"}
        for table in Base.metadata.sorted_tables:
            for column in table.columns:
                if table.name in columns and column.name not in columns[table.name]:
                    kind = column.type.compile(dialect=engine.dialect)
                    connection.execute(
                        text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                    )
