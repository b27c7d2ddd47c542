"""The worker's own decisions, in this process: re-scoring, the reaper, a late writer."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
import zipfile
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select, update

from evaluation import bundle
from evaluation.scoring import SCORER_VERSION
from store.entry import EntryMetadata
from store.schema import (
    SHIPPED_MODEL_USER,
    Job,
    JobStatus,
    Result,
    Submission,
    WorkerRecord,
    utcnow,
)
from store.shared_values import store_id
from submissions import jobs, quota, worker_registry
from submissions.errors import DuplicateSubmission
from tests.backend import Backend, correct_a_label, zip_dir
from tests.models.conftest import tiny_checkpoint
from worker import Worker
from worker.__main__ import main as worker_main
from worker.__main__ import plain_table
from worker.reasons import public_reason
from worker.runner import LABEL_STORE_REFUSED

META = EntryMetadata("m")


def queued(backend: Backend) -> list[int]:
    with backend.sessions() as session:
        return list(session.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED)))


def test_a_changed_label_set_is_rescored_automatically(tmp_path):
    backend = Backend(tmp_path)
    worker = Worker(backend.settings)
    worker.maintenance.seed()
    view = backend.service.submit_predictions("alice", backend.predictions(1), META)
    for job_id in queued(backend):
        worker.run_job(job_id)
    assert worker.maintenance.rescore_stale() == 0  # every result is on the current labels
    new_hash = correct_a_label(backend.settings.labels_dir)  # the maintainers fix a label
    assert worker.maintenance.rescore_stale() == 2  # the file and the shipped model
    assert worker.maintenance.rescore_stale() == 0  # already queued: not twice
    for job_id in queued(backend):
        worker.run_job(job_id)
    with backend.sessions() as session:
        hashes = set(session.scalars(select(Result.label_set_hash).where(Result.current.is_(True))))
        old = session.scalar(
            select(func.count(Result.id)).where(
                Result.submission_id == session.get(Job, view.job_id).submission_id,
                Result.current.is_(False),
            )
        )
    assert hashes == {new_hash, ""} and old == 3  # "": the paper's rows; history kept
    assert worker.maintenance.rescore_stale() == 0


def damage_the_stored_file(backend: Backend, job_id: int) -> None:
    """A stored prediction file its re-scoring cannot read (a disk fault, a lost upload)."""
    with backend.sessions() as session:
        path = backend.settings.data_dir / session.get(Job, job_id).submission.path
    path.write_text("image_id,prob_atypical\nno-such-crop,0.5\n")


def rescoring_fails(backend: Backend, worker: Worker) -> None:
    (job_id,) = queued(backend)
    worker.run_job(job_id)
    assert backend.service.status("alice", job_id).status == "failed"


def test_a_failed_rescoring_is_queued_once_per_label_set_however_many_workers_look(
    tmp_path, caplog
):
    """Both workers see the label change; the first one's re-scoring fails: the second does
    not queue it again (it did, once per worker and per restart), a later label set does, and
    so does a maintainer's --rescore."""
    caplog.set_level(logging.WARNING, logger="worker")
    backend = Backend(tmp_path)
    first, second = Worker(backend.settings), Worker(backend.settings)
    view = backend.service.submit_predictions("alice", backend.predictions(1), META)
    first.run_job(view.job_id)
    damage_the_stored_file(backend, view.job_id)
    correct_a_label(backend.settings.labels_dir)
    assert first.maintenance.rescore_stale() == 1
    rescoring_fails(backend, first)
    assert second.maintenance.rescore_stale() == 0 and first.maintenance.rescore_stale() == 0
    assert "1 submission(s) failed their re-scoring for these labels" in caplog.text
    correct_a_label(backend.settings.labels_dir, 1)  # another label set: tried once for it too
    assert second.maintenance.rescore_stale() == 1
    rescoring_fails(backend, second)
    assert first.maintenance.rescore_stale() == 0
    assert first.maintenance.rescore_all() == 1  # the maintainer asks again


