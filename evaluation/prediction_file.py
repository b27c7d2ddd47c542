"""A prediction file: what it holds, and reading and validating one against the manifest.

A prediction file is a UTF-8 CSV with the header ``image_id,prob_atypical`` and optionally
``label`` (``atypical`` or ``normal``, any case; without it a crop is called atypical when
``prob_atypical >= 0.5``), one row per crop of the public test manifest. A UTF-8 byte-order mark
is accepted; any other encoding is refused. Validation is strict and each fault has its own
message; a message never names a hidden crop's id or label.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.errors import InvalidPredictionFile
from evaluation.splits import ATYPICAL, LABELS, TEST_SPLITS, get_split
from fileio import PREDICTION_COLUMNS, describe_sizes, quoted, read_bounded
from settings import MAX_PREDICTION_FILE_MB, MB

THRESHOLD = 0.5
REQUIRED_COLUMNS = PREDICTION_COLUMNS[:2]  # label is optional
OPTIONAL_COLUMNS = ("label",)
DEFAULT_MAX_BYTES = MAX_PREDICTION_FILE_MB * MB
_FOREIGN_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}
_FORMAT_HINT = (
    "Expected a comma-separated UTF-8 file with the header image_id,prob_atypical[,label] and one "
    "row per crop of the public test manifest (download the template from the Submit tab)."
)


@dataclass(frozen=True)
class Predictions:
    """A validated prediction file: one entry per row, ``predicted`` 1 = atypical."""

    image_ids: np.ndarray
    prob_atypical: np.ndarray
    predicted: np.ndarray
    has_labels: bool


def as_prediction_file(table: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame | None:
    """Answers named ``<image_id>.png`` as a prediction file, or None when any is not a test crop.

    ``table`` has ``image,prob_atypical,label`` (what ``models.predict`` writes). The file
    covers only the crops answered; the leaderboard needs all of them.
    """
    ids = table["image"].map(lambda name: Path(name).stem)
    if table.empty or not ids.isin(manifest["image_id"]).all():
        return None
    return pd.DataFrame(
        {"image_id": ids, "prob_atypical": table["prob_atypical"], "label": table["label"]}
    )


_BINARY = (
    (b"PK\x03\x04", "a zip archive (an Excel .xlsx workbook, or a zipped checkpoint)"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"\xd0\xcf\x11\xe0", "an old Excel .xls workbook"),
    (b"\x1f\x8b", "a gzip archive"),
    *((b"\x80" + bytes([protocol]), "a Python pickle") for protocol in range(2, 6)),
    (b"\x89PNG", "a PNG image"),
)


def _check_not_binary(source: bytes | str | Path) -> None:
    """A workbook, archive or checkpoint is named for what it is (before its size is judged)."""
    if isinstance(source, bytes):
        head = source[:8]
    else:
        with open(source, "rb") as f:
            head = f.read(8)
    for magic, kind in _BINARY:
        if head.startswith(magic):
            raise InvalidPredictionFile(
                f"The file is {kind}, not a CSV. Save a sheet as 'CSV UTF-8'; a checkpoint goes "
                f"to Submit checkpoint (/submit_checkpoint). {_FORMAT_HINT}"
            )


def _decode(data: bytes) -> str:
    for bom, name in _FOREIGN_BOMS.items():
        if data.startswith(bom):
            raise InvalidPredictionFile(
                f"The file is {name}-encoded (it starts with a {name} byte-order mark). "
                "Save it as UTF-8 CSV (in Excel: 'CSV UTF-8'; in pandas: to_csv(..., "
                "encoding='utf-8'))."
            )
    try:  # line ends as Windows (CRLF) or old Mac (CR) spreadsheets write them read as LF
        return data.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as e:
        raise InvalidPredictionFile(
            f"The file is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}). "
            "Save it as UTF-8 CSV."
        ) from e


def _parse(text: str) -> pd.DataFrame:
    header = text.splitlines()[0]
    if "," not in header:
        for delimiter, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
            if delimiter in header:
                raise InvalidPredictionFile(
                    f"The header is separated by {name}, not commas. {_FORMAT_HINT}"
                )
    reader = csv.reader(io.StringIO(text))
    try:
        numbered = [(reader.line_num, row) for row in reader if any(f.strip() for f in row)]
    except csv.Error as e:
        raise InvalidPredictionFile(
            f"The file is not a well-formed CSV (line {reader.line_num}: {e}). {_FORMAT_HINT}"
        ) from e
    if not numbered:
        raise InvalidPredictionFile(f"The file has no header. {_FORMAT_HINT}")
    width = len(numbered[0][1])
    ragged = [(line, row) for line, row in numbered if len(row) != width]
    if ragged:
        raise InvalidPredictionFile(
            f"Line {ragged[0][0]} has {len(ragged[0][1])} field(s) but the header has {width}; "
            f"{len(ragged)} line(s) are affected. {_FORMAT_HINT}"
        )
    columns = [c.strip() for c in numbered[0][1]]
    if len(set(columns)) < len(columns):
        raise InvalidPredictionFile(f"The header repeats a column name. {_FORMAT_HINT}")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing == ["image_id"] and "image" in columns:
        raise InvalidPredictionFile(
            "The header has 'image', not 'image_id': this is models.predict's table. Run it "
            "with --format submission, which writes each crop's id (its file name without .png) "
            "as image_id."
        )
    if missing:
        raise InvalidPredictionFile(
            f"The header lacks the column(s) {', '.join(missing)}; found "
            f"{', '.join(repr(c) for c in columns)}. {_FORMAT_HINT}"
        )
    unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise InvalidPredictionFile(
            f"The header has unknown column(s) {', '.join(repr(c) for c in unknown)}; allowed are "
            f"image_id, prob_atypical and label. {_FORMAT_HINT}"
        )
    if len(numbered) == 1:
        raise InvalidPredictionFile(f"The file has a header but no rows. {_FORMAT_HINT}")
    frame = pd.DataFrame([row for _, row in numbered[1:]], columns=columns, dtype=str)
    frame.attrs["lines"] = np.array([line for line, _ in numbered[1:]])
    return frame


def _first(mask: np.ndarray) -> int:
    """Row index of the first True."""
    return int(np.flatnonzero(mask)[0])


def _probabilities(column: pd.Series, lines: np.ndarray) -> np.ndarray:
    """The column as numbers in [0, 1]; every kind of bad value is named in one message."""
    text = column.str.strip()
    prob = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
    not_number = np.isnan(prob) & ~text.str.lower().isin(["nan", "-nan", "+nan"]).to_numpy()
    not_finite = ~np.isfinite(prob) & ~not_number
    outside = ((prob < 0) | (prob > 1)) & np.isfinite(prob)  # infinities are named above
    problems = []
    if not_number.any():
        i = _first(not_number)
        problems.append(
            f"prob_atypical on line {lines[i]} is {quoted(column.iloc[i])}, not a number; "
            f"{int(not_number.sum())} row(s) are affected."
        )
    if not_finite.any():
        problems.append(
            f"prob_atypical on line {lines[_first(not_finite)]} is NaN or infinite; "
            f"{int(not_finite.sum())} row(s) are affected. Every probability must be in [0, 1]."
        )
    if outside.any():
        i = _first(outside)
        problems.append(
            f"prob_atypical on line {lines[i]} is {prob[i]:g}, outside [0, 1]; "
            f"{int(outside.sum())} row(s) are affected. Submit probabilities, not logits."
        )
    if problems:  # all at once: one round of fixing, not one per kind
        raise InvalidPredictionFile(" Also: ".join(problems))
    return prob


def _decisions(frame: pd.DataFrame, prob: np.ndarray, lines: np.ndarray) -> np.ndarray:
    if "label" not in frame.columns:
        return (prob >= THRESHOLD).astype(np.int8)
    labels = frame["label"].str.strip().str.lower()
    invalid = ~labels.isin(LABELS).to_numpy()
    if invalid.any():
        i = _first(invalid)
        raise InvalidPredictionFile(
            f"label on line {lines[i]} is {quoted(frame['label'].iloc[i])}; it must be 'atypical' "
            "or 'normal' (or leave the column out to call atypical when prob_atypical >= 0.5)."
        )
    return (labels == ATYPICAL).to_numpy(np.int8)


def _check_ids(
    ids: np.ndarray, lines: np.ndarray, manifest: pd.DataFrame, splits: Iterable[str]
) -> None:
    empty = ids == ""
    if empty.any():
        raise InvalidPredictionFile(f"image_id on line {lines[_first(empty)]} is empty.")
    duplicated = pd.Series(ids).duplicated().to_numpy()
    if duplicated.any():
        raise InvalidPredictionFile(
            f"{int(duplicated.sum())} image_id(s) appear more than once (the first repeat is on "
            f"line {lines[_first(duplicated)]}). Give exactly one row per crop."
        )
    manifest_ids = set(manifest["image_id"])
    known = np.fromiter((i in manifest_ids for i in ids), bool, count=ids.size)
    if not known.all():
        i = _first(~known)
        raise InvalidPredictionFile(
            f"{int((~known).sum())} row(s) have an image_id that is not in the public test "
            f"manifest (the first, on line {lines[i]}: {quoted(ids[i])}). Use the ids of "
            "manifest.csv in the test bundle, not file names of the original release."
        )
    submitted = set(ids)
    for split in splits:
        expected = manifest.loc[manifest["split"] == split, "image_id"]
        n_missing = sum(i not in submitted for i in expected)
        if n_missing:
            raise InvalidPredictionFile(
                f"The file has no row for {n_missing} of the {expected.size} crops of split "
                f"'{split}'. Expected one row per crop of the public test manifest (download it "
                "from the Submit tab)."
            )


def read_predictions(
    source: bytes | str | Path,
    manifest: pd.DataFrame,
    *,
    splits: Iterable[str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Predictions:
    """Parse and validate a prediction file against the public test manifest.

    Args:
        source: the file's bytes, or its path.
        manifest: ``image_id,split`` of every test crop (``PublicBundle.manifest``).
        splits: splits that must be complete (default: every test split).
        max_bytes: larger files are refused before they are read.

    Raises:
        InvalidPredictionFile: with a message specific to the first fault found.
    """
    splits = [get_split(s).name for s in (splits or [s.name for s in TEST_SPLITS])]
    _check_not_binary(source)
    source = read_bounded(
        source, max_bytes, lambda size: InvalidPredictionFile(_too_large(size, max_bytes))
    )
    text = _decode(source)
    if not text.strip():
        raise InvalidPredictionFile(f"The file is empty. {_FORMAT_HINT}")
    _check_row_count(text, len(manifest))
    frame = _parse(text)
    lines = frame.attrs["lines"]
    prob = _probabilities(frame["prob_atypical"], lines)
    predicted = _decisions(frame, prob, lines)
    ids = frame["image_id"].str.strip().to_numpy(dtype=str)
    _check_ids(ids, lines, manifest, splits)
    return Predictions(ids, prob, predicted, has_labels="label" in frame.columns)


_NON_BLANK_LINE = re.compile(r"^[^\S\n]*\S", re.MULTILINE)


def _check_row_count(text: str, crops: int) -> None:
    """Far more rows than test crops are refused before the CSV is parsed.

    Up to twice as many are parsed, so that the id checks name what the extra rows are (a
    repeated id, or one that is not a test crop).
    """
    if text.count("\n") <= 2 * crops + 1:  # almost every file stops here
        return
    rows = sum(1 for _ in _NON_BLANK_LINE.finditer(text)) - 1  # one match at a time: no copies
    if rows > 2 * crops:
        raise InvalidPredictionFile(
            f"The file has {rows:,} rows after its header; the test set has {crops:,} crops, "
            f"one row each. {_FORMAT_HINT}"
        )


def _too_large(size: int, max_bytes: int) -> str:
    shown, cap = describe_sizes(size, max_bytes)
    return (
        f"The file is {shown}; prediction files may be at most {cap}. A full file of 3,679 rows "
        "is about 0.2 MB: write probabilities with fewer digits."
    )
