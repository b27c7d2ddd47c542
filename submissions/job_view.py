"""What a submitter may see of one of their jobs: :class:`JobView`, built by :func:`job_view`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from store.clock import store_now
from store.schema import ALL_SPLITS, Job, JobStatus, utc_text
from submissions import jobs, worker_registry


@dataclass(frozen=True)
class JobView:
    """What a user may see of one of their jobs: its state, and what the Ladder released.

    Its scores are the leaderboard's (``submissions.receipts.job_report`` adds them).
    """

    job_id: int
    model_name: str
    kind: str
    source: str
    status: str
    reason: str
    lane: str
    queue_position: int
    ahead: list[dict]
    created_at: str
    disclosure: str
    progress: str = ""  # a running checkpoint job: crops done, and the time left
    notice: str = ""  # what this submission call did besides queueing (e.g. renamed)
    hub_model: str = ""  # owner/name@commit when submitted by Hub id
    scope: str = ALL_SPLITS  # or PUBLIC_ONLY: AMi-Br test only, no hidden scoring spent
    withdrawn: bool = False  # taken off the public board, by its submitter or the maintainers
    taken_down: str = ""  # the maintainers' reason, when they took it off

    def to_dict(self) -> dict:
        """Plain JSON-ready form."""
        return asdict(self)


def _waiting_note(session, job: Job) -> str:
    if job.status != JobStatus.QUEUED or job.lane != "gpu":
        return ""
    if worker_registry.gpu_seen(session):
        return "Estimated too slow for a CPU worker: it runs when a GPU worker is free."
    return (
        "Estimated too slow for a CPU worker, and no GPU worker has sent a heartbeat in the "
        "last hour: it waits until one joins (the maintainers add one with `python -m "
        "evaluation.worker` on a GPU host). Cancel it and submit a prediction file to be "
        "scored now."
    )


def _progress(job: Job, now: datetime) -> str:
    row = jobs.public_row(job, own=True, now=now)
    if job.status != JobStatus.RUNNING or not row["total"]:
        return ""
    eta = f", about {row['eta_s']} s left" if row["eta_s"] is not None else ""
    return f"{row['done']} of {row['total']} crops{eta}"


def job_view(session: Session, job: Job, *, notice: str = "") -> JobView:
    """What its owner may see of ``job`` now (``notice``: what this call did besides)."""
    now = store_now(session)
    return JobView(
        job_id=job.id,
        model_name=job.submission.entry.model_name,
        kind=job.submission.kind,
        source=str(job.submission.source),
        status=jobs.display_state(job),
        reason=job.reason or _waiting_note(session, job),
        lane=job.lane,
        queue_position=jobs.queue_position(session, job),
        ahead=jobs.ahead_of(session, job, now),
        created_at=utc_text(job.created_at),
        disclosure=job.disclosure or "",
        progress=_progress(job, now),
        notice=notice,
        hub_model=job.submission.hub_ref or "",
        scope=job.scope or ALL_SPLITS,
        withdrawn=job.submission.withdrawn_at is not None,
        taken_down=job.submission.taken_down or "",
    )