def test_a_cancelled_rescoring_or_labels_changed_back_are_rescored_again(tmp_path):
    """Only a failure since the current results holds a target back: a re-scoring its owner
    cancelled is queued again, and labels A -> B -> A re-score A's old finished target."""
    backend = Backend(tmp_path)
    worker = Worker(backend.settings)
    view = backend.service.submit_predictions("alice", backend.predictions(1), META)
    worker.run_job(view.job_id)
    correct_a_label(backend.settings.labels_dir)  # labels A
    assert worker.maintenance.rescore_stale() == 1
    (rescoring,) = queued(backend)
    backend.service.cancel("alice", rescoring)
    assert worker.maintenance.rescore_stale() == 1  # cancelled is not failed
    worker.run_job(*queued(backend))
    correct_a_label(backend.settings.labels_dir, 1)  # labels B
    assert worker.maintenance.rescore_stale() == 1
    worker.run_job(*queued(backend))
    correct_a_label(backend.settings.labels_dir, 1)  # A again: its finished job is history
    assert worker.maintenance.rescore_stale() == 1


def test_a_failed_rescoring_for_a_newer_scorer_is_not_queued_every_30_s(tmp_path):
    backend = Backend(tmp_path)
    worker = Worker(backend.settings)
    view = backend.service.submit_predictions("alice", backend.predictions(1), META)
    worker.run_job(view.job_id)
    with backend.sessions.begin() as session:
        session.execute(update(Result).values(scorer_version="0.9"))
    damage_the_stored_file(backend, view.job_id)
    assert worker.maintenance.rescore_older_scorers() == 1
    rescoring_fails(backend, worker)
    assert worker.maintenance.rescore_older_scorers() == 0
    assert worker.maintenance.rescore_stale() == 0


def nested_zip(folder: Path, inside: str) -> bytes:
    """The checkpoint's files one folder down: another upload (other bytes) of the same files."""
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:  # stored: deflating 45 MB takes seconds
        for path in sorted(folder.iterdir()):
            archive.write(path, f"{inside}/{path.name}")
    return data.getvalue()


def test_checkpoints_stored_before_content_digests_get_them_at_the_next_start(tmp_path):
    """Rows written before migration 0005 had none, so a re-zip of one was a new submission
    (another user's copy too); of two such copies stored then, the older gets the digest."""
    backend = Backend(tmp_path)
    folder = tiny_checkpoint(tmp_path / "mine", seed=5)  # not the shipped stand-in's weights

    def forget_digests() -> None:
        with backend.sessions.begin() as session:
            session.execute(update(Submission).values(content_sha256=None))

    worker = Worker(backend.settings)
    worker.maintenance.seed()  # the shipped model's row
    first = backend.service.submit_checkpoint("alice", zip_dir(folder), META)
    forget_digests()
    backend.service.submit_checkpoint("bob", nested_zip(folder, "bobs"), META)
    forget_digests()
    assert worker.maintenance.record_content_digests() == 2  # a worker's next start
    with backend.sessions() as session:
        rows = session.execute(select(Submission.user, Submission.content_sha256)).all()
    digests = {user: digest for user, digest in rows}
    assert digests["alice"] and digests["bob"] is None
    assert digests[SHIPPED_MODEL_USER]  # the shipped model's row is one of them
    again = backend.service.submit_checkpoint("alice", nested_zip(folder, "again"), META)
    assert again.job_id == first.job_id
    with pytest.raises(DuplicateSubmission, match="already submitted by another user"):
        backend.service.submit_checkpoint("mallory", nested_zip(folder, "mallory"), META)
    assert worker.maintenance.record_content_digests() == 0  # bob's copy stays as it was


def test_no_label_store_or_no_checkpoint_leaves_the_shipped_model_unqueued(tmp_path, caplog):
    """Its job would only fail, and the board would say the shipped model failed."""
    backend = Backend(tmp_path)
    caplog.set_level(logging.WARNING, logger="worker.maintenance")
    no_labels = dataclasses.replace(backend.settings, labels_dir=tmp_path / "nowhere")
    assert Worker(no_labels).maintenance.seed() is None
    assert "no private label store at" in caplog.text
    no_model = dataclasses.replace(backend.settings, default_checkpoint=tmp_path / "nomodel")
    assert Worker(no_model).maintenance.seed() is None
    assert "no checkpoint at" in caplog.text and queued(backend) == []


