from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import fileio
from evaluation import bundle, release, source
from evaluation.bundle import LabelStore, PublicBundle
from evaluation.errors import SourceError
from evaluation.prediction_file import read_predictions
from evaluation.splits import TEST_SPLITS
from models.predict import main as predict_main
from tests.conftest import TINY_COUNTS, write_png
from tests.models.conftest import tiny_checkpoint
from training.trainset import load_train_set


def build(source_dir: Path, out: Path) -> dict:
    return release.build_release(source_dir, out / "public", out / "private", expected=TINY_COUNTS)


def test_tiny_release_layout_and_contents(tiny_source, tmp_path):
    summary = build(tiny_source, tmp_path)
    public, private = tmp_path / "public", tmp_path / "private"
    manifest = pd.read_csv(public / bundle.MANIFEST_CSV)
    assert list(manifest.columns) == ["image_id", "split"]
    assert manifest["split"].value_counts().to_dict() == {
        s: sum(TINY_COUNTS[s]) for s in ("amibr_test", "atnorm_br", "atnorm_md")
    }
    assert summary["counts"]["amibr_train"] == 6
    # ids are opaque: 16 hex digits, no trace of the file name or the label
    assert manifest["image_id"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert manifest["image_id"].is_unique
    crops = sorted(p.stem for p in (public / bundle.TEST_CROPS_DIR).iterdir())
    assert crops == sorted(manifest["image_id"])
    with zipfile.ZipFile(public / bundle.TEST_CROPS_ZIP) as archive:
        names = archive.namelist()
    assert bundle.MANIFEST_CSV in names and len(names) == len(manifest) + 1
    assert not any("typical" in n.lower() or "normal" in n.lower() for n in names)
    template = pd.read_csv(public / bundle.PREDICTIONS_TEMPLATE_CSV)
    assert list(template.columns) == ["image_id", "prob_atypical"]
    assert len(template) == len(manifest)
    # the public side holds no hidden label anywhere
    public_text = "".join(
        p.read_text() for p in public.glob("*.csv") if p.name != "amibr_test_labels.csv"
    )
    assert "atypical" not in public_text.replace("prob_atypical", "")
    labels = pd.read_csv(private / bundle.PRIVATE_LABELS_CSV)
    assert set(labels["image_id"]) == set(manifest["image_id"])
    assert (
        labels.loc[labels["source_path"] == "AtNorM-Br/Atypical/1.png", "label"].item()
        == "atypical"
    )
    assert labels.loc[labels["source_path"] == "AtNorM-Br/Normal/1.png", "label"].item() == "normal"
    votes = pd.read_csv(private / bundle.ATNORM_MD_VOTES_CSV)
    assert len(votes) == 7 and list(votes.columns)[-1] == "majority"
    assert LabelStore(private).label_set_hash == summary["label_set_hash"]
    train = load_train_set(public / bundle.TRAIN_DIR)
    assert train.images.shape == (6, 128, 128, 3) and train.y.sum() == 2


def test_release_is_deterministic(tiny_source, tmp_path):
    a, b = build(tiny_source, tmp_path / "a"), build(tiny_source, tmp_path / "b")
    assert a["label_set_hash"] == b["label_set_hash"]
    assert (tmp_path / "a/public/manifest.csv").read_bytes() == (
        tmp_path / "b/public/manifest.csv"
    ).read_bytes()


def test_label_change_changes_the_hash(tiny_source, tmp_path):
    before = build(tiny_source, tmp_path / "a")["label_set_hash"]
    md = tiny_source / "AtNorM-MD"
    moved = next((md / "Normal").glob("*.png"))
    moved.rename(md / "Atypical" / moved.name)
    counts = {**TINY_COUNTS, "atnorm_md": (4, 3)}
    after = release.build_release(
        tiny_source, tmp_path / "b/public", tmp_path / "b/private", expected=counts
    )["label_set_hash"]
    assert after != before
    labels = {
        side: pd.read_csv(tmp_path / side / "private" / "labels.csv").set_index("source_path")
        for side in ("a", "b")
    }
    old_path = f"AtNorM-MD/Normal/{moved.name}"
    new_path = f"AtNorM-MD/Atypical/{moved.name}"
    assert labels["a"].loc[old_path, "label"] == "normal"
    assert labels["b"].loc[new_path, "label"] == "atypical"
    others = labels["a"].drop(old_path)["label"]
    assert others.equals(labels["b"].drop(new_path)["label"].reindex(others.index))
    votes_b = pd.read_csv(tmp_path / "b/private/atnorm_md_votes.csv")
    assert set(votes_b["image_id"]) == set(labels["b"].query("split == 'atnorm_md'")["image_id"])


def test_a_corrected_label_keeps_its_crop_s_id(tiny_source, tmp_path):
    """Stored prediction files must still cover the manifest after a maintainer's label fix."""
    out = tmp_path / "out"
    before = build(tiny_source, out)
    manifest = (out / "public" / bundle.MANIFEST_CSV).read_bytes()
    ids = pd.read_csv(out / "private" / "labels.csv").set_index("source_path")["image_id"]
    br = tiny_source / "AtNorM-Br"
    (br / "Atypical/1.png").rename(br / "Normal/1x.png")  # the two crops swap label folders
    (br / "Normal/1.png").rename(br / "Atypical/1.png")
    (br / "Normal/1x.png").rename(br / "Normal/1.png")
    after = build(tiny_source, out)
    assert after["label_set_hash"] != before["label_set_hash"]
    assert (out / "public" / bundle.MANIFEST_CSV).read_bytes() == manifest
    labels = pd.read_csv(out / "private" / "labels.csv").set_index("image_id")["label"]
    assert labels[ids["AtNorM-Br/Atypical/1.png"]] == "normal"
    assert labels[ids["AtNorM-Br/Normal/1.png"]] == "atypical"
    shutil.rmtree(out / "public")  # a restore: the label store alone gives the ids back
    assert build(tiny_source, out)["label_set_hash"] == after["label_set_hash"]
    assert (out / "public" / bundle.MANIFEST_CSV).read_bytes() == manifest
    store = out / "private" / "labels.csv"  # a store written before it kept the crops' digests
    pd.read_csv(store).drop(columns="sha256").to_csv(store, index=False)
    assert build(tiny_source, out)["label_set_hash"] == after["label_set_hash"]
    fresh = build(tiny_source, tmp_path / "fresh")  # without a release to replace: new ids
    assert fresh["label_set_hash"] != after["label_set_hash"]
    secret = release.build_release(  # ids under another kind of key are never carried over
        tiny_source, out / "public", out / "private", expected=TINY_COUNTS, secret_ids=True
    )
    assert secret["ids"] == "secret"
    kept = set(pd.read_csv(out / "public" / bundle.MANIFEST_CSV)["image_id"]) & set(ids)
    assert kept == set()


def test_a_rebuild_shares_no_id_and_reads_any_store_it_replaces(tiny_source, tmp_path):
    out = tmp_path / "out"
    build(tiny_source, out)
    br = tiny_source / "AtNorM-Br"
    shutil.copy(br / "Atypical/1.png", br / "Normal/1.png")  # one name and bytes, both classes
    build(tiny_source, out)  # neither crop takes the kept id: two ids, no 'same opaque id'
    store = out / "private" / "labels.csv"  # a store made elsewhere, without source paths
    pd.read_csv(store)[["image_id", "split", "label"]].to_csv(store, index=False)
    assert build(tiny_source, out)["counts"]["atnorm_br"] == 5


def test_rebuild_replaces_and_failure_keeps_previous_release(tiny_source, tmp_path):
    out = tmp_path / "out"
    first = build(tiny_source, out)
    build(tiny_source, out)  # re-running on an existing release is safe
    write_png(tiny_source / "AtNorM-Br/Normal/3.png", 99, size=(64, 64))
    with pytest.raises(SourceError, match=r"AtNorM-Br/Normal/3.png is a 64x64 RGB image"):
        build(tiny_source, out)
    assert LabelStore(out / "private").label_set_hash == first["label_set_hash"]
    assert sorted(p.name for p in out.iterdir()) == ["private", "public"]


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda s: write_png(s / "AMi-Br/Normal/MIDOG21_9.png", 1, mode="L"),
            "MIDOG21_9.png is a 128x128 L image; every crop must be 128x128 RGB",
        ),
        (
            lambda s: (s / "AtNorM-MD/Atypical/18.png").write_bytes(b"not a png"),
            "AtNorM-MD/Atypical/18.png does not decode as an image",
        ),
        (
            lambda s: (s / "AtNorM-Br/Atypical/1.png").unlink(),
            "Split 'atnorm_br' must have 2 atypical and 3 normal crops .SOURCE.md.; "
            "the source has 1 and 3",
        ),
        (
            lambda s: (s / "AMi-Br/Atypical/MIDOG21_1.png").unlink(),
            "lists 1 crop.s. that are not under AMi-Br/, e.g. MIDOG21_1.png",
        ),
        (lambda s: (s / "amibr_train_split.csv").unlink(), "amibr_train_split.csv is missing"),
    ],
)
def test_damaged_source_is_refused_with_the_file_named(tiny_source, tmp_path, damage, message):
    damage(tiny_source)
    with pytest.raises(SourceError, match=message):
        build(tiny_source, tmp_path)
    assert not (tmp_path / "public").exists() and not (tmp_path / "private").exists()


