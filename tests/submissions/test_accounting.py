"""Hidden scorings are counted once, in every order of events: cancels, failures, public
checks, re-scorings by the maintainers, and files submitted again (found by an audit of event
orders; each test failed before its fix)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import torch
from sqlalchemy import select

from models.predictor import Predictor
from store.clock import store_now
from store.entry import EntryMetadata
from store.schema import Job, JobStatus
from submissions import jobs
from submissions.errors import QuotaExceeded
from submissions.quota import hidden_jobs_since
from tests.backend import Backend, correct_a_label, zip_dir
from tests.models.conftest import nan_weights, tiny_checkpoint
from worker import Worker
from worker.supervisor import InteractiveSignal

META = EntryMetadata("m")


def counted(backend: Backend, user: str) -> int:
    with backend.sessions() as session:
        return len(hidden_jobs_since(session, user, store_now(session) - timedelta(days=1)))


def submission_of(backend: Backend, job_id: int) -> int:
    with backend.sessions() as session:
        return session.get(Job, job_id).submission_id


def queued(backend: Backend) -> list[Job]:
    with backend.sessions() as session:
        return list(session.scalars(select(Job).where(Job.status == JobStatus.QUEUED)))


def test_a_maintainer_s_rescore_leaves_cancelled_files_and_checks_unscored(tmp_path):
    """Cancelling is free: a re-scoring of cancelled files would be hidden scorings no quota
    counted, and a cancelled check would become one."""
    backend = Backend(tmp_path, MITOSIS_HIDDEN_QUOTA="3")
    worker = Worker(backend.settings)
    for seed in range(1, 5):
        view = backend.service.submit_predictions("mallory", backend.predictions(seed), META)
        backend.service.cancel("mallory", view.job_id)
    check = backend.service.submit_predictions(
        "mallory", backend.predictions(9), META, public_only=True
    )
    backend.service.cancel("mallory", check.job_id)
    scored = backend.service.submit_predictions("mallory", backend.predictions(10), META)
    worker.run_job(scored.job_id)
    assert worker.maintenance.rescore_all() == 1  # the scored file alone
    (again,) = queued(backend)
    assert again.submission_id == submission_of(backend, scored.job_id)
    assert not again.counts_toward_quota
    assert counted(backend, "mallory") == 1


def test_a_file_cancelled_or_failed_then_checked_can_still_be_scored(tmp_path):
    """A public check after a cancelled or failed scoring used to answer every later full
    submission of that file with the check's job: no hidden scoring, for good."""
    backend = Backend(tmp_path, MITOSIS_HIDDEN_QUOTA="3")
    worker = Worker(backend.settings)
    for seed, end in ((5, "cancelled"), (6, "failed")):
        data = backend.predictions(seed)
        full = backend.service.submit_predictions("alice", data, META)
        if end == "cancelled":
            backend.service.cancel("alice", full.job_id)
        else:  # a server fault: not the submitter's
            token = jobs.claim(backend.sessions, full.job_id, "w", lease_s=60)
            jobs.fail(backend.sessions, full.job_id, token, "internal error")
        check = backend.service.submit_predictions("alice", data, META, public_only=True)
        worker.run_job(check.job_id)
        again = backend.service.submit_predictions("alice", data, META)
        assert again.job_id not in (full.job_id, check.job_id) and again.scope == "all", end
        worker.run_job(again.job_id)
        assert backend.service.status("alice", again.job_id).status == "finished"
        shown = backend.service.submit_predictions("alice", data, META)  # scored: shown again
        assert shown.job_id == again.job_id and "already submitted" in shown.notice
    assert counted(backend, "alice") == 2


def test_a_scored_file_is_not_counted_again_after_its_re_scoring_failed(tmp_path):
    backend = Backend(tmp_path, MITOSIS_HIDDEN_QUOTA="2")
    worker = Worker(backend.settings)
    data = backend.predictions(7)
    scored = backend.service.submit_predictions("alice", data, META)
    worker.run_job(scored.job_id)
    correct_a_label(backend.settings.labels_dir)  # the maintainers correct a label
    assert worker.maintenance.rescore_stale() >= 1
    entry = submission_of(backend, scored.job_id)
    rescoring = next(j for j in queued(backend) if j.submission_id == entry)
    token = jobs.claim(backend.sessions, rescoring.id, "w", lease_s=60)
    jobs.fail(backend.sessions, rescoring.id, token, "internal error")
    again = backend.service.submit_predictions("alice", data, META)
    assert again.job_id == scored.job_id and "already submitted" in again.notice
    assert counted(backend, "alice") == 1  # one scoring of two left for a new model