def test_stored_predictions_missing_a_crop_of_the_release_run_the_checkpoint_again(
    tmp_path, caplog, monkeypatch
):
    """A rebuilt release with a crop the stored predictions lack: re-run, not 'lack 1 crop'."""
    monkeypatch.setattr("worker.runner.PROGRESS_LOG_S", 0.0)
    caplog.set_level(logging.INFO, logger="worker")
    backend = Backend(tmp_path)
    worker = Worker(backend.settings)
    worker.maintenance.seed()
    (job_id,) = queued(backend)
    worker.run_job(job_id)
    (stored,) = (backend.settings.data_dir / "predictions").glob("*.csv")
    full = stored.read_text()
    stored.write_text("".join(full.splitlines(keepends=True)[:-1]))
    assert worker.maintenance.rescore_all() == 1
    (again,) = queued(backend)
    worker.run_job(again)
    with backend.sessions() as session:
        assert session.get(Job, again).status == JobStatus.FINISHED
    assert stored.read_text() == full
    assert re.search(rf"job {again}: \d+ of \d+ crops", caplog.text)  # the log follows it run


def test_an_older_scorer_s_results_are_rescored_once_no_older_worker_is_alive(tmp_path):
    backend = Backend(tmp_path)
    worker = Worker(backend.settings)
    worker.maintenance.seed()
    backend.service.submit_predictions("alice", backend.predictions(1), META)
    for job_id in queued(backend):
        worker.run_job(job_id)
    maintenance = worker.maintenance

    def scored_by(version: str) -> None:
        with backend.sessions.begin() as session:
            session.execute(
                update(Result).where(Result.job_id.is_not(None)).values(scorer_version=version)
            )

    def old_worker(version: str | None) -> None:
        worker_registry.register(backend.sessions, "old:1", "old", 1, "cpu", scorer_version=version)

    assert re.fullmatch(r"\d+(\.\d+)*", SCORER_VERSION)  # what older_scorer compares
    assert SCORER_VERSION == "1.0"  # the cases below are written around it
    for newer_or_equal in ("1.1", "1.0.0", "1"):  # a newer worker's results: left alone
        scored_by(newer_or_equal)
        assert maintenance.rescore_stale() == 0 and maintenance.rescore_older_scorers() == 0
    scored_by("0.9")
    for alive in (None, "0.9"):  # a worker of code too old to say, or of the old scorer
        old_worker(alive)  # would score the new jobs the old way: wait for it to go
        assert maintenance.rescore_stale() == 0 and maintenance.rescore_older_scorers() == 0
    worker_registry.beat(backend.sessions, "old:1", state="stopped")
    assert maintenance.rescore_older_scorers() == 2  # the file and the shipped model, once
    assert maintenance.rescore_older_scorers() == 0 and maintenance.rescore_stale() == 0
    for job_id in queued(backend):
        worker.run_job(job_id)
    with backend.sessions() as session:
        versions = session.scalars(
            select(Result.scorer_version).where(Result.current.is_(True), Result.job_id > 0)
        )
        assert set(versions) == {SCORER_VERSION}


def test_a_label_edited_in_place_fails_jobs_without_counting_and_tells_the_log(tmp_path, caplog):
    backend = Backend(tmp_path)
    store = [backend.settings.labels_dir / name for name in bundle.LABEL_STORE_FILES]
    as_built = [path.read_bytes() for path in store]
    labels = pd.read_csv(store[0], dtype=str)
    labels.loc[0, "label"] = "normal" if labels.loc[0, "label"] == "atypical" else "atypical"
    labels.to_csv(store[0], index=False)  # edited, its release.json left as it was
    predictions = backend.predictions(1)
    view = backend.service.submit_predictions("alice", predictions, META)
    with caplog.at_level(logging.ERROR, logger="worker"):
        Worker(backend.settings).run_job(view.job_id)
    failed = backend.service.status("alice", view.job_id)
    assert (failed.status, failed.reason) == ("failed", LABEL_STORE_REFUSED)
    assert "that its release.json states: labels.csv changed after the release" in caplog.text
    with backend.sessions() as session:
        assert quota.hidden_jobs_since(session, "alice", utcnow() - timedelta(days=1)) == []
    for path, data in zip(store, as_built, strict=True):
        path.write_bytes(data)  # the maintainers restore it; the same file is queued again
    again = backend.service.submit_predictions("alice", predictions, META)
    Worker(backend.settings).run_job(again.job_id)
    assert backend.service.status("alice", again.job_id).status == "finished"


