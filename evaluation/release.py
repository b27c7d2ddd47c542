"""Build the benchmark release: the public bundle and the private label store.

``python -m evaluation.release [--source DIR | --download]`` reads a folder laid out like the
public AMi-Br_Benchmark release, checks it against the documented counts, renames every test
crop to an opaque id and writes both halves atomically (a failed build leaves the previous
release untouched). The same source always gives the same ids and label-set hash. The public
half is also written as a Hugging Face dataset folder (``<public>/hf_dataset``), which
``--push-to-hub REPO`` publishes (with HF_TOKEN, online).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import json
import os
import secrets
import shutil
import sys
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from evaluation import bundle, hub_dataset
from evaluation.errors import SourceError
from evaluation.splits import AMIBR_TEST, ATNORM_MD, SPLITS, TEST_SPLITS, TRAIN_SPLIT
from fileio import deterministic_zip, replace_folder, staged_folder, write_predictions
from settings import PUBLIC_RELEASE_COMMIT, PUBLIC_RELEASE_URL, Settings, command_settings
from training import trainset

TRAIN_CSV = "amibr_train_split.csv"
MD_VOTES_CSV = "AtNorM-MD_expert_votes.csv"
CROP_SIZE = (128, 128)
PUBLIC_ID_KEY = b"ami-br-benchmark/opaque-id/v2"
ID_KEY_FILE = "id_key"
LABEL_FOLDERS = {"Atypical": "atypical", "Normal": "normal"}
FIXED_TIME = 1767225600  # 2026-01-01 00:00 UTC, the time of every released crop file


@dataclass(frozen=True)
class SourceCrop:
    """One crop of the source release and what the release needs to know about it."""

    path: str  # relative to the source folder, e.g. "AtNorM-Br/Normal/1.png"
    split: str
    label: str
    slide: str = ""


def source_help(source_dir: Path) -> str:
    """Where to get the public release, for every 'source not found' message."""
    return (
        f"Get the public release ({PUBLIC_RELEASE_URL}, commit {PUBLIC_RELEASE_COMMIT[:10]}) and "
        "pass its folder with --source DIR or MITOSIS_SOURCE_DIR, or, when online, run "
        f"`python -m evaluation.release --download`. Looked in: {source_dir}"
    )


def scan_source(source_dir: Path) -> list[SourceCrop]:
    """Every crop of the source with its split and label; raises ``SourceError`` if incomplete."""
    source_dir = Path(source_dir)
    train_csv = source_dir / TRAIN_CSV
    if not train_csv.is_file():
        raise SourceError(
            f"No AMi-Br benchmark source found ({TRAIN_CSV} is missing). " + source_help(source_dir)
        )
    train = pd.read_csv(train_csv, dtype=str, keep_default_na=False)
    train_rows = {row.dataset_uid: row for row in train.itertuples()}
    crops: list[SourceCrop] = []
    for folder in ("AMi-Br", "AtNorM-Br", "AtNorM-MD"):
        for label_folder, label in LABEL_FOLDERS.items():
            class_dir = source_dir / folder / label_folder
            if not class_dir.is_dir():
                raise SourceError(
                    f"The source lacks the folder {folder}/{label_folder}. "
                    + source_help(source_dir)
                )
            for png in sorted(class_dir.glob("*.png")):
                crops.append(_source_crop(folder, label_folder, label, png.name, train_rows))
    listed = {c.path.rsplit("/", 1)[1] for c in crops if c.split == TRAIN_SPLIT.name}
    absent = sorted(set(train_rows) - listed)
    if absent:
        raise SourceError(
            f"{TRAIN_CSV} lists {len(absent)} crop(s) that are not under AMi-Br/, e.g. "
            f"{absent[0]}. The source folder is incomplete: fetch the release again."
        )
    return crops


def _source_crop(folder, label_folder, label, name, train_rows) -> SourceCrop:
    path = f"{folder}/{label_folder}/{name}"
    if folder != "AMi-Br":
        split = "atnorm_br" if folder == "AtNorM-Br" else ATNORM_MD.name
        return SourceCrop(path, split, label)
    row = train_rows.get(name)
    if row is None:
        return SourceCrop(path, AMIBR_TEST.name, label)
    if row.final_label.lower() != label:
        raise SourceError(
            f"{TRAIN_CSV} labels {name} '{row.final_label}' but the crop is in {folder}/"
            f"{label_folder}. The source is inconsistent: fetch the release again."
        )
    return SourceCrop(path, TRAIN_SPLIT.name, label, slide=row.slide)


def check_counts(crops: list[SourceCrop], expected: Mapping[str, tuple[int, int]]) -> None:
    """Crops per split and class must equal ``expected`` ({split: (n_atypical, n_normal)})."""
    for split, (n_atypical, n_normal) in expected.items():
        found = [c.label for c in crops if c.split == split]
        got = (found.count("atypical"), found.count("normal"))
        if got != (n_atypical, n_normal):
            raise SourceError(
                f"Split '{split}' must have {n_atypical} atypical and {n_normal} normal crops "
                f"(SOURCE.md); the source has {got[0]} and {got[1]}. Use an unmodified copy "
                "of the public release."
            )


def read_crop(source_dir: Path, crop: SourceCrop) -> bytes:
    """The crop's file bytes, after checking it decodes as a 128x128 RGB image."""
    data = (Path(source_dir) / crop.path).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode, size = image.mode, image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise SourceError(f"{crop.path} does not decode as an image ({e}).") from e
    if mode != "RGB" or size != CROP_SIZE:
        raise SourceError(
            f"{crop.path} is a {size[0]}x{size[1]} {mode} image; every crop must be 128x128 RGB."
        )
    return data


