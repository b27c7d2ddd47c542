from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from settings import REPO_ROOT
from store.entry import EntryMetadata
from store.schema import Job, Submission
from submissions import jobs
from submissions.errors import QuotaExceeded
from tests.backend import Backend, zip_dir
from tests.models.conftest import tiny_checkpoint

pytestmark = pytest.mark.slow  # processes, servers or real training: `make test` only

PROCESSES, THREADS, QUOTA = 4, 3, 3


def race(backend: Backend, folder) -> list[dict]:
    """PROCESSES app processes with THREADS threads each submit for one user at once."""
    folder.mkdir()
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.submissions.race", str(folder), str(i), str(THREADS)],
            cwd=REPO_ROOT,
            env=backend.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    deadline = time.monotonic() + 300
    while len(list(folder.glob("ready-*"))) < PROCESSES:  # every process is set up
        dead = [c for c in children if c.poll() is not None]
        assert not dead, dead[0].stderr.read()[-2000:]
        assert time.monotonic() < deadline, "the racing processes did not get ready"
        time.sleep(0.05)
    (folder / "go").touch()
    outcomes = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-2000:]
        outcomes += json.loads(out.strip().splitlines()[-1])
    return outcomes


def check_quota_held(backend: Backend, outcomes: list[dict]) -> None:
    kinds = [o["outcome"] for o in outcomes]
    print(
        f"\n{PROCESSES} processes x {THREADS} threads, quota {QUOTA}: {kinds.count('accepted')} "
        f"accepted, {kinds.count('quota')} refused, {kinds.count('error')} errors"
    )
    assert kinds.count("error") == 0, outcomes
    assert kinds.count("accepted") == QUOTA and kinds.count("quota") == PROCESSES * THREADS - QUOTA
    with backend.sessions() as session:
        assert session.scalar(select(func.count(Job.id))) == QUOTA
        assert session.scalar(select(func.count(Submission.id))) == QUOTA


def test_the_quota_holds_across_processes_on_sqlite(tmp_path):
    backend = Backend(tmp_path / "b", MITOSIS_HIDDEN_QUOTA=str(QUOTA))
    check_quota_held(backend, race(backend, tmp_path / "race"))


def test_the_quota_holds_across_processes_on_postgresql(tmp_path, postgres):
    url = postgres.create_database(f"quota_{tmp_path.name.lower()}")
    backend = Backend(tmp_path / "b", MITOSIS_HIDDEN_QUOTA=str(QUOTA), MITOSIS_DATABASE_URL=url)
    assert backend.sessions.kw["bind"].dialect.name == "postgresql"
    check_quota_held(backend, race(backend, tmp_path / "race"))


def test_one_open_checkpoint_job_at_a_time(tmp_path):
    backend = Backend(tmp_path)
    first = zip_dir(tiny_checkpoint(tmp_path / "a", seed=1))
    second = zip_dir(tiny_checkpoint(tmp_path / "b", seed=2))
    view = backend.service.submit_checkpoint("alice", first, EntryMetadata("one"))
    with pytest.raises(QuotaExceeded, match="already have 1 checkpoint job.s. queued or running"):
        backend.service.submit_checkpoint("alice", second, EntryMetadata("two"))
    backend.service.submit_predictions("alice", backend.predictions(1), EntryMetadata("file"))
    backend.service.submit_checkpoint("bob", second, EntryMetadata("bob's"))  # per user
    token = jobs.claim(backend.sessions, view.job_id, "w", 60)
    jobs.fail(backend.sessions, view.job_id, token, "broken")
    assert backend.service.submit_checkpoint(
        "alice", zip_dir(tiny_checkpoint(tmp_path / "c", seed=3)), EntryMetadata("three")
    )


def test_checkpoint_compute_is_charged_against_an_allowance(tmp_path):
    backend = Backend(tmp_path, MITOSIS_COMPUTE_ALLOWANCE_S="100")
    view = backend.service.submit_checkpoint(
        "alice", zip_dir(tiny_checkpoint(tmp_path / "a", seed=1)), EntryMetadata("slow")
    )
    token = jobs.claim(backend.sessions, view.job_id, "w", 60)
    jobs.fail(backend.sessions, view.job_id, token, "time limit", charged_s=100.0)
    with pytest.raises(QuotaExceeded, match=r"used 100 s of evaluation time .* allowance is 100 s"):
        backend.service.submit_checkpoint(
            "alice", zip_dir(tiny_checkpoint(tmp_path / "b", seed=2)), EntryMetadata("again")
        )
    assert backend.service.submit_predictions(
        "alice", backend.predictions(1), EntryMetadata("a file is fine")
    )