def test_a_re_scoring_of_a_check_leaves_the_user_s_next_check_free(tmp_path):
    backend = Backend(tmp_path)
    worker = Worker(backend.settings)
    check = backend.service.submit_predictions(
        "carol", backend.predictions(8), META, public_only=True
    )
    worker.run_job(check.job_id)
    correct_a_label(backend.settings.labels_dir)
    assert worker.maintenance.rescore_stale() >= 1  # the check's re-scoring waits in the queue
    assert submission_of(backend, check.job_id) in {j.submission_id for j in queued(backend)}
    next_check = backend.service.submit_predictions(
        "carol", backend.predictions(11), META, public_only=True
    )
    assert next_check.status == "queued" and next_check.scope == "public"
    with pytest.raises(QuotaExceeded, match="already have a public-split check queued"):
        backend.service.submit_predictions(  # her own open check still counts
            "carol", backend.predictions(12), META, public_only=True
        )


def charge_of(backend: Backend, job_id: int) -> tuple[str, str, float]:
    with backend.sessions() as session:
        job = session.get(Job, job_id)
        return job.status, job.reason, job.charged_s


@pytest.mark.parametrize("fault", ["server", "memory", "memory loading", "nan"])
def test_a_checkpoint_s_compute_is_charged_for_its_own_faults_only(tmp_path, monkeypatch, fault):
    """The server's disk failing is not the submitter's fault; a model that cannot get its
    memory (the CPU allocator's real error) or gives NaN is, and says so."""
    backend = Backend(tmp_path)
    folder = tiny_checkpoint(tmp_path / "model", seed=1)
    if fault == "nan":  # it runs over all the crops, then cannot be scored
        nan_weights(folder)
    view = backend.service.submit_checkpoint("alice", zip_dir(folder), META)
    if fault == "server":  # where the worker keeps predictions is not a folder
        (backend.settings.data_dir / "predictions").write_text("not a folder")
    elif fault.startswith("memory"):  # the model asks the CPU allocator for a petabyte
        where = "predict_array" if fault == "memory" else "__init__"
        monkeypatch.setattr(Predictor, where, lambda *_, **__: torch.empty(2**50))
    Worker(backend.settings).run_job(view.job_id)
    status, reason, charged = charge_of(backend, view.job_id)
    assert status == "failed"
    expected = {
        "server": "internal error",
        "memory": "The checkpoint ran out of memory on the test crops; submit a smaller",
        "memory loading": "The checkpoint ran out of memory on the test crops; submit a",
        "nan": "The checkpoint gave 5 non-finite probabilities on amibr_test (NaN weights",
    }
    assert reason.startswith(expected[fault]) and bool(charged) == (fault != "server")


def test_a_checkpoint_is_not_charged_for_the_pauses_it_made_for_the_space_s_users(
    tmp_path, monkeypatch
):
    """While users are answered the worker waits between chunks of crops: their time."""
    backend = Backend(tmp_path)
    zipped = zip_dir(tiny_checkpoint(tmp_path / "model", seed=1))
    view = backend.service.submit_checkpoint("alice", zipped, META)
    monkeypatch.setitem(InteractiveSignal.wait_while_busy.__kwdefaults__, "at_most_s", 0.3)
    space, stop = InteractiveSignal(backend.settings.data_dir), threading.Event()

    def answering():  # the Space answers a user every 50 ms throughout
        while not stop.wait(0.05):
            space.touch()

    space.touch()  # a user is being answered as the job starts
    users = threading.Thread(target=answering)
    users.start()
    try:
        began = time.monotonic()
        Worker(backend.settings).run_job(view.job_id)
        wall = time.monotonic() - began
    finally:
        stop.set()
        users.join()
    status, _, charged = charge_of(backend, view.job_id)
    assert status == "finished" and 0 < charged <= wall - 0.6  # two pauses at least
