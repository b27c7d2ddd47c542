"""Evaluation workers as the database sees them: registration, heartbeat, health, speed.

Each worker writes its row every few seconds (``HEARTBEAT_S``); the Space reads the rows to show
who is alive, on which device, and what each one runs. A worker silent for longer than
``SILENT_AFTER_S`` is shown as silent; its job, if any, is re-queued by the reaper once its
lease expires. Workers record the speed they reach on checkpoints (GFLOP/s), which routes a
new checkpoint: to the CPU lane when the fastest CPU worker finishes it within the time limit,
else to the GPU lane (:func:`route`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pandas as pd
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from store.clock import store_now
from store.schema import WorkerRecord

HEARTBEAT_S = 2.0
SILENT_AFTER_S = 15.0
FORGET_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class WorkerHealth:
    """One worker as the Space shows it."""

    name: str
    device: str
    state: str
    job_id: int | None
    seconds_since_heartbeat: float
    alive: bool


def register(
    sessions: sessionmaker,
    name: str,
    host: str,
    pid: int,
    device: str,
    *,
    threads: int = 0,
    lanes: tuple[str, ...] = (),
    scorer_version: str | None = None,
) -> None:
    """Record a starting worker (a restarted one gets a fresh row: the pid differs)."""
    with sessions.begin() as session:
        now = store_now(session)  # heartbeats are judged by other hosts: the server's clock
        session.execute(delete(WorkerRecord).where(WorkerRecord.heartbeat_at < now - FORGET_AFTER))
        session.merge(
            WorkerRecord(
                name=name,
                host=host,
                pid=pid,
                device=device,
                threads=threads,
                lanes=",".join(lanes),
                state="idle",
                job_id=None,
                started_at=now,
                heartbeat_at=now,
                scorer_version=scorer_version,
            )
        )


def live_scorer_versions(sessions: sessionmaker) -> list[str | None]:
    """The scorer version of every live worker (None: code from before workers recorded it)."""
    with sessions() as session:
        return list(
            session.scalars(
                select(WorkerRecord.scorer_version).where(
                    WorkerRecord.state != "stopped",
                    WorkerRecord.heartbeat_at
                    >= store_now(session) - timedelta(seconds=SILENT_AFTER_S),
                )
            )
        )


def beat(sessions: sessionmaker, name: str, **state) -> None:
    """Refresh the heartbeat; ``state`` may set ``state`` and ``job_id`` too."""
    with sessions.begin() as session:
        session.execute(
            update(WorkerRecord)
            .where(WorkerRecord.name == name)
            .values(heartbeat_at=store_now(session), **state)
        )


def health(sessions: sessionmaker) -> list[WorkerHealth]:
    """Every worker heard from in the last hour, most recent heartbeat first."""
    with sessions() as session:
        now = store_now(session)
        rows = session.scalars(
            select(WorkerRecord)
            .where(WorkerRecord.heartbeat_at >= now - FORGET_AFTER)
            .order_by(WorkerRecord.heartbeat_at.desc())
        ).all()
    views = []
    for row in rows:
        age = (now - row.heartbeat_at).total_seconds()
        views.append(
            WorkerHealth(
                name=row.name,
                device=row.device,
                state=row.state,
                job_id=row.job_id,
                seconds_since_heartbeat=round(age, 1),
                alive=row.state != "stopped" and age <= SILENT_AFTER_S,
            )
        )
    return views


def health_table(sessions: sessionmaker) -> pd.DataFrame:
    """The workers as the Space's table shows them.

    Running workers, and silent ones (no heartbeat for SILENT_AFTER_S: crashed or cut off); a
    worker that stopped cleanly is not listed.
    """
    return pd.DataFrame(
        [
            {
                "worker": w.name,
                "device": w.device,
                "state": w.state,
                "job": "" if w.job_id is None else w.job_id,
                "last heartbeat": f"{w.seconds_since_heartbeat:.0f} s ago",
                "health": "alive" if w.alive else "silent",
            }
            for w in health(sessions)
            if w.state != "stopped"
        ],
        columns=["worker", "device", "state", "job", "last heartbeat", "health"],
    )


def record_speed(sessions: sessionmaker, name: str, gflops: float) -> None:
    """Fold a checkpoint job's measured speed into the worker's (a running average)."""
    with sessions.begin() as session:
        worker = session.get(WorkerRecord, name)
        if worker is not None:
            worker.gflops = gflops if worker.gflops is None else 0.5 * (worker.gflops + gflops)


def _recent(session: Session):
    return select(WorkerRecord).where(
        WorkerRecord.heartbeat_at >= store_now(session) - FORGET_AFTER,
        WorkerRecord.state != "stopped",
    )


def gpu_seen(session: Session) -> bool:
    """Whether a worker serving the GPU lane has sent a heartbeat in the last hour."""
    return any("gpu" in w.lanes.split(",") for w in session.scalars(_recent(session)))


def route(
    sessions: sessionmaker, total_flops: float, *, time_limit_s: float, default_gflops: float
) -> tuple[str, float]:
    """The lane of a checkpoint costing ``total_flops``, and its estimated seconds on a CPU.

    The estimate uses the fastest CPU worker's measured speed (``default_gflops`` until one has
    run a checkpoint); a job estimated past 80 % of the time limit goes to the GPU lane.
    """
    with sessions() as session:
        speeds = [
            w.gflops
            for w in session.scalars(_recent(session))
            if w.gflops and not w.device.startswith("cuda")
        ]
    estimated = total_flops / (max(speeds, default=default_gflops) * 1e9)
    return ("gpu" if estimated > 0.8 * time_limit_s else "models"), estimated
