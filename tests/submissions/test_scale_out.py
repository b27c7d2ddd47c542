"""Two apps and two workers on one store, as on several hosts: SQLite + SqliteHuey on one
machine, and PostgreSQL + Redis for a shared deployment (real servers, started by the tests).

Each worker has its own cache folder; all share the data folder, as hosts mounting it would.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import urllib.request

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from sqlalchemy import func, select

from settings import REPO_ROOT
from store.entry import EntryMetadata
from store.schema import Job, JobStatus, Result, WorkerRecord
from tests.backend import Backend, slow_checkpoint, wait_until, zip_dir
from tests.servers import free_port

pytestmark = pytest.mark.slow  # processes, servers or real training: `make test` only

META = ("scale", "team", "end-to-end", "", "", "AMi-Br train", False, "", "", "")
SUBMISSIONS = 24


class Deployment:
    """Two ``python app.py`` (no worker of their own) and two workers (``-m worker``, its alias)."""

    def __init__(self, backend: Backend, root) -> None:
        self.backend, self.root = backend, root
        self.processes: list[subprocess.Popen] = []
        self.urls = [self._app(k) for k in range(2)]
        self.workers = [self._worker(k) for k in range(2)]
        for url in self.urls:
            wait_until(lambda url=url: self._answering(url), 180, f"the app at {url}")
        wait_until(lambda: len(self.alive_workers()) == 2, 180, "two workers")

    def _spawn(self, args: list[str], name: str, **env) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO_ROOT,
            env={**self.backend.env, **env},
            stdout=open(self.root / f"{name}.log", "w"),  # noqa: SIM115 - open while it runs
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def _app(self, k: int) -> str:
        port = free_port()
        self._spawn(["app.py"], f"app{k}", GRADIO_SERVER_PORT=str(port), MITOSIS_START_WORKER="0")
        return f"http://127.0.0.1:{port}/"

    def _worker(self, k: int) -> subprocess.Popen:
        cache = self.root / f"cache{k}"
        module = "worker" if k == 0 else "evaluation.worker"  # the second through the alias
        return self._spawn(["-m", module], f"worker{k}", MITOSIS_CACHE_DIR=str(cache))

    @staticmethod
    def _answering(url: str) -> bool:
        try:
            urllib.request.urlopen(url + "config", timeout=2).read()
            return True
        except OSError:
            return False

    def alive_workers(self) -> dict[int, str]:
        pids = {w.pid for w in self.workers if w.poll() is None}
        with self.backend.sessions() as session:
            rows = session.execute(
                select(WorkerRecord.pid, WorkerRecord.name).where(WorkerRecord.state != "stopped")
            ).all()
        return {pid: name for pid, name in rows if pid in pids}

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.fixture(params=["sqlite", "postgresql+redis"])
def deployment(request, tmp_path):
    env = {"MITOSIS_HIDDEN_QUOTA": str(SUBMISSIONS), "MITOSIS_LEASE_S": "4"}
    if request.param == "postgresql+redis":
        postgres = request.getfixturevalue("postgres")
        redis_server = request.getfixturevalue("redis_server")
        database = f"scale_{tmp_path.name.lower()}"
        env["MITOSIS_DATABASE_URL"] = postgres.create_database(database)
        redis_db = abs(hash(database)) % 15 + 1
        env["MITOSIS_QUEUE_URL"] = redis_server.url(redis_db)
        import redis

        redis.Redis.from_url(env["MITOSIS_QUEUE_URL"]).flushdb()
    backend = Backend(tmp_path / "backend", **env)
    running = Deployment(backend, tmp_path)
    yield running
    running.close()


def test_two_apps_and_two_workers_on_one_store(deployment, tmp_path):
    backend = deployment.backend
    files = []
    for i in range(SUBMISSIONS + 6):
        path = tmp_path / f"p{i}.csv"
        path.write_bytes(backend.predictions(1000 + i))
        files.append(path)
    receipts, refusals, errors = [], [], []

    def submit(i: int) -> None:
        # a client (a session) each, as separate researchers are: one client's many events
        # share one event stream, which the server may close while another event is being
        # registered, and the client then cancels the ones it was waiting for
        try:
            client = Client(deployment.urls[i % 2], verbose=False)
            receipts.append(
                client.predict(handle_file(str(files[i])), *META, api_name="/submit_predictions")
            )
        except AppError as e:
            refusals.append(str(e))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(SUBMISSIONS + 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    # the quota (24 for this user) held across both apps: no 25th scoring, whatever the race
    assert len(receipts) == SUBMISSIONS and len(refusals) == 6
    assert all(f"used your {SUBMISSIONS} hidden-split scorings" in r for r in refusals)
    ids = {r["job_id"] for r in receipts}
    wait_until(lambda: finished(backend, ids) == SUBMISSIONS, 300, f"{SUBMISSIONS} scored files")
    with backend.sessions() as session:
        assert session.scalar(select(func.count(Job.id)).where(Job.id.in_(ids))) == SUBMISSIONS
        results = session.scalar(select(func.count(Result.id)).where(Result.job_id.in_(ids)))
        assert results == 3 * SUBMISSIONS
        served = set(session.scalars(select(Job.worker).where(Job.id.in_(ids))))
    print(f"\n{SUBMISSIONS} files through 2 apps: scored by {len(served)} worker(s)")

    # a worker killed mid-job: the other one finishes the job, exactly once
    view = backend.service.submit_checkpoint(
        "alice", zip_dir(slow_checkpoint(tmp_path / "slow", size=512)), EntryMetadata("slow")
    )
    wait_until(lambda: running_on(backend, view.job_id) is not None, 300, "the checkpoint job")
    victim = running_on(backend, view.job_id)
    names = deployment.alive_workers()
    next(w for w in deployment.workers if w.pid == victim).send_signal(signal.SIGKILL)
    done = backend.wait("alice", view.job_id, timeout=600)
    assert done.status == "finished"
    with backend.sessions() as session:
        job = session.get(Job, view.job_id)
        assert job.attempts == 2 and job.worker != names[victim]
        rows = session.scalar(select(func.count(Result.id)).where(Result.job_id == view.job_id))
        assert rows == 3


def finished(backend: Backend, ids: set[int]) -> int:
    with backend.sessions() as session:
        return session.scalar(
            select(func.count(Job.id)).where(Job.id.in_(ids), Job.status == JobStatus.FINISHED)
        )


def running_on(backend: Backend, job_id: int) -> int | None:
    """The pid of the worker whose heartbeat says it runs ``job_id``."""
    with backend.sessions() as session:
        return session.scalar(
            select(WorkerRecord.pid).where(
                WorkerRecord.job_id == job_id, WorkerRecord.state == "running"
            )
        )