def test_missing_source_says_where_to_get_it(tmp_path):
    with pytest.raises(SourceError, match="DeepMicroscopy/AMi-Br_Benchmark.*--download"):
        release.build_release(tmp_path / "nowhere", tmp_path / "p", tmp_path / "q")
    assert (
        release.main(
            [
                "--source",
                str(tmp_path / "nowhere"),
                "--public-dir",
                str(tmp_path / "p"),
                "--labels-dir",
                str(tmp_path / "q"),
            ]
        )
        == 2
    )


def test_download_unpacks_an_archive_of_the_release(tiny_source, tmp_path):
    archive = tmp_path / "release.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in tiny_source.rglob("*"):
            z.write(path, f"AMi-Br_Benchmark-3acf4da/{path.relative_to(tiny_source)}")
    found = source.download_source(archive.as_uri(), tmp_path / "fetched")
    assert found.name == "AMi-Br_Benchmark-3acf4da"
    assert build(found, tmp_path / "out")["counts"]["atnorm_md"] == 7
    with pytest.raises(SourceError, match="Could not download"):
        source.download_source((tmp_path / "absent.zip").as_uri(), tmp_path / "x")


def test_real_release_matches_source_md(real_release):
    public = PublicBundle(real_release.public_dir)
    store = LabelStore(real_release.labels_dir)
    for split in TEST_SPLITS:
        truth = store.split_labels(split.name)
        assert (truth.y_true.sum(), truth.y_true.size) == (split.n_atypical, split.n)
        assert set(public.split_ids(split.name)) == set(truth.image_ids)
    info = json.loads((real_release.public_dir / bundle.RELEASE_JSON).read_text())
    assert info["counts"] == {
        "amibr_train": 2894,
        "amibr_test": 826,
        "atnorm_br": 746,
        "atnorm_md": 2107,
    }
    assert "label_set_hash" not in info
    assert len(public.manifest) == 3679 and public.manifest["image_id"].is_unique


