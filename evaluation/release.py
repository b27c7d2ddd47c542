"""Build the benchmark release: the public bundle and the private label store.

``python -m evaluation.release [--source DIR | --download]`` reads a folder laid out like the
public AMi-Br_Benchmark release, checks it against the documented counts, renames every test
crop to an opaque id and writes both halves atomically (a failed build leaves the previous
release untouched). The same source built into empty folders always gives the same ids and
label-set hash; a rebuild keeps the ids of the release it replaces (a corrected label keeps its
crop's id). The public half is also written as a Hugging Face dataset folder
(``<public>/hf_dataset``), which ``--push-to-hub REPO`` publishes (with HF_TOKEN, online).
Reading the source: ``evaluation.source``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from evaluation import bundle, hub_dataset
from evaluation.errors import SourceError
from evaluation.source import (
    MD_VOTES_CSV,
    SourceCrop,
    check_counts,
    download_source,
    read_crop,
    scan_source,
)
from evaluation.splits import AMIBR_TEST, ATNORM_MD, SPLITS, TEST_SPLITS, TRAIN_SPLIT
from fileio import deterministic_zip, replace_folder, staged_folder, write_predictions
from settings import Settings, command_settings
from training import trainset

PUBLIC_ID_KEY = b"ami-br-benchmark/opaque-id/v2"
ID_KEY_FILE = "id_key"
FIXED_TIME = 1767225600  # 2026-01-01 00:00 UTC, the time of every released crop file


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
    kept = previous_ids(Path(public_dir), Path(labels_dir), kind)
    # the label store is readable by its owner only
    with (
        staged_folder(public_dir, 0o755) as public_tmp,
        staged_folder(labels_dir, 0o700) as labels_tmp,
    ):
        summary = _write_release(Path(source_dir), crops, public_tmp, labels_tmp, key, kept)
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


def _crop_key(split: str, path: str, digest: str) -> tuple[str, str, str]:
    """A test crop as a rebuild recognises it: split, file name and bytes, not its label folder."""
    return split, path.rsplit("/", 1)[-1], digest


def previous_ids(public_dir: Path, labels_dir: Path, kind: str) -> dict[tuple, str]:
    """The ids of the release being replaced, by :func:`_crop_key` (empty when there is none).

    A rebuild gives a crop the id it had, so a label corrected in the source (the crop moved to
    the other label folder) keeps its id: every stored prediction file still covers the
    manifest, and the workers re-score them against the new labels. Ids made under another
    kind of key (public, then secret) are never carried over. The label store alone is enough
    (its ``sha256`` column; a store written before it had one is read with the public crops),
    so a restored store rebuilds the same ids.
    """
    try:
        stated = json.loads((labels_dir / bundle.RELEASE_JSON).read_text())
        rows = pd.read_csv(labels_dir / bundle.PRIVATE_LABELS_CSV, dtype=str)
    except (OSError, ValueError):
        return {}
    if stated.get("ids") != kind or "source_path" not in rows:  # a store made elsewhere
        return {}
    rows = rows.fillna("")
    if "sha256" not in rows:
        crops = public_dir / bundle.TEST_CROPS_DIR
        rows["sha256"] = [
            hashlib.sha256((crops / f"{i}.png").read_bytes()).hexdigest()
            if (crops / f"{i}.png").is_file()
            else ""
            for i in rows["image_id"]
        ]
    found: dict[tuple, list[str]] = {}
    for image_id, split, path, digest in rows[
        ["image_id", "split", "source_path", "sha256"]
    ].itertuples(False):
        if digest and path:
            found.setdefault(_crop_key(split, path, digest), []).append(image_id)
    return {key: ids[0] for key, ids in found.items() if len(ids) == 1}  # unambiguous only


def _write_release(
    source_dir: Path,
    crops: list[SourceCrop],
    public: Path,
    private: Path,
    key: bytes,
    kept: Mapping[tuple, str],
):
    train_crops = public / bundle.TRAIN_DIR / trainset.CROPS_DIR
    test_crops = public / bundle.TEST_CROPS_DIR
    train_crops.mkdir(parents=True)
    test_crops.mkdir()
    train_rows, test_rows, test_bytes, tests = [], [], {}, []
    for crop in crops:
        data = read_crop(source_dir, crop)
        name = crop.path.rsplit("/", 1)[1]
        if crop.split == TRAIN_SPLIT.name:
            _write_fixed(train_crops / name, data)
            train_rows.append((name, crop.slide, crop.label))
        else:
            tests.append((crop, data, hashlib.sha256(data).hexdigest()))
    claims = Counter(_crop_key(crop.split, crop.path, digest) for crop, _, digest in tests)
    for crop, data, digest in tests:  # an id is carried to one new crop only, never shared
        found = _crop_key(crop.split, crop.path, digest)
        image_id = (
            kept[found] if found in kept and claims[found] == 1 else opaque_id(crop, data, key)
        )
        test_bytes[image_id] = data
        test_rows.append((image_id, crop.split, crop.label, crop.path, digest))
    # Written in id order with one fixed time: neither the order of the files on disk nor
    # their timestamps may follow the source folders, which are the labels.
    for image_id in sorted(test_bytes):
        _write_fixed(test_crops / f"{image_id}.png", test_bytes[image_id])
    test_rows.sort(key=lambda r: ([s.name for s in TEST_SPLITS].index(r[1]), r[0]))
    labels = pd.DataFrame(
        test_rows, columns=["image_id", "split", "label", "source_path", "sha256"]
    )
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