def opaque_id(crop: SourceCrop, data: bytes, key: bytes = PUBLIC_ID_KEY) -> str:
    """16 hex digits of HMAC-SHA256 under ``key`` of the crop's source path and bytes.

    The path disambiguates crops with identical bytes (the source has a few, even across
    classes). Under the public key (``PUBLIC_ID_KEY``, for the public AMi-Br release whose
    labels are public anyway) anyone holding a crop and the code can recompute its id from
    candidate paths, and so find its label folder; under a deployment's secret key nobody can.
    """
    return hmac.new(key, crop.path.encode() + b"\0" + data, hashlib.sha256).hexdigest()[:16]


def id_key(labels_dir: Path, *, secret: bool) -> tuple[bytes, str]:
    """The key of the opaque ids and its kind ("public" or "secret").

    A secret key lives in the label store (``id_key``, readable by its owner only) and is kept
    across rebuilds, so ids stay stable; once a store has one, it is always used.
    """
    stored = Path(labels_dir) / ID_KEY_FILE
    if stored.is_file():
        return bytes.fromhex(stored.read_text().strip()), "secret"
    if secret:
        return secrets.token_bytes(32), "secret"
    return PUBLIC_ID_KEY, "public"


def build_release(
    source_dir: Path,
    public_dir: Path,
    labels_dir: Path,
    *,
    expected: Mapping[str, tuple[int, int]] | None = None,
    secret_ids: bool = False,
) -> dict:
    """Build the public bundle and the private label store from a source release.

    Both are written into temporary folders beside their targets and swapped in only when
    complete, so an error leaves any previous release as it was. ``secret_ids`` keys the opaque
    ids with a new secret kept in the label store (see :func:`id_key`).

    Returns:
        A summary: crops per split and the label-set hash.
    """
    expected = expected or {s.name: (s.n_atypical, s.n_normal) for s in SPLITS.values()}
    crops = scan_source(source_dir)
    check_counts(crops, expected)
    key, kind = id_key(labels_dir, secret=secret_ids)
    # the label store is readable by its owner only
    with (
        staged_folder(public_dir, 0o755) as public_tmp,
        staged_folder(labels_dir, 0o700) as labels_tmp,
    ):
        summary = _write_release(Path(source_dir), crops, public_tmp, labels_tmp, key)
        hub_dataset.write_dataset(public_tmp, public_tmp / hub_dataset.DATASET_DIR)
        if kind == "secret":
            key_file = labels_tmp / ID_KEY_FILE
            key_file.write_text(key.hex() + "\n")
            key_file.chmod(0o600)
        summary["ids"] = kind
        (labels_tmp / bundle.RELEASE_JSON).write_text(json.dumps(summary, indent=2, sort_keys=True))
        replace_folder(labels_tmp, Path(labels_dir))
        replace_folder(public_tmp, Path(public_dir))
    return summary


