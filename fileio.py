"""Files read and written safely: size-checked reads, atomic writes, folder swaps, zips.

The one place that knows how. Reads: uploads arrive as files on disk (Gradio writes them to
its cache) or as bytes (tests, the packages' API). Both are measured first; only files within
their limit are read, so a 300 MB "CSV" or a 2 GB "image" costs a ``stat`` call, not memory.

Writes: readers (other processes, other workers on a shared folder) see a whole file or folder
or none: files go through a unique temporary file beside the target, folders are built beside
theirs and swapped in; zips are written with sorted names and one fixed timestamp, so the same
content always gives the same bytes. Text meant for spreadsheets is defused
(:func:`spreadsheet_safe`), and submitter-written text shown as Markdown is escaped
(:func:`markdown_literal`). Prediction files are written in one way (:func:`write_predictions`).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

FIXED_ZIP_TIME = (2026, 1, 1, 0, 0, 0)
PREDICTION_COLUMNS = ("image_id", "prob_atypical", "label")  # a prediction file; label optional
# a cell starting with one of these is run as a formula by spreadsheets (CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")

Source = Path | str | bytes


def source_size(source: Source) -> int:
    """Size in bytes of a file or of in-memory bytes (``OSError`` when the file is gone)."""
    return len(source) if isinstance(source, bytes) else Path(source).stat().st_size


def describe_sizes(size: int, limit: int) -> tuple[str, str]:
    """``size`` and ``limit`` as text, precise enough that the two never read the same.

    Example:
        >>> describe_sizes(5 * 2**20 + 1, 5 * 2**20)
        ('5,242,881 bytes', '5,242,880 bytes (5 MB)')
        >>> describe_sizes(300 * 2**20, 5 * 2**20)
        ('300 MB', '5 MB')
    """
    unit, scale = ("MB", 2**20) if limit >= 2**20 else ("KB", 2**10)
    if limit < 2**10:
        return f"{size:,} bytes", f"{limit:,} bytes"
    for decimals in (0, 1, 2):
        shown = f"{size / scale:,.{decimals}f}", f"{limit / scale:,.{decimals}f}"
        if shown[0] != shown[1]:
            return f"{shown[0]} {unit}", f"{shown[1]} {unit}"
    return f"{size:,} bytes", f"{limit:,} bytes ({limit / scale:,.0f} {unit})"


def read_bounded(source: Source, limit: int, too_large: Callable[[int], Exception]) -> bytes:
    """The whole of ``source`` if it holds at most ``limit`` bytes; else ``too_large(size)``.

    The size is checked before reading, and the read itself stops one byte past the limit,
    so a file that grows after the check is refused too.
    """
    size = source_size(source)
    if size > limit:
        raise too_large(size)
    if isinstance(source, bytes):
        return source
    with open(source, "rb") as f:
        data = f.read(size + 1)  # a read buffer of the file's size, not of the limit
        if len(data) > size:  # it grew since it was measured
            data += f.read(limit + 1 - len(data))
    if len(data) > limit:
        raise too_large(len(data))
    return data


def display_name(source: Source, default: str = "the file") -> str:
    """How a message names an input: its base name only, never a server path."""
    return default if isinstance(source, bytes) else (Path(source).name or default)


PUBLIC = 0o644  # the mode of a file anyone may read


def atomic_write(path: Path, write: Callable[[Path], object], *, mode: int = 0o600) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place.

    The file gets ``mode``: owner-only by default (uploads, cached predictions); ``0o644``
    for what is public anyway (the results folder, training reports).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_copy(source: Path | str | bytes, path: Path) -> None:
    """Write ``source`` (bytes, or a file copied in chunks) to ``path`` atomically, fsynced."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            if isinstance(source, bytes):
                f.write(source)
            else:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, f, 2**20)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


class staged_folder:
    """A temporary folder beside ``target`` to build into; :func:`replace_folder` swaps it in.

    Removed on exit unless it was swapped in, so a failed build leaves the old folder as it was.
    """

    def __init__(self, target: Path, mode: int = 0o755) -> None:
        self.target = Path(target)
        self.mode = mode

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(
            tempfile.mkdtemp(prefix=f".{self.target.name}.new-", dir=self.target.parent)
        )
        self.path.chmod(self.mode)
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def replace_folder(staged: Path, target: Path) -> None:
    """Swap a complete folder in for ``target`` (two renames; the old one is then removed)."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    staged.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def deterministic_zip(
    entries: Iterable[tuple[str, Path | bytes]],
    out: Path | BinaryIO,
    compression: int = zipfile.ZIP_STORED,
) -> None:
    """Write ``(name, file or bytes)`` entries in name order, all with one fixed timestamp.

    Files are copied in chunks, so a multi-gigabyte weights file never sits in memory.
    """
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, content in sorted(entries, key=lambda entry: entry[0]):
            info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            info.compress_type = compression
            if isinstance(content, bytes):
                archive.writestr(info, content)
                continue
            info.file_size = Path(content).stat().st_size  # decides zip64 as writestr would
            with open(content, "rb") as source, archive.open(info, "w") as target:
                shutil.copyfileobj(source, target, 2**20)


def zip_folder(directory: Path) -> bytes:
    """A folder's files as a zip in memory, the same bytes for the same files."""
    buffer = io.BytesIO()
    deterministic_zip(((p.name, p) for p in Path(directory).iterdir()), buffer)
    return buffer.getvalue()


def spreadsheet_safe(value):
    """``value``, with a leading quote when it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def quoted(value, limit: int = 80) -> str:
    """``value`` as a message echoes it: quoted, escaped, at most ``limit`` characters.

    ``repr`` escapes control characters and invisible ones (right-to-left overrides, zero-width
    spaces), so an echo cannot reorder or hide the message around it; a longer value is cut
    and its length given, so an error never grows with what was sent.
    """
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text):,} characters)"


def markdown_literal(text: str) -> str:
    """Submitter-written text as literal Markdown (metadata validation already refuses HTML)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def write_predictions(frame, target) -> None:
    """Write a prediction file: ``image_id,prob_atypical[,label]``, six decimals, Unix line ends.

    ``frame`` is a pandas frame with those columns (others are left out); ``target`` a path or
    a text stream. Every writer of the format (the predict command, the checkpoint runner, the
    worker's cache, the Classify tab, the release's template) goes through here.
    """
    columns = [column for column in PREDICTION_COLUMNS if column in frame.columns]
    frame[columns].to_csv(target, index=False, float_format="%.6f", lineterminator="\n")