def test_nothing_in_the_public_bundle_follows_the_label_folders(tiny_source, tmp_path):
    build(tiny_source, tmp_path)
    public = tmp_path / "public"
    crops = list((public / bundle.TEST_CROPS_DIR).iterdir())
    assert {p.stat().st_mtime for p in crops} == {release.FIXED_TIME}
    with zipfile.ZipFile(public / bundle.TEST_CROPS_ZIP) as archive:
        infos = archive.infolist()
    assert {i.date_time for i in infos} == {fileio.FIXED_ZIP_TIME}
    names = [i.filename for i in infos[1:]]
    assert names == sorted(names)  # id order, not source (label) order


def reversed_ids(source_dir: Path, public_dir: Path) -> int:
    """The attack: recompute, with the public code, the id of every crop under every source
    path of the public release; a match gives the crop's folder, which is its label."""
    paths = [str(p.relative_to(source_dir)) for p in source_dir.rglob("*.png")]
    recovered = 0
    for crop in (public_dir / bundle.TEST_CROPS_DIR).glob("*.png"):
        data = crop.read_bytes()
        candidates = (source.SourceCrop(path, "", "") for path in paths)
        recovered += any(release.opaque_id(c, data) == crop.stem for c in candidates)
    return recovered


def test_ids_under_a_deployment_secret_cannot_be_reversed(tiny_source, tmp_path):
    n_test = sum(a + n for s, (a, n) in TINY_COUNTS.items() if s != "amibr_train")
    assert build(tiny_source, tmp_path)["ids"] == "public"
    assert reversed_ids(tiny_source, tmp_path / "public") == n_test  # the public key: all
    secret = tmp_path / "secret"
    summary = release.build_release(
        tiny_source, secret / "pub", secret / "priv", expected=TINY_COUNTS, secret_ids=True
    )
    assert summary["ids"] == "secret"
    assert reversed_ids(tiny_source, secret / "pub") == 0
    key = secret / "priv" / release.ID_KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600
    assert json.loads((secret / "priv" / "release.json").read_text())["ids"] == "secret"
    assert "ids" not in json.loads((secret / "pub" / "release.json").read_text())
    manifest = (secret / "pub" / bundle.MANIFEST_CSV).read_text()
    release.build_release(tiny_source, secret / "pub", secret / "priv", expected=TINY_COUNTS)
    assert (secret / "pub" / bundle.MANIFEST_CSV).read_text() == manifest  # the key is kept


def test_the_readme_route_from_the_download_to_a_valid_submission(
    tiny_source, tmp_path, monkeypatch, capsys
):
    """`unzip test_crops.zip`, then `models.predict --format submission test_crops/` in that
    folder (through the command's entry point, in this process)."""
    build(tiny_source, tmp_path / "out")
    public = tmp_path / "out" / "public"
    work = tmp_path / "participant"
    with zipfile.ZipFile(public / "test_crops.zip") as archive:
        archive.extractall(work)  # what `unzip test_crops.zip` does in that folder
    checkpoint = tiny_checkpoint(tmp_path / "model")
    monkeypatch.chdir(work)
    code = predict_main(["--checkpoint", str(checkpoint), "--format", "submission", "test_crops/"])
    out, err = capsys.readouterr()
    assert code == 0, err
    (work / "predictions.csv").write_text(out)
    predictions = read_predictions(work / "predictions.csv", PublicBundle(public).manifest)
    assert len(predictions.image_ids) == sum(n + m for n, m in TINY_COUNTS.values()) - sum(
        TINY_COUNTS["amibr_train"]
    )