def test_the_reaper_requeues_lost_messages_and_gives_up_after_three_attempts(tmp_path):
    backend = Backend(tmp_path)
    lost = backend.service.submit_predictions("alice", backend.predictions(1), META)
    backend.service.queue.lanes["files"].flush()  # the message is gone; the job is queued
    assert backend.service.queue.pending() == 0
    assert jobs.reap(backend.sessions, stale_after_s=3600) == []  # not stale yet
    assert jobs.requeue_lost(backend.sessions, backend.service.queue, stale_after_s=0) == [
        lost.job_id
    ]
    assert backend.service.queue.pending() == 1
    crashing = backend.service.submit_predictions("bob", backend.predictions(2), META)
    for attempt in range(3):
        assert jobs.claim(backend.sessions, crashing.job_id, "w", lease_s=-1)
        requeued = jobs.reap(backend.sessions, stale_lanes=())
        assert ((crashing.job_id, "files") in requeued) == (attempt < 2)
    failed = backend.service.status("bob", crashing.job_id)
    assert (
        failed.status == "failed"
        and failed.reason == "the worker stopped 3 times while running this job"
    )


def test_a_worker_whose_lease_expired_cannot_write(tmp_path):
    backend = Backend(tmp_path)
    view = backend.service.submit_predictions("alice", backend.predictions(1), META)
    late = jobs.claim(backend.sessions, view.job_id, "slow worker", lease_s=-1)
    assert jobs.reap(backend.sessions, stale_lanes=()) == [(view.job_id, "files")]
    current = jobs.claim(backend.sessions, view.job_id, "other worker", lease_s=60)
    wrote = []
    assert not jobs.finish(backend.sessions, view.job_id, late, lambda s, j: wrote.append(j))
    assert not jobs.fail(backend.sessions, view.job_id, late, "too late")
    assert not jobs.heartbeat(backend.sessions, view.job_id, late, 60)
    assert wrote == [] and backend.service.status("alice", view.job_id).status == "running"
    assert jobs.finish(backend.sessions, view.job_id, current, lambda s, j: wrote.append(j.id))
    assert wrote == [view.job_id]


def test_a_failure_reason_names_no_server_path(tmp_path):
    backend = Backend(tmp_path)
    checkpoint = tiny_checkpoint(tmp_path / "ckpt")
    view = backend.service.submit_checkpoint("alice", zip_dir(checkpoint), META)
    with backend.sessions() as session:
        stored = backend.settings.data_dir / session.get(Job, view.job_id).submission.path
    stored.unlink()  # the upload is gone from the server's folder before a worker runs it
    Worker(backend.settings).run_job(view.job_id)
    failed = backend.service.status("alice", view.job_id)
    assert failed.status == "failed" and failed.reason.startswith("No checkpoint at ")
    assert str(tmp_path) not in failed.reason and "/" not in failed.reason


