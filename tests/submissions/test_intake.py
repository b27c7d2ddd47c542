from __future__ import annotations

import io
import json
import os
import pickle
import time
import zipfile
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from evaluation.errors import InvalidPredictionFile
from models.errors import CheckpointError, UnsafeCheckpoint
from store.entry import EntryMetadata
from store.errors import InvalidMetadata
from store.schema import Job, Submission, utcnow
from submissions import jobs
from submissions.errors import DuplicateSubmission, JobNotFound, NotCancellable, QuotaExceeded
from submissions.quota import compute_charged_since
from tests.backend import Backend, zip_dir
from tests.hostile import Payload, zip_of
from tests.models.conftest import tiny_checkpoint

META = EntryMetadata("my model", team="T", method_type="LoRA", training_data="AMi-Br + MIDOG++")


def nothing_stored(backend: Backend) -> bool:
    uploads = backend.settings.data_dir / "uploads"
    with backend.sessions() as session:
        rows = session.scalar(select(func.count(Submission.id)))
    return rows == 0 and not (uploads.exists() and any(uploads.rglob("*.*")))


def test_metadata_is_validated_and_midog_flagged():
    assert META.validated().uses_midog
    with pytest.raises(InvalidMetadata, match="Give the entry a model name"):
        EntryMetadata("  ").validated()
    with pytest.raises(InvalidMetadata, match="Method type must be one of"):
        EntryMetadata("m", method_type="magic").validated()
    with pytest.raises(InvalidMetadata, match="'Code link' contains markup or a script link"):
        EntryMetadata("m", code_url="javascript:alert(1)").validated()
    with pytest.raises(InvalidMetadata, match="'Code link' must be an http.s. link"):
        EntryMetadata("m", code_url="ftp://example.org/x").validated()
    with pytest.raises(InvalidMetadata, match="'Team' starts with '=', which a spreadsheet runs"):
        EntryMetadata("m", team='=HYPERLINK("http://x")').validated()
    with pytest.raises(InvalidMetadata, match="'Model name' contains markup"):
        EntryMetadata("<script>alert(1)</script>").validated()
    with pytest.raises(InvalidMetadata, match="'Description' contains a control"):
        EntryMetadata("m", description="evil\u202etxt.exe").validated()
    assert EntryMetadata("m", description="p < 0.05 on 3 - 2 folds\nsecond line").validated()
    with pytest.raises(InvalidMetadata, match="'Description' is 2001 characters"):
        EntryMetadata("m", description="x" * 2001).validated()


def test_invalid_prediction_file_stores_nothing(backend):
    with pytest.raises(InvalidPredictionFile, match="no row for"):
        backend.service.submit_predictions(
            "alice",
            b"image_id,prob_atypical\n" + backend.predictions(0).split(b"\n", 2)[1] + b"\n",
            META,
        )
    assert nothing_stored(backend)


@pytest.mark.slow  # starts a process / builds every rejected archive
def test_every_checkpoint_rejection(backend, tmp_path):
    good = {p.name: p.read_bytes() for p in tiny_checkpoint(tmp_path / "ok").iterdir()}
    marker = tmp_path / "created-by-pickle"
    config = json.loads(good["config.json"])
    cases = [
        (
            zip_of({**good, "model.pt": pickle.dumps(Payload(marker))}),
            UnsafeCheckpoint,
            "contains 'model.pt'.*safetensors.torch.save_file",
        ),
        (
            zip_of({"config.json": good["config.json"], "pytorch_model.bin": b"x"}),
            UnsafeCheckpoint,
            "pickle files",
        ),
        (zip_of({**good, "../escape/README.md": b"x"}), UnsafeCheckpoint, "points outside"),
        (zip_of(good, links=("README.md",)), UnsafeCheckpoint, "symbolic link"),
        (zip_of({**good, "weights.zip": b"PK"}), UnsafeCheckpoint, "nested archives"),
        (zip_of({**good, "train.py": b"print(1)"}), CheckpointError, "not part of the format"),
        (
            zip_of(
                {
                    "config.json": good["config.json"],
                    "model.safetensors": b"\x08" + b"\0" * 7 + b"garbage!",
                }
            ),
            CheckpointError,
            "invalid safetensors header",
        ),
        (
            zip_of(
                {
                    "config.json": json.dumps(
                        {**config, "mitosis": {**config["mitosis"], "model": "nonexistent_net"}}
                    ).encode(),
                    "model.safetensors": good["model.safetensors"],
                }
            ),
            CheckpointError,
            "names the model 'nonexistent_net'",
        ),
        (
            zip_of(
                {
                    "config.json": json.dumps(
                        {
                            **config,
                            "architecture": "resnet34",
                            "mitosis": {**config["mitosis"], "model": "resnet34"},
                        }
                    ).encode(),
                    "model.safetensors": good["model.safetensors"],
                }
            ),
            CheckpointError,
            "tensor",
        ),
        (b"not a zip", CheckpointError, "not a valid zip"),
    ]
    for data, error, message in cases:
        with pytest.raises(error, match=message):
            backend.service.submit_checkpoint("alice", data, META)
    assert not marker.exists()
    assert nothing_stored(backend)


