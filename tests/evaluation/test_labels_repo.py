"""The label store from a private Hub dataset: fetched once, verified, never trusted blindly.

The Hub's snapshot download is the network boundary; a local copy of a built label store
stands in for the private dataset it would fetch.
"""

from __future__ import annotations

import logging
import shutil

import pandas as pd
import pytest

from evaluation import bundle, release
from evaluation.bundle import LabelStore, fetch_label_store
from evaluation.errors import LabelsUnavailable
from settings import Settings
from tests.conftest import TINY_COUNTS
from worker.label_store import fetch_labels


@pytest.fixture
def built(tiny_source, tmp_path):
    summary = release.build_release(
        tiny_source, tmp_path / "public", tmp_path / "private", expected=TINY_COUNTS
    )
    hub_copy = tmp_path / "hub-dataset"  # what the private dataset holds
    shutil.copytree(tmp_path / "private", hub_copy)
    manifest = pd.read_csv(tmp_path / "public" / bundle.MANIFEST_CSV, dtype=str)
    return tmp_path, hub_copy, manifest, summary["label_set_hash"]


def from_folder(hub_copy, calls):
    def download(repo_id, token, folder):
        calls.append((repo_id, token))
        for name in bundle.LABEL_STORE_FILES:
            shutil.copy(hub_copy / name, folder / name)

    return download


def test_fetched_once_verified_and_private(built):
    root, hub_copy, manifest, label_hash = built
    labels_dir, calls = root / "deployment" / "labels", []
    fetched = fetch_label_store(
        "lab/ami-br-labels",
        labels_dir,
        token="hf_read",
        expected_hash=label_hash,
        manifest=manifest,
        download=from_folder(hub_copy, calls),
    )
    assert fetched == label_hash and calls == [("lab/ami-br-labels", "hf_read")]
    assert LabelStore(labels_dir).label_set_hash == label_hash
    assert labels_dir.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in labels_dir.iterdir()) == sorted(bundle.LABEL_STORE_FILES)
    again = fetch_label_store(
        "lab/ami-br-labels", labels_dir, download=from_folder(hub_copy, calls)
    )
    assert again == label_hash and len(calls) == 1  # there already: not fetched again


def test_a_changed_label_is_refused_and_nothing_is_written(built):
    root, hub_copy, manifest, label_hash = built
    labels = pd.read_csv(hub_copy / bundle.PRIVATE_LABELS_CSV, dtype=str)
    labels.loc[0, "label"] = "normal" if labels.loc[0, "label"] == "atypical" else "atypical"
    labels.to_csv(hub_copy / bundle.PRIVATE_LABELS_CSV, index=False)
    labels_dir = root / "deployment" / "labels"
    refused = "from lab/l is refused: its labels hash to .* that its release.json states"
    with pytest.raises(LabelsUnavailable, match=refused):
        fetch_label_store("lab/l", labels_dir, download=from_folder(hub_copy, []))
    assert not labels_dir.exists()
    assert not list(labels_dir.parent.iterdir())  # no staging folder left behind


def test_the_pinned_hash_and_the_release_s_ids_are_checked(built, tiny_source, tmp_path):
    root, hub_copy, manifest, label_hash = built
    with pytest.raises(LabelsUnavailable, match="that MITOSIS_LABEL_SET_HASH states"):
        fetch_label_store(
            "lab/l", root / "a", expected_hash="0" * 64, download=from_folder(hub_copy, [])
        )
    other = release.build_release(  # another release of the same source: other (secret) ids
        tiny_source,
        tmp_path / "other" / "public",
        tmp_path / "other" / "private",
        expected=TINY_COUNTS,
        secret_ids=True,
    )
    assert other["label_set_hash"] != label_hash
    with pytest.raises(LabelsUnavailable, match="not for this release's test crops"):
        fetch_label_store(
            "lab/l",
            root / "b",
            manifest=manifest,
            download=from_folder(tmp_path / "other" / "private", []),
        )


def test_the_hub_client_fetches_the_label_files_only(built, monkeypatch):
    root, hub_copy, manifest, label_hash = built
    asked = {}

    def snapshot_download(repo_id, repo_type, allow_patterns, local_dir, token):
        asked.update(repo_id=repo_id, repo_type=repo_type, files=allow_patterns, token=token)
        (local_dir / ".cache" / "huggingface").mkdir(parents=True)  # what the client writes
        for name in allow_patterns:
            shutil.copy(hub_copy / name, local_dir / name)

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    labels_dir = root / "deployment" / "labels"
    labels_dir.mkdir(parents=True)
    (labels_dir / "id_key").write_text("00ff\n")  # a secret id key already there stays
    assert fetch_label_store("lab/l", labels_dir, token="hf_read", manifest=manifest) == label_hash
    assert asked == {
        "repo_id": "lab/l",
        "repo_type": "dataset",
        "files": list(bundle.LABEL_STORE_FILES),
        "token": "hf_read",
    }
    assert sorted(p.name for p in labels_dir.iterdir()) == sorted(
        [*bundle.LABEL_STORE_FILES, "id_key"]
    )


def test_an_unreadable_store_is_refused_not_a_crash(built):
    root, hub_copy, *_ = built
    (hub_copy / bundle.RELEASE_JSON).write_text("{not json")
    with pytest.raises(LabelsUnavailable, match="cannot be read \\(JSONDecodeError"):
        fetch_label_store("lab/l", root / "x", download=from_folder(hub_copy, []))
    (hub_copy / bundle.RELEASE_JSON).write_text('{"label_set_hash": "0"}')
    (hub_copy / bundle.PRIVATE_LABELS_CSV).write_text("image_id,label\na,normal\n")  # no split
    with pytest.raises(LabelsUnavailable, match="is refused: labels.csv has no split column"):
        fetch_label_store("lab/l", root / "x", download=from_folder(hub_copy, []))


def test_offline_the_hub_is_not_asked_and_the_worker_says_why(built, caplog):
    root, *_ = built
    with pytest.raises(LabelsUnavailable, match="offline \\(HF_HUB_OFFLINE is set\\)"):
        fetch_label_store("lab/l", root / "labels")
    settings = Settings.from_env(
        {
            "MITOSIS_DATA_DIR": str(root / "data"),
            "MITOSIS_LABELS_DIR": str(root / "data" / "labels"),
            "MITOSIS_LABELS_REPO": "lab/ami-br-labels",
        }
    )
    with caplog.at_level(logging.ERROR, logger="worker"):
        fetch_labels(settings)  # logged, not fatal
    assert "MITOSIS_LABELS_REPO is lab/ami-br-labels" in caplog.text
    assert LabelStore.if_present(settings.labels_dir) is None
    fetch_labels(Settings.from_env({"MITOSIS_DATA_DIR": str(root / "data")}))  # not configured


def test_release_uploads_the_label_store_only_when_online(built, capsys):
    root, *_ = built
    code = release.main(
        [
            "--if-missing",
            "--public-dir",
            str(root / "public"),
            "--labels-dir",
            str(root / "private"),
            "--push-labels",
            "lab/ami-br-labels",
        ]
    )
    assert code == 2 and "HF_HUB_OFFLINE is set" in capsys.readouterr().err
