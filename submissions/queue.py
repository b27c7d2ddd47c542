"""The queue engine: Huey, SQLite-backed on one machine, Redis-backed across GPU hosts.

A message carries only a job id; the job table is the durable record (Huey's SQLite storage
deletes a message when a worker takes it, so a killed worker loses the message, and the reaper
re-enqueues jobs whose lease expired).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from huey import Huey, RedisHuey, SqliteHuey

from settings import Settings

TASK_NAME = "mitosis.evaluate"
_handler: Callable[[int], None] | None = None


def evaluate(job_id: int) -> None:
    """The queue's one task, registered by producer and worker alike.

    Huey names a task by its function's module, so both sides must register this function; the
    worker installs what it does.
    """
    if _handler is None:
        raise RuntimeError("Evaluation jobs run in `python -m evaluation.worker`, not here.")
    _handler(job_id)


class EvaluationQueue:
    """Producer and consumer side of the evaluation queue."""

    def __init__(self, settings: Settings, handler: Callable[[int], None] | None = None):
        global _handler
        if handler is not None:
            _handler = handler
        self.huey = make_huey(settings.queue_url)
        self.task = self.huey.task(name=TASK_NAME)(evaluate)

    def enqueue(self, job_id: int) -> None:
        """Ask a worker to run ``job_id``."""
        self.task(job_id)

    def pending(self) -> int:
        """Messages waiting in the queue."""
        return self.huey.pending_count()


def make_huey(url: str) -> Huey:
    """SqliteHuey for ``sqlite:///FILE``, RedisHuey for ``redis://``."""
    if url.startswith("redis://") or url.startswith("rediss://"):
        return RedisHuey("mitosis", url=url)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey("mitosis", filename=str(path), results=False)
    raise ValueError(f"MITOSIS_QUEUE_URL must be sqlite:///FILE or redis://HOST; found {url!r}.")