def test_a_tiny_zip_claiming_a_huge_ensemble_is_refused_for_one_network_s_cost(backend, tmp_path):
    good = {p.name: p.read_bytes() for p in tiny_checkpoint(tmp_path / "ok").iterdir()}
    config = json.loads(good["config.json"])
    giant = {**config["mitosis"], "model": "vit_giant_patch14_dinov2", "ensemble_size": 16}
    giant_config = {**config, "architecture": "vit_giant_patch14_dinov2", "mitosis": giant}
    claim = zip_of({**good, "config.json": json.dumps(giant_config).encode()})
    started = time.process_time()
    with pytest.raises(
        CheckpointError, match=r"holds [0-9,]+ numbers; an ensemble of 16 vit_giant.* has"
    ):
        backend.service.submit_checkpoint("alice", claim, META)
    assert time.process_time() - started < 3.0  # building all 16 took 5.4-7.8 s of app CPU
    again = time.process_time()
    with pytest.raises(CheckpointError, match="numbers; an ensemble of 16"):
        backend.service.submit_checkpoint("alice", claim, META)
    assert time.process_time() - again < 0.5  # one network's count is remembered
    assert nothing_stored(backend)


def test_size_caps(tmp_path):
    backend = Backend(tmp_path, MITOSIS_MAX_CHECKPOINT_MB="1")
    big = zip_of(
        {"config.json": b"{}", "model.safetensors": b"\0" * (3 * 2**20)},
        compression=zipfile.ZIP_DEFLATED,
    )
    with pytest.raises(CheckpointError, match="unpacks to 3 MB; the limit is 1 MB"):
        backend.service.submit_checkpoint("alice", big, META)  # compresses to a few KB
    incompressible = zip_of({"config.json": os.urandom(2 * 2**20)})
    with pytest.raises(CheckpointError, match="The zip is 2 MB; the limit is 1 MB"):
        backend.service.submit_checkpoint("alice", incompressible, META)
    assert nothing_stored(backend)


def test_identical_resubmission_is_recognised(backend):
    data = backend.predictions(7)
    first = backend.service.submit_predictions("alice", data, META)
    again = backend.service.submit_predictions("alice", data, META)
    assert again.job_id == first.job_id and "already submitted" in again.notice
    renamed = backend.service.submit_predictions("alice", data, EntryMetadata("better name"))
    assert renamed.job_id == first.job_id and renamed.model_name == "better name"
    assert "description was updated" in renamed.notice
    assert "it is renamed from 'my model' to 'better name'." in renamed.notice
    described = EntryMetadata("better name", team="another team")
    same_name = backend.service.submit_predictions("alice", data, described)
    assert "description was updated" in same_name.notice and "renamed" not in same_name.notice
    with pytest.raises(DuplicateSubmission, match="already submitted by another user"):
        backend.service.submit_predictions("mallory", data, META)
    checked = backend.service.submit_predictions(  # a public-split check of the same file
        "alice", data, EntryMetadata("scratch name"), public_only=True
    )
    assert checked.job_id == first.job_id and "leaves the entry's description" in checked.notice
    assert backend.service.status("alice", first.job_id).model_name == "better name"
    with backend.sessions() as session:
        assert session.scalar(select(func.count(Job.id))) == 1
        assert session.scalar(select(Submission.meta))["team"] == "another team"


def test_another_zip_of_the_same_checkpoint_is_the_same_submission(backend, tmp_path):
    """Nested one folder down and deflated, the files are the ones already submitted."""
    folder = tiny_checkpoint(tmp_path / "mine")
    first = backend.service.submit_checkpoint("alice", zip_dir(folder), META)
    nested = io.BytesIO()
    with zipfile.ZipFile(nested, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"mine/{path.name}")
    again = backend.service.submit_checkpoint("alice", nested.getvalue(), META)
    assert again.job_id == first.job_id
    assert again.notice.startswith("These checkpoint files (in another zip) were already")
    with pytest.raises(DuplicateSubmission, match="already submitted by another user"):
        backend.service.submit_checkpoint("mallory", nested.getvalue(), META)
    with backend.sessions() as session:
        assert session.scalar(select(func.count(Job.id))) == 1


def test_quota_counts_only_jobs_that_did_not_fail(tmp_path):
    backend = Backend(tmp_path, MITOSIS_HIDDEN_QUOTA="2")
    first = backend.service.submit_predictions("alice", backend.predictions(1), META)
    backend.service.submit_predictions("alice", backend.predictions(2), META)
    with pytest.raises(
        QuotaExceeded,
        match="used your 2 hidden-split scorings of the last 24 "
        "hours; the next one is available at",
    ):
        backend.service.submit_predictions("alice", backend.predictions(3), META)
    backend.service.submit_predictions("bob", backend.predictions(3), META)  # per user
    token = jobs.claim(backend.sessions, first.job_id, "test", 60)
    jobs.fail(backend.sessions, first.job_id, token, "broken")
    assert backend.service.submit_predictions("alice", backend.predictions(4), META)


