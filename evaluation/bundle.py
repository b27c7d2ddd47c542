"""Layout and loaders of a built benchmark release: the public bundle and the private label store.

Public bundle (``settings.public_dir``)::

    release.json               format version and crop counts per split
    manifest.csv               image_id,split            every test crop, opaque ids
    amibr_test_labels.csv      image_id,label            the public, labelled test split
    test_crops/<image_id>.png  every test crop (AMi-Br test, AtNorM-Br, AtNorM-MD)
    test_crops.zip             test_crops/ + manifest.csv, the download for participants
    predictions_template.csv   image_id,prob_atypical    a valid file to start from
    amibr_train/               the training split (see ``training.trainset``)

Private label store (``settings.labels_dir``)::

    labels.csv                 image_id,split,label,source_path,sha256   every test crop
    atnorm_md_votes.csv        image_id,expert_1..expert_5,majority
    release.json               label_set_hash and counts

A deployment may keep the label store in a private Hub dataset (``MITOSIS_LABELS_REPO``): it is
fetched once into the labels folder, verified against its label-set hash, and read from there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.errors import InvalidLabelStore, LabelsUnavailable, ReleaseNotFound
from evaluation.splits import ATYPICAL, LABELS, NORMAL, TEST_SPLITS, get_split
from fileio import replace_folder, staged_folder

RELEASE_FORMAT = 1
RELEASE_JSON = "release.json"
MANIFEST_CSV = "manifest.csv"
AMIBR_TEST_LABELS_CSV = "amibr_test_labels.csv"
TEST_CROPS_DIR = "test_crops"
TEST_CROPS_ZIP = "test_crops.zip"
PREDICTIONS_TEMPLATE_CSV = "predictions_template.csv"
TRAIN_DIR = "amibr_train"
PRIVATE_LABELS_CSV = "labels.csv"
ATNORM_MD_VOTES_CSV = "atnorm_md_votes.csv"


def label_set_hash(rows: Iterable[tuple[str, str, str]]) -> str:
    """SHA-256 over the sorted ``split,image_id,label`` lines: changes iff any label changes."""
    lines = sorted(f"{split},{image_id},{label}\n" for image_id, split, label in rows)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class SplitLabels:
    """Ground truth of one test split, aligned to ``image_ids`` (atypical = 1)."""

    split: str
    image_ids: np.ndarray
    y_true: np.ndarray


class PublicBundle:
    """The public part of a release: manifest, crops and the AMi-Br test labels."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not (self.root / MANIFEST_CSV).is_file():
            raise ReleaseNotFound(
                f"No benchmark release at {self.root} (no {MANIFEST_CSV}). Build it with "
                "`python -m evaluation.release` (see docs/data.md)."
            )
        self.manifest = pd.read_csv(self.root / MANIFEST_CSV, dtype=str, keep_default_na=False)

    @property
    def test_crops_dir(self) -> Path:
        """Folder of every test crop, ``<image_id>.png``."""
        return self.root / TEST_CROPS_DIR

    @property
    def train_dir(self) -> Path:
        """Folder of the training split (crops, labels, slide groups)."""
        return self.root / TRAIN_DIR

    def split_ids(self, split: str) -> np.ndarray:
        """Opaque ids of one test split, in manifest order."""
        get_split(split)
        return self.manifest.loc[self.manifest["split"] == split, "image_id"].to_numpy()

    def public_labels(self) -> SplitLabels:
        """Labels of the AMi-Br test split, which are public."""
        frame = pd.read_csv(self.root / AMIBR_TEST_LABELS_CSV, dtype=str, keep_default_na=False)
        return SplitLabels(
            "amibr_test",
            frame["image_id"].to_numpy(),
            (frame["label"] == ATYPICAL).to_numpy(np.int8),
        )

    def public_label_of(self, image: str | Path) -> str | None:
        """The AMi-Br test label of ``image`` when it is one of that split's crops, byte for byte.

        Matched by name (``<image_id>.png``) and bytes, so another image under such a name gets
        none; the hidden splits' labels are not in the public bundle at all.
        """
        image = Path(image)
        original = self.test_crops_dir / f"{image.stem}.png"
        try:  # most images are no test crop: no labels read for them
            if not original.is_file() or image.read_bytes() != original.read_bytes():
                return None
        except OSError:
            return None
        labels = self.public_labels()
        found = np.flatnonzero(labels.image_ids == image.stem)  # none for a hidden crop
        return (ATYPICAL if labels.y_true[found[0]] else NORMAL) if len(found) else None