def _write_release(
    source_dir: Path, crops: list[SourceCrop], public: Path, private: Path, key: bytes
):
    train_crops = public / bundle.TRAIN_DIR / trainset.CROPS_DIR
    test_crops = public / bundle.TEST_CROPS_DIR
    train_crops.mkdir(parents=True)
    test_crops.mkdir()
    train_rows, test_rows, test_bytes = [], [], {}
    for crop in crops:
        data = read_crop(source_dir, crop)
        name = crop.path.rsplit("/", 1)[1]
        if crop.split == TRAIN_SPLIT.name:
            _write_fixed(train_crops / name, data)
            train_rows.append((name, crop.slide, crop.label))
        else:
            image_id = opaque_id(crop, data, key)
            test_bytes[image_id] = data
            test_rows.append((image_id, crop.split, crop.label, crop.path))
    # Written in id order with one fixed time: neither the order of the files on disk nor
    # their timestamps may follow the source folders, which are the labels.
    for image_id in sorted(test_bytes):
        _write_fixed(test_crops / f"{image_id}.png", test_bytes[image_id])
    test_rows.sort(key=lambda r: ([s.name for s in TEST_SPLITS].index(r[1]), r[0]))
    labels = pd.DataFrame(test_rows, columns=["image_id", "split", "label", "source_path"])
    if labels["image_id"].duplicated().any():
        raise SourceError("Two test crops received the same opaque id; report this as a bug.")
    pd.DataFrame(train_rows, columns=list(trainset.COLUMNS)).to_csv(
        public / bundle.TRAIN_DIR / trainset.LABELS_CSV, index=False
    )
    labels[["image_id", "split"]].to_csv(public / bundle.MANIFEST_CSV, index=False)
    labels.loc[labels["split"] == AMIBR_TEST.name, ["image_id", "label"]].to_csv(
        public / bundle.AMIBR_TEST_LABELS_CSV, index=False
    )
    template = labels[["image_id"]].assign(prob_atypical=0.5)
    write_predictions(template, public / bundle.PREDICTIONS_TEMPLATE_CSV)
    _write_zip(public, labels["image_id"])
    labels.to_csv(private / bundle.PRIVATE_LABELS_CSV, index=False)
    _write_md_votes(source_dir, labels, private)

    counts = {
        split: int(n)
        for split, n in [
            (TRAIN_SPLIT.name, len(train_rows)),
            *labels["split"].value_counts().items(),
        ]
    }
    label_hash = bundle.label_set_hash(labels[["image_id", "split", "label"]].itertuples(False))
    public_info = {"format": bundle.RELEASE_FORMAT, "counts": counts}
    (public / bundle.RELEASE_JSON).write_text(json.dumps(public_info, indent=2, sort_keys=True))
    return {**public_info, "label_set_hash": label_hash}


