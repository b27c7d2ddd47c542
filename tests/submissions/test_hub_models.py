"""Checkpoints submitted by Hub model id, run up to the network boundary.

``HfApi.model_info`` and ``snapshot_download`` are the boundary: they are replaced by a local
folder standing in for the repo (its files, at one commit); everything on this side of them is
the real code, down to a real worker process scoring the fetched copy.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
from sqlalchemy import select

from evaluation.bundle import PublicBundle
from evaluation.run_checkpoint import as_predictions, predict_splits
from leaderboard.board import build_board
from leaderboard.export import board_rows
from models.errors import CheckpointError
from models.predictor import Predictor
from store.entry import EntryMetadata
from store.schema import Submission
from submissions.errors import QuotaExceeded
from submissions.hub_models import HubModelError
from tests.backend import Backend
from tests.models.conftest import tiny_checkpoint
from tests.submissions.test_end_to_end import expected_scores

TOKEN = "hf_SecretTokenThatMustNotBeStored0123"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class LocalHub:
    """One model repo as a local folder: what the Hub lists and what a snapshot fetches."""

    def __init__(self, folder: Path, monkeypatch, *, gated: bool = False) -> None:
        self.folder, self.gated = folder, gated
        self.commit = COMMIT
        self.listings: list[dict] = []
        self.downloads: list[dict] = []
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        monkeypatch.setattr("huggingface_hub.HfApi.model_info", self.model_info)
        monkeypatch.setattr("huggingface_hub.snapshot_download", self.snapshot_download)

    def model_info(self, repo_id, revision=None, files_metadata=False, token=None, **_):
        self.listings.append({"repo_id": repo_id, "revision": revision, "token": token})
        response = SimpleNamespace(headers={}, status_code=403, request=None)
        if repo_id != "lab/tiny-vit":
            raise RepositoryNotFoundError("404", response=response)
        if self.gated and not token:
            raise GatedRepoError("gated", response=response)
        siblings = [
            SimpleNamespace(rfilename=p.relative_to(self.folder).as_posix(), size=p.stat().st_size)
            for p in sorted(self.folder.rglob("*"))
            if p.is_file()
        ]
        return SimpleNamespace(sha=self.commit, siblings=siblings if files_metadata else None)

    def snapshot_download(self, repo_id, revision, allow_patterns, local_dir, token=None, **_):
        self.downloads.append(
            {"revision": revision, "allow_patterns": list(allow_patterns), "token": token}
        )
        for name in allow_patterns:
            shutil.copy(self.folder / name, Path(local_dir) / name)
        return str(local_dir)


def meta(name="hub vit"):
    return EntryMetadata(name, team="H", method_type="end-to-end")


@pytest.fixture
def repo(tmp_path):
    folder = tiny_checkpoint(tmp_path / "repo", "vit_tiny_test")
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# tiny vit\n")
    (folder / "pytorch_model.bin").write_bytes(b"a pickle that must never be fetched")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (folder / "runs").mkdir()
    (folder / "runs" / "config.json").write_text("{}")  # not at the root: not fetched
    return folder


@pytest.mark.slow  # a worker process
def test_a_hub_model_is_pinned_fetched_and_scored_like_an_upload(
    backend, repo, monkeypatch, caplog, tmp_path
):
    hub = LocalHub(repo, monkeypatch, gated=True)
    caplog.set_level(logging.DEBUG)
    backend.start_worker()
    view = backend.service.submit_hub_model("carol", "lab/tiny-vit", "main", meta(), token=TOKEN)
    assert view.status == "queued" and view.source == "verified"
    assert view.hub_model == f"lab/tiny-vit@{COMMIT}"
    # resolved once, then fetched at the commit, the format's files only
    assert hub.listings == [{"repo_id": "lab/tiny-vit", "revision": "main", "token": TOKEN}]
    assert hub.downloads == [
        {
            "revision": COMMIT,
            "allow_patterns": ["README.md", "config.json", "model.safetensors"],
            "token": TOKEN,
        }
    ]
    assert backend.wait("carol", view.job_id).status == "finished"

    with backend.sessions() as session:
        stored = session.scalar(select(Submission).where(Submission.user == "carol"))
        stored_zip = backend.settings.data_dir / stored.path
    with zipfile.ZipFile(stored_zip) as archive:
        assert sorted(archive.namelist()) == ["README.md", "config.json", "model.safetensors"]
    bundle = PublicBundle(backend.settings.public_dir)
    reference = tmp_path / "reference"
    reference.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(repo / name, reference / name)
    frame = predict_splits(Predictor(reference), bundle, ["amibr_test", "atnorm_br", "atnorm_md"])
    expected = expected_scores(backend, as_predictions(frame))
    entry = {e.model_name: e for e in build_board(backend.sessions)}["hub vit"]
    assert entry.hub_ref == f"lab/tiny-vit@{COMMIT}"
    assert entry.scores["amibr_test"]["ba"] == pytest.approx(
        expected["amibr_test"].balanced_accuracy.estimate
    )
    assert board_rows([entry])[0]["hub_model"] == f"lab/tiny-vit@{COMMIT}"

    # the token went to the Hub and nowhere else: no file, database or log holds it
    for path in backend.settings.data_dir.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in caplog.text


def test_one_submission_per_checkpoint_whatever_the_revision_name(backend, repo, monkeypatch):
    hub = LocalHub(repo, monkeypatch)
    first = backend.service.submit_hub_model("carol", "lab/tiny-vit", "", meta())
    with pytest.raises(QuotaExceeded, match="queued or running"):  # checked before fetching
        backend.service.submit_hub_model("carol", "lab/tiny-vit", COMMIT, meta())
    assert len(hub.downloads) == 1
    backend.service.cancel("carol", first.job_id)
    again = backend.service.submit_hub_model("carol", "lab/tiny-vit", COMMIT, meta("renamed"))
    assert again.job_id != first.job_id and again.hub_model == first.hub_model
    assert len(hub.downloads) == 1  # the commit was fetched before: its stored copy serves
    # no token given: anonymous calls, never the server's own HF_TOKEN (token=None would be)
    assert {c["token"] for c in hub.listings} == {False}
    assert hub.downloads[0]["token"] is False
    with backend.sessions() as session:  # the same files: the same submission, tried again
        assert len(session.scalars(select(Submission)).all()) == 1


def test_refused_before_anything_is_downloaded(tmp_path, repo, monkeypatch):
    backend = Backend(tmp_path / "b", MITOSIS_MAX_CHECKPOINT_MB="1", MITOSIS_HIDDEN_QUOTA="0")
    try:
        hub = LocalHub(repo, monkeypatch)
        with pytest.raises(QuotaExceeded):  # over quota: the Hub is not even asked
            backend.service.submit_hub_model("carol", "lab/tiny-vit", "main", meta())
        assert hub.listings == []
    finally:
        backend.close()
    backend = Backend(tmp_path / "c", MITOSIS_MAX_CHECKPOINT_MB="1")
    try:
        hub = LocalHub(repo, monkeypatch)
        (repo / "model.safetensors").write_bytes(b"\0" * (2 * 2**20))  # listed as 2 MB
        with pytest.raises(HubModelError, match="checkpoint files are 2 MB; the limit is 1 MB"):
            backend.service.submit_hub_model("carol", "lab/tiny-vit", "main", meta())
        (repo / "model.safetensors").unlink()
        with pytest.raises(HubModelError, match="pytorch_model.bin.*safetensors.torch.save_file"):
            backend.service.submit_hub_model("carol", "lab/tiny-vit", "main", meta())
        with pytest.raises(HubModelError, match="No model repo lab/other"):
            backend.service.submit_hub_model("carol", "lab/other", "main", meta())
        for bad_id in ("../etc", "a--b/c", "x/y.git"):
            with pytest.raises(HubModelError, match="is not a Hub model id"):
                backend.service.submit_hub_model("carol", bad_id, "main", meta())
        with pytest.raises(HubModelError, match="is not a revision"):
            backend.service.submit_hub_model("carol", "lab/tiny-vit", "main;rm", meta())
        with pytest.raises(HubModelError) as echoed:  # a megabyte of id, a direction override
            backend.service.submit_hub_model("carol", "\u202e" + "a" * 10**6, "main", meta())
        assert len(str(echoed.value)) < 200 and "\u202e" not in str(echoed.value)
        assert "'\\u202eaaa" in str(echoed.value) and "(1,000,001 characters)" in str(echoed.value)
        assert hub.downloads == []
        assert not list((backend.settings.data_dir / "uploads").rglob("*.zip"))
    finally:
        backend.close()


def test_a_gated_repo_without_a_token_says_so(backend, repo, monkeypatch):
    LocalHub(repo, monkeypatch, gated=True)
    with pytest.raises(HubModelError, match="is gated: accept its conditions"):
        backend.service.submit_hub_model("carol", "lab/tiny-vit", "main", meta())


def test_a_fetched_checkpoint_gets_an_upload_s_checks(backend, repo, monkeypatch):
    LocalHub(repo, monkeypatch)
    (repo / "config.json").write_text('{"architecture": "not_a_model"}')
    with pytest.raises(CheckpointError):
        backend.service.submit_hub_model("carol", "lab/tiny-vit", "main", meta())
    with backend.sessions() as session:
        assert session.scalar(select(Submission).where(Submission.user == "carol")) is None


def test_a_file_that_arrives_unlike_its_listing_is_refused(backend, repo, monkeypatch):
    hub = LocalHub(repo, monkeypatch)
    listed = hub.model_info

    def shrunk_after_listing(*args, **kwargs):
        info = listed(*args, **kwargs)
        (repo / "model.safetensors").write_bytes(b"short")
        return info

    monkeypatch.setattr("huggingface_hub.HfApi.model_info", staticmethod(shrunk_after_listing))
    with pytest.raises(HubModelError, match="model.safetensors did not arrive as listed"):
        backend.service.submit_hub_model("carol", "lab/tiny-vit", "main", meta())
    assert not list((backend.settings.data_dir / "uploads").rglob("*.zip"))


def test_a_transport_failure_is_a_clear_error(backend, repo, monkeypatch):
    LocalHub(repo, monkeypatch)

    def unreachable(*args, **kwargs):
        raise ConnectionAbortedError("the connection broke") from RuntimeError("transport")

    class TransportError(Exception):  # what httpx raises: neither OSError nor an HTTP error
        pass

    def transport(*args, **kwargs):
        raise TransportError("connect failed")

    monkeypatch.setattr("huggingface_hub.HfApi.model_info", staticmethod(transport))
    with pytest.raises(HubModelError, match="could not be reached for lab/tiny-vit"):
        backend.service.submit_hub_model("carol", "lab/tiny-vit", "main", meta())
    LocalHub(repo, monkeypatch)
    monkeypatch.setattr("huggingface_hub.snapshot_download", unreachable)
    with pytest.raises(HubModelError, match="Fetching lab/tiny-vit@0123456789 failed"):
        backend.service.submit_hub_model("carol", "lab/tiny-vit", "main", meta())


def test_offline_the_hub_path_says_so_at_intake(backend):
    with pytest.raises(HubModelError, match="offline \\(HF_HUB_OFFLINE is set\\)"):
        backend.service.submit_hub_model("carol", "lab/tiny-vit", "main", meta())