class LabelStore:
    """The private labels of every test split. Never served, never returned per image.

    Opening it checks it: every label is a class name, every crop of a test split is listed
    once, and the labels hash to the label-set hash its ``release.json`` states. A label edited
    in place would otherwise be scored under the old hash, mixing label sets on the board
    without a re-scoring (:class:`InvalidLabelStore`).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        labels_csv = self.root / PRIVATE_LABELS_CSV
        if not labels_csv.is_file():
            raise LabelsUnavailable(
                f"The private label store is not at {self.root} (no {PRIVATE_LABELS_CSV}). "
                "Hidden splits (AtNorM-Br, AtNorM-MD) can only be scored where it exists: build it "
                "with `python -m evaluation.release` or point MITOSIS_LABELS_DIR at it."
            )
        try:
            self._labels = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as e:  # pandas' parser errors are ValueErrors
            raise _invalid(self.root, f"{PRIVATE_LABELS_CSV} cannot be read ({_named(e)}).") from e
        try:
            stated = json.loads((self.root / RELEASE_JSON).read_text())["label_set_hash"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise _invalid(self.root, f"{RELEASE_JSON} cannot be read ({_named(e)}).") from e
        if not isinstance(stated, str):
            raise _invalid(self.root, f"{RELEASE_JSON} states no label-set hash ({stated!r}).")
        _check_labels(self._labels, self.root)
        self.label_set_hash: str = stated
        actual = label_set_hash(self.rows())
        if actual != stated:
            raise _invalid(
                self.root,
                f"its labels hash to {actual[:16]}…, not to the {stated[:16]}… that its "
                f"{RELEASE_JSON} states: {PRIVATE_LABELS_CSV} changed after the release was built.",
            )

    @staticmethod
    def current_hash(root: Path) -> str | None:
        """The label-set hash of the store at ``root`` (None where there is none), cheaply."""
        try:
            return json.loads((Path(root) / RELEASE_JSON).read_text())["label_set_hash"]
        except (OSError, ValueError, KeyError):
            return None

    @classmethod
    def if_present(cls, root: Path) -> LabelStore | None:
        """The label store at ``root``, or None where there is none (the one way to ask).

        A store that is there but invalid raises :class:`InvalidLabelStore`: never taken for
        an absent one.
        """
        try:
            return cls(root)
        except LabelsUnavailable:
            return None

    def rows(self) -> list[tuple[str, str, str]]:
        """``(image_id, split, label)`` of every test crop (what the label-set hash covers)."""
        return list(self._labels[["image_id", "split", "label"]].itertuples(index=False))

    def reader_votes(self) -> np.ndarray | None:
        """AtNorM-MD's expert votes, (n_crops, 5) with 1 = atypical (None if not stored)."""
        path = self.root / ATNORM_MD_VOTES_CSV
        if not path.is_file():
            return None
        votes = pd.read_csv(path, dtype=str, keep_default_na=False)
        experts = [c for c in votes.columns if c.startswith("expert_")]
        return (votes[experts].to_numpy() == "Atypical").astype(np.int8)

    def split_labels(self, split: str) -> SplitLabels:
        """Ground truth of one test split (for the scorer only)."""
        get_split(split)
        frame = self._labels[self._labels["split"] == split]
        return SplitLabels(
            split, frame["image_id"].to_numpy(), (frame["label"] == ATYPICAL).to_numpy(np.int8)
        )

    def all_labels(self) -> dict[str, SplitLabels]:
        """Ground truth of every test split."""
        return {s.name: self.split_labels(s.name) for s in TEST_SPLITS}


def _invalid(root: Path, problem: str) -> InvalidLabelStore:
    return InvalidLabelStore(
        problem,
        f"The private label store at {root} is refused: {problem} Labels change through the "
        "release: correct them in the source and run `python -m evaluation.release` again (the "
        "workers then re-score every submission against them), or restore the store as the "
        "release wrote it.",
    )