def _write_fixed(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.utime(path, (FIXED_TIME, FIXED_TIME))


def _write_zip(public: Path, image_ids) -> None:
    names = [bundle.MANIFEST_CSV] + [f"{bundle.TEST_CROPS_DIR}/{i}.png" for i in image_ids]
    deterministic_zip(((name, public / name) for name in names), public / bundle.TEST_CROPS_ZIP)


def _write_md_votes(source_dir: Path, labels: pd.DataFrame, private: Path) -> None:
    votes = pd.read_csv(source_dir / MD_VOTES_CSV, dtype=str, keep_default_na=False)
    md = labels[labels["split"] == ATNORM_MD.name].copy()
    md["Filename"] = md["source_path"].str.rsplit("/", n=1).str[1]
    merged = md[["image_id", "Filename"]].merge(votes, on="Filename", how="left")
    if merged["Majority"].eq("").any() or merged["Majority"].isna().any():
        raise SourceError(f"{MD_VOTES_CSV} lacks the votes of some AtNorM-MD crops.")
    merged = merged.drop(columns="Filename")
    merged.columns = [c.lower() for c in merged.columns]
    merged.to_csv(private / bundle.ATNORM_MD_VOTES_CSV, index=False)


def download_source(url: str, dest: Path) -> Path:
    """Fetch and unpack the public release archive; returns the folder that holds it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    archive_path = dest / "source.zip"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(archive_path, "wb") as f:
            shutil.copyfileobj(response, f)
    except OSError as e:
        raise SourceError(
            f"Could not download the public release from {url} ({e}). "
            "Check the network, or fetch it by hand and pass --source."
        ) from e
    try:
        with zipfile.ZipFile(archive_path) as archive:
            archive.extractall(dest / "unpacked")
    except zipfile.BadZipFile as e:
        raise SourceError(f"The download from {url} is not a zip archive.") from e
    archive_path.unlink()
    found = sorted((dest / "unpacked").rglob(TRAIN_CSV))
    if not found:
        raise SourceError(f"The archive from {url} holds no {TRAIN_CSV}: not the AMi-Br release.")
    return found[0].parent


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of ``python -m evaluation.release``."""
    settings = command_settings("python -m evaluation.release")
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.release",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=settings.source_dir,
        help="folder of the public AMi-Br release (default: MITOSIS_SOURCE_DIR)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="fetch the public release into MITOSIS_DATA_DIR/source first",
    )
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when a release already exists at --public-dir",
    )
    parser.add_argument(
        "--secret-ids",
        action="store_true",
        help="key the opaque ids with a new secret kept in the label store (for private labels)",
    )
    parser.add_argument("--public-dir", type=Path, default=settings.public_dir)
    parser.add_argument("--labels-dir", type=Path, default=settings.labels_dir)
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO",
        default="",
        help="then publish the dataset folder as the Hub dataset REPO (needs HF_TOKEN, online)",
    )
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: private")
    parser.add_argument(
        "--push-labels",
        metavar="REPO",
        default="",
        help="then upload the label store to the private Hub dataset REPO, where "
        "MITOSIS_LABELS_REPO fetches it from (needs HF_TOKEN, online)",
    )
    args = parser.parse_args(argv)
    if args.if_missing and (args.public_dir / bundle.MANIFEST_CSV).is_file():
        dataset = args.public_dir / hub_dataset.DATASET_DIR
        if not dataset.is_dir():  # a release built before the dataset folder existed
            with staged_folder(dataset) as staged:
                hub_dataset.write_dataset(args.public_dir, staged)
                replace_folder(staged, dataset)
            print(f"Hugging Face dataset written: {dataset}")
        print(f"A release exists at {args.public_dir}; nothing else to build.")
        return _push(args, settings)
    try:
        source = args.source
        if args.download:
            source = download_source(settings.source_archive_url, settings.data_dir / "source")
        summary = build_release(
            source, args.public_dir, args.labels_dir, secret_ids=args.secret_ids
        )
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary["counts"].items()))
    print(
        f"Public bundle: {args.public_dir}\nPrivate labels: {args.labels_dir}\n"
        f"Crops: {counts}\nLabel-set hash: {summary['label_set_hash']}\n"
        f"Opaque ids: {summary['ids']} key\n"
        f"Hugging Face dataset: {args.public_dir / hub_dataset.DATASET_DIR}"
    )
    return _push(args, settings)


def _push(args: argparse.Namespace, settings: Settings) -> int:
    try:
        for line in hub_dataset.publish(
            args.public_dir,
            args.labels_dir,
            settings.hf_token,
            dataset_repo=args.push_to_hub,
            labels_repo=args.push_labels,
            private=args.private,
        ):
            print(line)
    except hub_dataset.HubPushError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
