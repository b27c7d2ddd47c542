"""The queue engine: Huey, SQLite-backed on one machine, Redis-backed across hosts, in lanes.

Three lanes, one Huey queue each, so that no kind of work waits behind another:

- ``files``: prediction files (about 0.2 s of work each); every worker serves it;
- ``models``: checkpoints a CPU worker can finish within the time limit;
- ``gpu``: checkpoints estimated too slow for a CPU worker; only workers with a GPU serve it.

A message carries a job id and its store's id; the job table is the durable record (Huey's
SQLite storage deletes a message when a worker takes it, so a killed worker loses the message,
and the reaper re-enqueues jobs whose lease expired, into their own lane). A worker drops a
message of another store without running anything (see ``store.shared_values``); that
store's reaper sends it again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from huey import Huey, RedisHuey, SqliteHuey
from redis import ConnectionPool
from redis.exceptions import RedisError

from settings import Settings
from store.engine import shown_url
from submissions.errors import QueueUnavailable

LANES = ("files", "models", "gpu")
TASK_NAME = "mitosis.evaluate"
REDIS_CONNECT_TIMEOUT_S = 10  # a host that drops packets: an error, not a hang
_handler: Callable[[int, str | None], None] | None = None


def evaluate(job_id: int, store_id: str | None = None) -> None:
    """The queue's one task, registered by producer and worker alike.

    Huey names a task by its function's module, so both sides must register this function; the
    worker installs what it does. ``store_id`` is None in a message queued before messages
    named their store.
    """
    if _handler is None:
        raise RuntimeError("Evaluation jobs run in `python -m evaluation.worker`, not here.")
    _handler(job_id, store_id)


class EvaluationQueue:
    """Producer and consumer side of the evaluation lanes, for the store ``store_id``."""

    def __init__(
        self,
        settings: Settings,
        store_id: str | None,
        handler: Callable[[int, str | None], None] | None = None,
        lanes: Iterable[str] = LANES,
    ) -> None:
        global _handler
        if handler is not None:
            _handler = handler
        self.store_id = store_id
        self.url = settings.queue_url
        self.lanes = {lane: make_huey(self.url, lane) for lane in lanes}
        self.tasks = {
            lane: huey.task(name=TASK_NAME)(evaluate) for lane, huey in self.lanes.items()
        }

    def enqueue(self, job_id: int, lane: str) -> None:
        """Ask a worker serving ``lane`` to run ``job_id``."""
        self.tasks[lane](job_id, self.store_id)

    def check(self) -> None:
        """Raise :class:`QueueUnavailable` when the queue's server does not answer (Redis).

        Every lane is on the same server, so one answer is enough.
        """
        huey = next(iter(self.lanes.values()))
        if not isinstance(huey, RedisHuey):
            return
        try:
            huey.storage.conn.ping()
        except RedisError as e:
            reason = str(e).strip().rstrip(".")
            raise QueueUnavailable(
                f"Cannot reach the queue at {shown_url(self.url)}: {reason}. Check that Redis is "
                "running there and has the URL's database number, and MITOSIS_QUEUE_URL."
            ) from e

    def pending(self, lane: str | None = None) -> int:
        """Messages waiting in ``lane`` (every lane when None)."""
        lanes = [lane] if lane else list(self.lanes)
        return sum(self.lanes[name].pending_count() for name in lanes)


def make_huey(url: str, lane: str) -> Huey:
    """SqliteHuey for ``sqlite:///FILE``, RedisHuey for ``redis://``; one named queue a lane."""
    if lane not in LANES:
        raise ValueError(f"Unknown lane {lane!r}; the lanes are {', '.join(LANES)}.")
    name = f"mitosis-{lane}"
    if url.startswith("redis://") or url.startswith("rediss://"):
        pool = ConnectionPool.from_url(url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S)
        return RedisHuey(name, connection_pool=pool)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(name, filename=str(path), results=False)
    raise ValueError(
        f"MITOSIS_QUEUE_URL must be sqlite:///FILE, redis://HOST or rediss://HOST; found {url!r}."
    )