def _named(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _check_labels(labels: pd.DataFrame, root: Path) -> None:
    """Raise :class:`InvalidLabelStore` unless every row is a test crop's one known label.

    Messages name lines of the file, not crops: a hidden crop's id goes nowhere.
    """
    missing = [c for c in ("image_id", "split", "label") if c not in labels.columns]
    if missing:
        raise _invalid(root, f"{PRIVATE_LABELS_CSV} has no {', '.join(missing)} column.")
    for column, allowed in (("label", LABELS), ("split", [s.name for s in TEST_SPLITS])):
        wrong = np.flatnonzero(~labels[column].isin(allowed).to_numpy())
        if len(wrong):
            raise _invalid(
                root,
                f"{PRIVATE_LABELS_CSV} has {len(wrong)} row(s) whose {column} is not one of "
                f"{', '.join(allowed)}, the first {labels[column].iloc[wrong[0]]!r} on line "
                f"{wrong[0] + 2}.",
            )
    repeated = np.flatnonzero(labels["image_id"].duplicated().to_numpy())
    if len(repeated):
        raise _invalid(
            root,
            f"{PRIVATE_LABELS_CSV} lists {len(repeated)} image(s) more than once, the first "
            f"again on line {repeated[0] + 2}; each test crop has one label.",
        )


LABEL_STORE_FILES = (PRIVATE_LABELS_CSV, ATNORM_MD_VOTES_CSV, RELEASE_JSON)


def hub_download(repo_id: str, token: str, folder: Path) -> None:
    """Fetch the label store's files from the private Hub dataset ``repo_id`` into ``folder``."""
    from huggingface_hub import constants, snapshot_download

    if constants.HF_HUB_OFFLINE:
        raise LabelsUnavailable(
            f"MITOSIS_LABELS_REPO is {repo_id}, but this machine is offline (HF_HUB_OFFLINE is "
            "set) and has no label store yet. Unset MITOSIS_LABELS_REPO to use a local one, or "
            "go online once."
        )
    try:
        snapshot_download(
            repo_id,
            repo_type="dataset",
            allow_patterns=list(LABEL_STORE_FILES),
            local_dir=folder,
            token=token or None,
        )
    except Exception as e:  # every Hub failure means the same here: no labels
        raise LabelsUnavailable(
            f"Could not fetch the label store from the Hub dataset {repo_id} "
            f"({type(e).__name__}); check the repo id and that HF_TOKEN can read it."
        ) from e


def fetch_label_store(
    repo_id: str,
    labels_dir: Path,
    *,
    token: str = "",
    expected_hash: str = "",
    manifest: pd.DataFrame | None = None,
    download: Callable[[str, str, Path], None] = hub_download,
) -> str:
    """The label store at ``labels_dir``, fetched from a private Hub dataset if not there yet.

    The fetched copy is checked before it is swapped in: its labels must hash to the
    label-set hash its ``release.json`` states (and to ``expected_hash`` when given), and, with
    the public ``manifest``, label exactly its crops. Returns the label-set hash.
    """
    labels_dir = Path(labels_dir)
    if (labels_dir / PRIVATE_LABELS_CSV).is_file():
        return LabelStore.current_hash(labels_dir)
    with staged_folder(labels_dir, 0o700) as staged:  # readable by its owner only
        download(repo_id, token, staged)
        shutil.rmtree(staged / ".cache", ignore_errors=True)  # the Hub client's bookkeeping
        label_hash = _verify_store(staged, repo_id, expected_hash, manifest)
        for kept in labels_dir.iterdir() if labels_dir.is_dir() else ():
            if not (staged / kept.name).exists():  # e.g. a secret id key: it stays
                shutil.move(str(kept), staged / kept.name)
        try:
            replace_folder(staged, labels_dir)
        except OSError:  # another worker swapped its copy in first
            if not (labels_dir / PRIVATE_LABELS_CSV).is_file():
                raise
    return label_hash


def _verify_store(folder: Path, repo_id: str, expected: str, manifest) -> str:
    """The label-set hash of a fetched store that is complete, intact and this release's.

    Raises ``LabelsUnavailable`` otherwise.
    """
    missing = [name for name in (PRIVATE_LABELS_CSV, RELEASE_JSON) if not (folder / name).is_file()]
    if missing:
        raise LabelsUnavailable(
            f"The Hub dataset {repo_id} lacks {', '.join(missing)}: upload the label store "
            "folder that `python -m evaluation.release` wrote (--push-labels REPO)."
        )
    try:
        store = LabelStore(folder)
    except InvalidLabelStore as e:
        raise LabelsUnavailable(
            f"The label store fetched from {repo_id} is refused: {e.problem} Upload the label "
            "store folder that `python -m evaluation.release` wrote again, unchanged."
        ) from e
    if expected and store.label_set_hash != expected:
        raise LabelsUnavailable(
            f"The labels fetched from {repo_id} hash to {store.label_set_hash[:16]}…, not to the "
            f"{expected[:16]}… that MITOSIS_LABEL_SET_HASH states: refusing them. Upload the "
            "label store again, unchanged, or correct MITOSIS_LABEL_SET_HASH."
        )
    if manifest is not None and {r[0] for r in store.rows()} != set(manifest["image_id"]):
        raise LabelsUnavailable(
            f"The labels fetched from {repo_id} are not for this release's test crops (their "
            "ids differ from the public manifest). Upload the label store of this release."
        )
    return store.label_set_hash
