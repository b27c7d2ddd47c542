"""The schema of the project's database: every table, and the values its columns hold.

The database is the source of truth the UI reads (the queue engine only carries job ids).
Every table is declared here, on :class:`Base`; ``store.migrations`` holds how each version of
it becomes the next (Alembic), ``store.engine.open_store`` opens it.

- ``submissions``: one uploaded file (or a paper row), its kind and what its author says about it
  (``meta``: the fields of ``EntryMetadata``, the one definition of them);
- ``jobs``: one evaluation of a submission: state, lease, attempts, what the Ladder released;
- ``accounts``: one row per submitting user; locking it serialises that user's quota check and
  insert, and the release decision, across processes and hosts; it holds the Ladder's bar;
- ``secrets``: server secrets shared by every process (the release policy's offset key);
- ``workers``: every evaluation worker's heartbeat, device and current job;
- ``results``: one row per split per evaluation, with provenance and what of it is released;
- ``standings``: each computation of the board's rank margin over the tested entries;
- ``locks``: named locks (``store.locks``) that serialise decisions across processes and hosts.

Times are stored and read as timezone-aware UTC (:class:`UTCDateTime`): SQLite keeps no zone,
so the column type adds it back on the way out and nothing else converts.
"""

from __future__ import annotations

import enum
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
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from store.entry import EntryMetadata


def utcnow() -> datetime:
    """Timezone-aware now, the one clock of the store."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """``moment`` as aware UTC; a naive value is taken to be UTC already (how SQLite keeps it)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def utc_text(moment: datetime) -> str:
    """``moment`` as files and APIs write times: ISO 8601 in UTC, to the second, no offset."""
    return as_utc(moment).replace(tzinfo=None).isoformat(timespec="seconds")


class UTCDateTime(TypeDecorator):
    """A timestamp column that always reads back timezone-aware UTC, on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        """Aware UTC on the way in."""
        return None if value is None else as_utc(value)

    def process_result_value(self, value, dialect):
        """Aware UTC on the way out (SQLite returns naive values)."""
        return None if value is None else as_utc(value)


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


OPEN_STATES = (JobStatus.QUEUED, JobStatus.RUNNING)  # a job that has not ended
MAX_TAKEDOWN_REASON = 300


class Submission(Base):
    """One uploaded file (or a paper row) and what its author says about it."""

    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    # a checkpoint's files, whatever zip holds them (``CheckpointFiles.verify``)
    content_sha256: Mapped[str | None] = mapped_column(String(64), index=True, unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # predictions | checkpoint | paper
    user: Mapped[str] = mapped_column(String(100), index=True)
    meta: Mapped[dict] = mapped_column(JSON)  # EntryMetadata's fields
    path: Mapped[str] = mapped_column(String(500), default="")  # relative to MITOSIS_DATA_DIR
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
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
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # the maintainers took it off the board (withdrawn_at set too), and why; or put it back
    taken_down: Mapped[str | None] = mapped_column(String(MAX_TAKEDOWN_REASON))
    moderated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

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
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # an automatic re-scoring's target: one that failed is not queued again for the same one
    rescore_label_set: Mapped[str | None] = mapped_column(String(64))
    rescore_scorer: Mapped[str | None] = mapped_column(String(32))

    submission: Mapped[Submission] = relationship(back_populates="jobs")


class Account(Base):
    """One row per submitting user; its row lock serialises quota and release decisions."""

    __tablename__ = "accounts"

    user: Mapped[str] = mapped_column(String(100), primary_key=True)
    touched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # the best hidden mean BA ever released for this account: the Ladder's bar, only rises
    ladder_bar: Mapped[float | None] = mapped_column(Float)


class Secret(Base):
    """A value shared by every app and worker: the release key (never shown), the store's id.

    The store's id is on queue messages and in logs.
    """

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
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    scorer_version: Mapped[str | None] = mapped_column(String(20))  # None: older code


class Result(Base):
    """Every metric of one split for one job, with provenance.

    The full-precision metrics are private (kept for the maintainers, never shown);
    ``published`` is what the release policy (``evaluation.disclosure``) lets anyone read, and
    every reader shows only that. Re-scoring adds rows and marks the older ones not current.
    """

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
    # what anyone may read; None: withheld
    published: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))
    scorer_version: Mapped[str] = mapped_column(String(16), default="")
    label_set_hash: Mapped[str] = mapped_column(String(64), default="")
    versions: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    job: Mapped[Job | None] = relationship()


class Standing(Base):
    """One computation of the rank margin over the tested entries."""

    __tablename__ = "standings"

    id: Mapped[int] = mapped_column(primary_key=True)
    margin: Mapped[float] = mapped_column(Float)  # released: rounded up, see disclosure
    submission_ids: Mapped[list] = mapped_column(JSON)  # the tested entries, ascending
    result_ids: Mapped[list] = mapped_column(JSON)  # the results it was computed from
    n_resamples: Mapped[int] = mapped_column(Integer)
    label_set_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Lock(Base):
    """A named lock: its row is locked to serialise one kind of decision (``store.locks``)."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