def test_jobs_are_private_and_transitions_are_guarded(backend):
    view = backend.service.submit_predictions("alice", backend.predictions(1), META)
    with pytest.raises(JobNotFound, match=f"no submission with job id {view.job_id}"):
        backend.service.status("bob", view.job_id)
    assert backend.service.my_submissions("bob") == []
    assert [v.job_id for v in backend.service.my_submissions("alice")] == [view.job_id]
    token = jobs.claim(backend.sessions, view.job_id, "w1", 60)
    assert token and jobs.claim(backend.sessions, view.job_id, "w2", 60) is None
    assert not jobs.fail(backend.sessions, view.job_id, "not-the-token", "x")
    with pytest.raises(NotCancellable, match=f"Job {view.job_id} is running; only a queued"):
        backend.service.cancel("alice", view.job_id)  # running: too late
    second = backend.service.submit_predictions("alice", backend.predictions(2), META)
    assert second.queue_position == 1  # the first one runs
    with pytest.raises(JobNotFound):
        backend.service.cancel("bob", second.job_id)
    assert backend.service.cancel("alice", second.job_id).status == "cancelled"
    assert backend.service.status("alice", second.job_id).status == "cancelled"


def test_reaper_requeues_expired_leases(backend):
    view = backend.service.submit_predictions("alice", backend.predictions(1), META)
    assert jobs.claim(backend.sessions, view.job_id, "dead", lease_s=-1)
    assert (view.job_id, "files") in jobs.reap(backend.sessions, stale_after_s=3600)
    assert backend.service.status("alice", view.job_id).status == "queued"


def test_an_attempt_ended_by_a_dead_worker_is_charged_to_the_compute_allowance(backend):
    """A killed or out-of-memory worker: its model-lane attempt costs what it ran, and a
    retried attempt adds to it (files-lane attempts cost nothing)."""
    model_job = backend.service.submit_predictions("alice", backend.predictions(31), META)
    file_job = backend.service.submit_predictions("alice", backend.predictions(32), META)
    now = utcnow()
    for job_id, lane in ((model_job.job_id, "models"), (file_job.job_id, "files")):
        assert jobs.claim(backend.sessions, job_id, "dead", lease_s=60)
        with backend.sessions.begin() as session:  # ran 100 s, then its heartbeats stopped
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    lane=lane,
                    started_at=now - timedelta(seconds=101),
                    lease_expires_at=now - timedelta(seconds=1),
                )
            )
    jobs.reap(backend.sessions, stale_after_s=3600)
    with backend.sessions() as session:
        assert session.get(Job, model_job.job_id).charged_s == pytest.approx(100, abs=0.01)
        assert session.get(Job, file_job.job_id).charged_s == 0
        charged = compute_charged_since(session, "alice", now - timedelta(hours=24))
    assert charged == pytest.approx(100, abs=0.01)
    token = jobs.claim(backend.sessions, model_job.job_id, "alive", lease_s=60)
    assert jobs.fail(backend.sessions, model_job.job_id, token, "out of memory", charged_s=5.0)
    with backend.sessions() as session:
        assert session.get(Job, model_job.job_id).charged_s == pytest.approx(105, abs=0.01)


def test_a_cancelled_file_submitted_again_takes_the_new_description(backend):
    data = backend.predictions(13)
    first = backend.service.submit_predictions("alice", data, META)
    backend.service.cancel("alice", first.job_id)
    again = backend.service.submit_predictions("alice", data, EntryMetadata("renamed"))
    assert again.job_id != first.job_id and again.model_name == "renamed"


def test_a_failed_or_cancelled_file_can_be_submitted_again(backend):
    data = backend.predictions(8)
    first = backend.service.submit_predictions("alice", data, META)
    assert backend.service.cancel("alice", first.job_id).status == "cancelled"
    second = backend.service.submit_predictions("alice", data, META)
    assert second.job_id != first.job_id and second.status == "queued"
    assert backend.service.submit_predictions("alice", data, META).job_id == second.job_id


def test_the_file_is_judged_before_the_form(backend):
    with pytest.raises(InvalidPredictionFile, match="header"):
        backend.service.submit_predictions("alice", b"not,a,csv\n1,2,3\n", EntryMetadata(""))


def test_the_allowance_says_what_is_left(backend):
    assert backend.service.allowance("carol").startswith(
        "Hidden-split scorings left in the last 24 hours: 3 of 3."
    )
    backend.service.submit_predictions("carol", backend.predictions(11), META)
    text = backend.service.allowance("carol")
    assert "2 of 3" in text and "The next one frees up at" in text