def test_a_lane_typo_or_the_gpu_lane_on_a_cpu_host_gets_a_sentence(tmp_path, monkeypatch, capsys):
    """Through ``python -m worker``'s entry point, in this process (argparse's exit 2)."""
    monkeypatch.setenv("MITOSIS_DATA_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as stopped:
        worker_main(["--lanes", "files,modles"])
    assert stopped.value.code == 2
    assert "--lanes names 'modles', which is not a lane; the lanes are files, models, gpu" in (
        capsys.readouterr().err
    )
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # a CPU-only host
    with pytest.raises(SystemExit):
        worker_main(["--lanes", "files,gpu"])
    assert "--lanes gpu needs a CUDA GPU, and this host has none" in capsys.readouterr().err


def test_public_reasons_keep_names_links_and_hub_ids_but_no_server_folder():
    roots = (Path("/srv/My Space/data"),)
    cases = {
        "No checkpoint at /srv/My Space/data/uploads/ab/c.zip.": "No checkpoint at c.zip.",
        "Cannot read '/etc/mitosis/x.png': truncated": "Cannot read 'x.png': truncated",
        "See https://hf.co/lab/model/tree/main; lab/model@abc at 1/2 speed": (
            "See https://hf.co/lab/model/tree/main; lab/model@abc at 1/2 speed"
        ),
    }
    assert {m: public_reason(Exception(m), roots) for m in cases} == cases


def test_the_worker_table_lists_running_and_silent_workers_not_stopped_ones(tmp_path):
    backend = Backend(tmp_path)
    for name in ("w-running", "w-stopped", "w-silent"):
        worker_registry.register(backend.sessions, name, "host", os.getpid(), "cpu")
    worker_registry.beat(backend.sessions, "w-stopped", state="stopped")
    with backend.sessions.begin() as session:  # its last heartbeat, long ago: it crashed
        session.get(WorkerRecord, "w-silent").heartbeat_at -= timedelta(minutes=5)
    table = worker_registry.health_table(backend.sessions).set_index("worker")
    assert list(table.index) == ["w-running", "w-silent"]
    assert list(table["health"]) == ["alive", "silent"]


def test_the_status_command_shows_a_maintainer_every_job_and_worker(tmp_path, monkeypatch, capsys):
    backend = Backend(tmp_path)
    view = backend.service.submit_predictions("alice", backend.predictions(1), META)
    for name, value in backend.env.items():
        monkeypatch.setenv(name, value)
    assert worker_main(["--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "queue: 1 job(s) queued or running"
    assert lines[1].split()[:3] == ["job", "entry", "user"]
    with backend.sessions() as session:
        entry = session.get(Job, view.job_id).submission_id
    assert lines[2].split()[:3] == [str(view.job_id), str(entry), "alice"]
    for header in ("user", "state"):  # text starts under its header
        start = lines[1].index(header)
        assert lines[2][start - 1 : start + 1].startswith(" ") and lines[2][start] != " "
    end = lines[1].index("entry") + len("entry")  # numbers end under it
    assert lines[2][:end].endswith(f" {entry}")
    assert lines[3] == "workers: 0"


def test_status_tables_align_numbers_right_and_text_left_whatever_pandas_made_of_them():
    frame = pd.DataFrame({"worker": ["a:1", "bb:22"], "job": ["", 3], "entry": [5, None]})
    assert plain_table(frame).splitlines() == [  # an idle worker's "" and an id upcast by None
        "worker  job  entry",
        "a:1              5",
        "bb:22     3",
    ]


def test_a_message_of_another_store_is_left_alone_and_said_once_a_minute(tmp_path, caplog):
    """A worker whose MITOSIS_DATABASE_URL is not the app's, on the app's Redis: the message
    names the app's store, so the worker neither claims its own job of that number nor stays
    silent; a message from before messages named their store still runs."""
    caplog.set_level(logging.ERROR, logger="worker")
    app_side, other = Backend(tmp_path / "app"), Backend(tmp_path / "other")
    worker = Worker(other.settings)
    app_store = app_side.service.queue.store_id
    assert app_store == store_id(app_side.sessions) != worker.queue.store_id
    first = other.service.submit_predictions("alice", other.predictions(1), META).job_id
    second = other.service.submit_predictions("alice", other.predictions(2), META).job_id
    sent = app_side.service.submit_predictions("bob", app_side.predictions(3), META).job_id
    assert [m.args for m in app_side.service.queue.lanes["files"].pending()] == [
        (sent, app_store)  # the message names its store
    ]
    for _ in range(2):
        worker.run_job(first, app_store)  # the app's job with the number of one of ours
    assert queued(other) == [first, second]  # ours are untouched
    (said,) = [r.getMessage() for r in caplog.records]  # twice in a minute: said once
    assert f"holds a message for job {first} of store {app_store}, and this worker's" in said
    assert "dropped, not run. A host on this queue (this one or the sender) has another" in said
    worker.run_job(first, worker.queue.store_id)
    worker.run_job(second)  # a message without a store id, as queued before they had one
    assert queued(other) == []
