"""The public release as a Hugging Face dataset folder: loads offline, pixel-identical, no label."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from datasets import load_dataset
from PIL import Image

from evaluation import bundle, hub_dataset, release
from tests.conftest import TINY_COUNTS
from training.trainset import load_train_set


def dataset(folder, cache, config=None):
    return load_dataset(str(folder), config, cache_dir=str(cache))


@pytest.fixture
def tiny_release(tiny_source, tmp_path):
    release.build_release(
        tiny_source, tmp_path / "public", tmp_path / "private", expected=TINY_COUNTS
    )
    return tmp_path


def test_tiny_dataset_loads_offline_with_the_release_contents(tiny_release, tmp_path):
    public = tiny_release / "public"
    folder = public / hub_dataset.DATASET_DIR
    crops = dataset(folder, tmp_path / "cache")
    assert crops.num_rows == {"train": 6, "test": 17}
    train, test = crops["train"], crops["test"]
    assert train.features["label"].names == ["normal", "atypical"]
    assert train.features["image"].__class__.__name__ == "Image"
    expected = pd.read_csv(public / bundle.TRAIN_DIR / "labels.csv")
    assert train["image_id"] == list(expected["image"]) and train["slide"] == list(
        expected["slide"]
    )
    assert [train.features["label"].int2str(i) for i in train["label"]] == list(expected["label"])
    manifest = pd.read_csv(public / bundle.MANIFEST_CSV)
    assert test["image_id"] == list(manifest["image_id"]) and test["split"] == list(
        manifest["split"]
    )
    assert set(test["label"]) == {None} and set(test["slide"]) == {None}
    for row in test:  # every crop equal, pixel for pixel, to the released PNG
        png = Image.open(public / bundle.TEST_CROPS_DIR / f"{row['image_id']}.png")
        assert np.array_equal(np.asarray(row["image"]), np.asarray(png))
    labels = dataset(folder, tmp_path / "cache", hub_dataset.TEST_LABELS_CONFIG)["test"]
    public_labels = pd.read_csv(public / bundle.AMIBR_TEST_LABELS_CSV)
    assert labels["image_id"] == list(public_labels["image_id"])
    assert [labels.features["label"].int2str(i) for i in labels["label"]] == list(
        public_labels["label"]
    )


def test_no_hidden_label_and_no_source_name_in_any_shard(tiny_release):
    private = pd.read_csv(tiny_release / "private" / bundle.PRIVATE_LABELS_CSV)
    hidden = set(private.loc[private["split"] != "amibr_test", "image_id"])
    folder = tiny_release / "public" / hub_dataset.DATASET_DIR
    for path in folder.rglob("*.parquet"):
        table = pq.read_table(path).to_pandas()
        if "split" in table:  # the image shards: test rows carry no label, no slide
            test = table[table["split"] != "amibr_train"]
            assert test["label"].isna().all() and test["slide"].isna().all()
            stored_names = {cell["path"] for cell in test["image"]}
            assert stored_names == {f"{i}.png" for i in test["image_id"]}
        else:  # the public labels' config: AMi-Br test only
            assert not set(table["image_id"]) & hidden
        raw = path.read_bytes()
        assert b"Atypical/" not in raw and b"Normal/" not in raw  # no source paths
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "mit"
    assert [c["config_name"] for c in front["configs"]] == ["default", "amibr_test_labels"]


def test_train_split_feeds_training_like_the_folder(tiny_release):
    public = tiny_release / "public"
    from_dataset = load_train_set(public / hub_dataset.DATASET_DIR)
    from_folder = load_train_set(public / bundle.TRAIN_DIR)
    assert np.array_equal(from_dataset.images, from_folder.images)
    assert np.array_equal(from_dataset.y, from_folder.y)
    assert list(from_dataset.groups) == list(from_folder.groups)
    assert list(from_dataset.names) == list(from_folder.names)
    jpeg = load_train_set(public / hub_dataset.DATASET_DIR, jpeg_quality=90)
    assert np.array_equal(jpeg.originals, from_folder.images)
    some = load_train_set(public / hub_dataset.DATASET_DIR, limit=3)
    assert list(some.names) == list(load_train_set(public / bundle.TRAIN_DIR, limit=3).names)
    assert len(some.names) == 3


def test_training_reads_the_train_shards_only(tiny_release):
    folder = tiny_release / "public" / hub_dataset.DATASET_DIR
    (folder / "data" / "train-00000-of-00001.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="data/train-"):
        load_train_set(folder)  # test shards and label config present: still refused


def test_the_real_dataset_has_every_crop_unchanged(real_release, tmp_path):
    public = real_release.public_dir
    folder = public / hub_dataset.DATASET_DIR
    crops = dataset(folder, tmp_path / "cache")
    assert crops.num_rows == {"train": 2894, "test": 3679}
    test = crops["test"]
    assert pd.Series(test["split"]).value_counts().to_dict() == {
        "atnorm_md": 2107,
        "amibr_test": 826,
        "atnorm_br": 746,
    }
    assert set(test["label"]) == {None}
    assert sum(crops["train"]["label"]) == 648
    private = pd.read_csv(real_release.labels_dir / bundle.PRIVATE_LABELS_CSV).set_index("image_id")
    source = real_release.source_dir
    rng = np.random.default_rng(0)
    for index in rng.choice(len(test), 40, replace=False).tolist():
        row = test[index]
        original = Image.open(source / private.loc[row["image_id"], "source_path"])
        assert np.array_equal(np.asarray(row["image"]), np.asarray(original))
    train = crops["train"]
    for index in rng.choice(len(train), 20, replace=False).tolist():
        row = train[index]
        folder_name = (
            "Atypical" if train.features["label"].int2str(row["label"]) == "atypical" else "Normal"
        )
        original = Image.open(source / "AMi-Br" / folder_name / row["image_id"])
        assert np.array_equal(np.asarray(row["image"]), np.asarray(original))
    labels = dataset(folder, tmp_path / "cache", hub_dataset.TEST_LABELS_CONFIG)["test"]
    assert labels.num_rows == 826
    assert set(labels["image_id"]) == set(private.index[private["split"] == "amibr_test"])


def test_push_to_hub_stops_at_the_network_boundary(tiny_release, monkeypatch):
    folder = tiny_release / "public" / hub_dataset.DATASET_DIR
    with pytest.raises(hub_dataset.HubPushError, match="HF_HUB_OFFLINE is set"):
        hub_dataset.push_to_hub(folder, "lab/ami-br", "hf_token")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with pytest.raises(hub_dataset.HubPushError, match="needs a write token"):
        hub_dataset.push_to_hub(folder, "lab/ami-br", "")

    class RecordingApi:  # what HfApi would be asked to do
        def __init__(self, public: bool = False):
            self.calls, self.public = [], public

        def create_repo(self, repo_id, **kwargs):
            self.calls.append(("create_repo", repo_id, kwargs))

        def repo_info(self, repo_id, **kwargs):
            return SimpleNamespace(private=not self.public)

        def upload_folder(self, **kwargs):
            self.calls.append(("upload_folder", kwargs))
            return "https://huggingface.co/datasets/lab/ami-br/commit/abc"

    api = RecordingApi()
    url = hub_dataset.push_to_hub(folder, "lab/ami-br", "hf_token", private=True, api=api)
    assert url.endswith("/commit/abc")
    assert api.calls[0] == (
        "create_repo",
        "lab/ami-br",
        {"repo_type": "dataset", "private": True, "exist_ok": True},
    )
    assert api.calls[1][1]["folder_path"] == str(folder)
    assert api.calls[1][1]["repo_type"] == "dataset"
    # an existing public repo stays public whatever create_repo is asked: nothing private goes
    public = RecordingApi(public=True)
    with pytest.raises(hub_dataset.HubPushError, match="exists and is public"):
        hub_dataset.push_to_hub(folder, "lab/open", "hf_token", private=True, api=public)
    assert [c[0] for c in public.calls] == ["create_repo"]
    with pytest.raises(hub_dataset.HubPushError, match="cannot share the repo lab/ami-br"):
        list(
            hub_dataset.publish(
                tiny_release / "public",
                tiny_release / "private",
                "hf_token",
                dataset_repo="lab/ami-br",
                labels_repo="lab/ami-br",
            )
        )


def test_release_command_refuses_to_push_offline(tiny_release, capsys):
    code = release.main(
        [
            "--if-missing",
            "--public-dir",
            str(tiny_release / "public"),
            "--labels-dir",
            str(tiny_release / "private"),
            "--push-to-hub",
            "lab/ami-br",
        ]
    )
    assert code == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err


def test_an_older_release_gets_its_dataset_folder(tiny_release):
    folder = tiny_release / "public" / hub_dataset.DATASET_DIR
    shutil.rmtree(folder)  # built before the dataset folder existed
    args = ["--if-missing", "--public-dir", str(tiny_release / "public")]
    assert release.main([*args, "--labels-dir", str(tiny_release / "private")]) == 0
    assert load_train_set(folder).images.shape == (6, 128, 128, 3)
