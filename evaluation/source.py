"""The public AMi-Br_Benchmark release as a source: its crops, their splits and labels.

The source is a folder laid out like DeepMicroscopy/AMi-Br_Benchmark: ``AMi-Br``,
``AtNorM-Br`` and ``AtNorM-MD``, each with ``Atypical/`` and ``Normal/`` crop folders (the
folder is the label), ``amibr_train_split.csv`` (which AMi-Br crops train, with their slides)
and the AtNorM-MD expert votes. ``evaluation.release`` builds the benchmark release from it.
"""

from __future__ import annotations

import io
import shutil
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from evaluation.errors import SourceError
from evaluation.splits import AMIBR_TEST, ATNORM_MD, TRAIN_SPLIT
from settings import PUBLIC_RELEASE_COMMIT, PUBLIC_RELEASE_URL

TRAIN_CSV = "amibr_train_split.csv"
MD_VOTES_CSV = "AtNorM-MD_expert_votes.csv"
CROP_SIZE = (128, 128)
LABEL_FOLDERS = {"Atypical": "atypical", "Normal": "normal"}


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
