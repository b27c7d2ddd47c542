"""The training split as models see it: a folder of crops with labels and slide groups.

``python -m evaluation.release`` writes this folder into the public bundle from AMi-Br train
only; the training code reads nothing else. Test crops and hidden labels live in other folders
that no function of this package opens, which is what keeps held-out data out of training,
model selection and thresholds by construction.

Layout::

    labels.csv        image,slide,label      label in {atypical, normal}
    crops/<image>     128x128 RGB PNG

The release's Hugging Face dataset folder (``evaluation.hub_dataset``) is read too: only its
``data/train-*.parquet`` shards are opened, so its test split cannot reach training.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

LABELS_CSV = "labels.csv"
CROPS_DIR = "crops"
COLUMNS = ("image", "slide", "label")
CLASS_NAMES = ("normal", "atypical")  # the dataset's ClassLabel: atypical = 1
DATASET_TRAIN_GLOB = "data/train-*.parquet"


@dataclass(frozen=True)
class TrainSet:
    """Decoded training crops.

    Attributes:
        images: uint8 array (N, H, W, 3).
        y: int8 array (N,), atypical = 1.
        groups: slide of each crop, for slide-grouped cross-validation.
        names: file name of each crop.
        originals: the lossless crops when ``images`` are JPEG copies of them (None otherwise),
            so cross-validation can score each validation fold in both encodings.
    """

    images: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    names: np.ndarray
    originals: np.ndarray | None = None

    def subset(self, index: np.ndarray) -> TrainSet:
        """The crops at ``index``, every field alike."""
        return TrainSet(*(None if a is None else a[index] for a in dataclasses.astuple(self)))


def read_train_labels(train_dir: Path) -> pd.DataFrame:
    """The ``labels.csv`` of a training folder, checked for its columns."""
    path = Path(train_dir) / LABELS_CSV
    if not path.is_file():
        raise FileNotFoundError(
            f"No training split at {train_dir} (no {LABELS_CSV}, and no {DATASET_TRAIN_GLOB} "
            "of a dataset folder). Build the release with `python -m evaluation.release`."
        )
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}.")
    return frame


def is_dataset_folder(path: Path) -> bool:
    """Whether ``path`` is a Hugging Face dataset folder with train shards."""
    return Path(path).is_dir() and any(Path(path).glob(DATASET_TRAIN_GLOB))


def load_train_set(train_dir: Path, *, jpeg_quality: int | None = None, limit: int = 0) -> TrainSet:
    """Decode the training crops into one uint8 array.

    ``train_dir`` is a training folder, a packed ``.npz`` or the release's Hugging Face dataset
    folder (its train split only). With ``jpeg_quality`` (not for a ``.npz``), the crops are
    trained on as JPEG copies of that quality, the encoding a packed ``.npz`` carries to a GPU
    machine, and the lossless crops are kept in ``originals``. With ``limit``, only that many
    crops (a seeded random choice, in file order) are decoded: smoke runs.
    """
    if Path(train_dir).suffix == ".npz":
        if jpeg_quality is not None:
            raise ValueError(
                "A packed .npz already holds JPEG crops; --train-jpeg-quality needs the folder."
            )
        return _load_packed(Path(train_dir), limit)
    if is_dataset_folder(train_dir):
        frame, images = _read_dataset_train(Path(train_dir), limit)
    else:
        frame = read_train_labels(train_dir)
        frame = frame.iloc[smoke_subset(len(frame), limit)]
        crops = Path(train_dir) / CROPS_DIR
        images = np.stack(
            [np.asarray(Image.open(crops / name).convert("RGB")) for name in frame["image"]]
        )
    originals = None
    if jpeg_quality is not None:
        originals = images
        images = np.stack([_jpeg_copy(image, jpeg_quality) for image in originals])
    return TrainSet(
        images=images,
        y=(frame["label"] == "atypical").to_numpy(np.int8),
        groups=frame["slide"].to_numpy(),
        names=frame["image"].to_numpy(),
        originals=originals,
    )


def smoke_subset(n: int, limit: int) -> np.ndarray:
    """The rows a smoke run of ``limit`` crops keeps out of ``n`` (all of them for 0)."""
    if not limit or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).permutation(n)[:limit])


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _read_dataset_train(folder: Path, limit: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Labels and decoded crops of a dataset folder's train shards (and nothing else)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for path in sorted(folder.glob(DATASET_TRAIN_GLOB)):
        table = pq.read_table(path, columns=["image", "image_id", "slide", "label"])
        names = _class_names(table.schema, path)
        if names != CLASS_NAMES:
            raise ValueError(
                f"{path} labels its classes {names}; expected {CLASS_NAMES} (atypical = 1)."
            )
        tables.append(table)
    table = pa.concat_tables(tables)
    table = table.take(smoke_subset(table.num_rows, limit))
    labels = table.column("label").to_pylist()
    if None in labels:
        raise ValueError(f"{folder}: some train rows have no label; rebuild the release.")
    frame = pd.DataFrame(
        {
            "image": table.column("image_id").to_pylist(),
            "slide": table.column("slide").to_pylist(),
            "label": [CLASS_NAMES[i] for i in labels],
        }
    )
    images = np.stack([_decode(cell["bytes"]) for cell in table.column("image").to_pylist()])
    return frame, images


def _class_names(schema, path: Path) -> tuple[str, ...]:
    """The label column's ClassLabel names, from the features ``datasets`` stores in parquet."""
    try:
        features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
        return tuple(features["label"]["names"])
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(
            f"{path} is not a shard written by `datasets` (no ClassLabel on 'label')."
        ) from e


def _jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _jpeg_copy(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` after one JPEG round trip, as a packed ``.npz`` stores it."""
    data = _jpeg_bytes(Image.fromarray(image), quality)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def pack_train_set(train_dir: Path, out: Path, *, quality: int) -> Path:
    """Pack a training folder into one ``.npz`` of JPEG bytes (about 20 MB) for a GPU machine."""
    frame = read_train_labels(train_dir)
    crops = Path(train_dir) / CROPS_DIR
    encoded = [
        np.frombuffer(_jpeg_bytes(Image.open(crops / name).convert("RGB"), quality), np.uint8)
        for name in frame["image"]
    ]
    offsets = np.cumsum([0] + [len(e) for e in encoded])
    np.savez(
        out,
        jpeg=np.concatenate(encoded),
        offsets=offsets,
        **{c: frame[c].to_numpy(str) for c in COLUMNS},
    )
    return Path(out)


def _load_packed(path: Path, limit: int = 0) -> TrainSet:
    with np.load(path, allow_pickle=False) as packed:
        jpeg, offsets = packed["jpeg"], packed["offsets"]
        keep = smoke_subset(len(offsets) - 1, limit)
        return TrainSet(
            images=np.stack([_decode(jpeg[offsets[i] : offsets[i + 1]].tobytes()) for i in keep]),
            y=(packed["label"][keep] == "atypical").astype(np.int8),
            groups=packed["slide"][keep],
            names=packed["image"][keep],
        )
