"""The files of a checkpoint, from a folder or a zip, checked before anything is decompressed.

Every entry is judged by its header first: only the format's file names (pickles and nested
archives are refused by name), no absolute paths, no ``..``, no links, at most one folder level,
and the declared sizes within the cap. A zip's central directory is measured before it is
parsed, so an archive that declares millions of entries costs nothing. Entries are then read in
chunks that stop at the size the entry declares, and every read is checked against the entry's
CRC, so a zip that lies about its sizes (a bomb) yields an error, never more bytes than the cap.
A zip given as a path is read from disk and never loaded whole; nothing is ever extracted.
"""

from __future__ import annotations

import hashlib
import io
import stat
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

from fileio import describe_sizes
from models.errors import CheckpointError, UnsafeCheckpoint
from settings import MAX_CHECKPOINT_MB, MB

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
CARD = "README.md"
ALLOWED_FILES = (CONFIG, WEIGHTS, ADAPTER_CONFIG, ADAPTER_WEIGHTS, CARD)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
DEFAULT_MAX_BYTES = MAX_CHECKPOINT_MB * MB
MAX_ENTRIES = 16
MAX_CENTRAL_DIRECTORY = 64 * 2**10
CHUNK = 2**20
CONVERT_HINT = (
    "Only config.json + model.safetensors (or adapter_config.json + adapter_model.safetensors) "
    "are accepted; pickle files (.bin, .pt, .pth, .ckpt) are never loaded. Convert with "
    "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')."
)
_END_RECORD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END_RECORD = b"PK\x06\x06"


def check_name(name: str) -> None:
    """Raise unless ``name`` is one of the format's files (pickles and archives named as such)."""
    lowered = name.lower()
    if lowered.endswith(PICKLE_SUFFIXES):
        raise UnsafeCheckpoint(f"The checkpoint contains '{name}'. {CONVERT_HINT}")
    if lowered.endswith(ARCHIVE_SUFFIXES):
        raise UnsafeCheckpoint(
            f"The checkpoint contains the archive '{name}'; nested archives are not accepted. "
            "Zip the checkpoint folder itself."
        )
    if name not in ALLOWED_FILES:
        raise CheckpointError(
            f"The checkpoint contains '{name}', which is not part of the format "
            f"({', '.join(ALLOWED_FILES)}). Remove it."
        )


def _central_directory_size(f: BinaryIO) -> int:
    """Bytes of the zip's central directory, read from its end record before zipfile parses it."""
    end = f.seek(0, io.SEEK_END)
    tail_start = max(0, end - (22 + 65535 + 20))
    f.seek(tail_start)
    tail = f.read()
    at = tail.rfind(_END_RECORD)
    if at < 0 or len(tail) - at < 22:
        raise CheckpointError("The upload is not a valid zip archive (no end-of-archive record).")
    entries, size = struct.unpack("<HL", tail[at + 10 : at + 16])
    if entries == 0xFFFF or size == 0xFFFFFFFF:  # zip64: the real numbers are further back
        locator = tail[at - 20 : at] if at >= 20 else b""
        if locator[:4] != _ZIP64_LOCATOR:
            raise CheckpointError("The upload is not a valid zip archive (broken zip64 record).")
        (record_at,) = struct.unpack("<Q", locator[8:16])
        f.seek(record_at)
        record = f.read(56)
        if record[:4] != _ZIP64_END_RECORD or len(record) < 56:
            raise CheckpointError("The upload is not a valid zip archive (broken zip64 record).")
        (size,) = struct.unpack("<Q", record[40:48])
    return size


class CheckpointFiles:
    """A checkpoint's files, checked by name and declared size; read lazily, with caps.

    Use as a context manager (a zip given as a path keeps its file open until closed).
    """

    def __init__(self, sizes: dict[str, int], opener, closer=lambda: None) -> None:
        self._sizes = sizes
        self._open = opener
        self._close = closer

    @classmethod
    def open(cls, source: Path | str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES):
        """The files of a checkpoint folder, a zip file or zip bytes, checked by their headers."""
        if isinstance(source, bytes):
            return cls._from_zip(io.BytesIO(source), max_bytes)
        path = Path(source)
        if path.is_dir():
            return cls._from_folder(path, max_bytes)
        if not path.is_file():
            raise CheckpointError(f"No checkpoint at {path}.")
        if path.suffix.lower() != ".zip":
            check_name(path.name)
            raise CheckpointError(
                f"{path.name} is a single file; a checkpoint is a folder or a .zip of one."
            )
        size = path.stat().st_size
        if size > max_bytes:
            shown, cap = describe_sizes(size, max_bytes)
            raise CheckpointError(f"The checkpoint is {shown}; the limit is {cap}.")
        return cls._from_zip(open(path, "rb"), max_bytes)

    @classmethod
    def _from_folder(cls, path: Path, max_bytes: int) -> CheckpointFiles:
        sizes = {}
        for entry in sorted(path.iterdir()):
            if entry.is_symlink():
                raise UnsafeCheckpoint(f"'{entry.name}' in the checkpoint is a symbolic link.")
            if entry.is_dir():
                raise CheckpointError(
                    f"The checkpoint holds the folder '{entry.name}'; the format is flat."
                )
            check_name(entry.name)
            sizes[entry.name] = entry.stat().st_size
        _check_total(sizes, max_bytes)
        return cls(sizes, lambda name: open(path / name, "rb"))

    @classmethod
    def _from_zip(cls, f: BinaryIO, max_bytes: int) -> CheckpointFiles:
        try:
            if _central_directory_size(f) > MAX_CENTRAL_DIRECTORY:
                raise CheckpointError(
                    "The zip's table of contents is larger than a checkpoint's can be; a "
                    f"checkpoint holds at most {MAX_ENTRIES} files."
                )
            f.seek(0)
            archive = zipfile.ZipFile(f)
        except zipfile.BadZipFile as e:
            f.close()
            raise CheckpointError(f"The upload is not a valid zip archive ({e}).") from e
        except BaseException:
            f.close()
            raise
        try:
            members = _checked_members(archive, max_bytes)
        except BaseException:
            archive.close()
            f.close()
            raise

        def close() -> None:
            archive.close()
            f.close()

        return cls(
            {name: info.file_size for name, info in members.items()},
            lambda name: archive.open(members[name]),
            close,
        )

    def __enter__(self) -> CheckpointFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the underlying file."""
        self._close()

    @property
    def names(self) -> tuple[str, ...]:
        """The checkpoint's file names."""
        return tuple(self._sizes)

    def __contains__(self, name: str) -> bool:
        return name in self._sizes

    def size(self, name: str) -> int:
        """Declared (zip) or actual (folder) size of one file."""
        return self._sizes[name]

    def read(self, name: str, *, limit: int | None = None, prefix: int | None = None) -> bytes:
        """One file's bytes (or its first ``prefix`` bytes), at most ``limit`` of them.

        Raises:
            CheckpointError: the file is missing, larger than ``limit``, or does not match
                what its zip entry declares (size or CRC).
        """
        if name not in self._sizes:
            raise CheckpointError(f"The checkpoint lacks {name}. {CONVERT_HINT}")
        size = self._sizes[name]
        if limit is not None and size > limit and prefix is None:
            shown, cap = describe_sizes(size, limit)
            raise CheckpointError(f"{name} is {shown}; it may be at most {cap}.")
        want = size if prefix is None else min(prefix, size)
        try:
            with self._open(name) as member:
                data = member.read(want)
                if prefix is None and member.read(1):
                    raise UnsafeCheckpoint(f"The zip entry '{name}' is larger than it declares.")
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as e:
            raise CheckpointError(
                f"The zip entry '{name}' cannot be read ({e}); zip the checkpoint again "
                "without encryption (stored or deflated)."
            ) from e
        if len(data) != want:
            raise CheckpointError(f"'{name}' is shorter than it declares; the upload is damaged.")
        return data

    def verify(self) -> str:
        """Read every file through in chunks: sizes and CRCs must match their declarations.

        Memory stays at one chunk whatever the archive holds. Returns the checkpoint's content
        digest: SHA-256 over its files' names, sizes and bytes in name order, the same for a
        folder and for any zip of it (nested in a folder or not, stored or deflated).
        """
        digest = hashlib.sha256()
        for name, size in sorted(self._sizes.items()):
            digest.update(f"{name}\0{size}\0".encode())
            seen = 0
            try:
                with self._open(name) as member:
                    while chunk := member.read(CHUNK):
                        digest.update(chunk)
                        seen += len(chunk)
                        if seen > size:
                            raise UnsafeCheckpoint(
                                f"The zip entry '{name}' is larger than it declares."
                            )
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as e:
                raise CheckpointError(
                    f"The zip entry '{name}' is damaged ({e}); zip the checkpoint again."
                ) from e
            if seen != size:
                raise CheckpointError(
                    f"'{name}' is shorter than it declares; the upload is damaged."
                )
        return digest.hexdigest()


def _checked_members(archive: zipfile.ZipFile, max_bytes: int) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise CheckpointError(
            f"The zip holds {len(infos)} entries; a checkpoint has at most {len(ALLOWED_FILES)} "
            "files. Zip only the checkpoint folder."
        )
    entries = [i for i in infos if not i.is_dir()]
    for info in entries:
        path = info.filename
        if path.startswith(("/", "\\")) or ".." in Path(path).parts or "\\" in path or ":" in path:
            raise UnsafeCheckpoint(f"The zip entry '{path}' points outside the checkpoint folder.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeCheckpoint(f"The zip entry '{path}' is a symbolic link; links are refused.")
        check_name(path.rsplit("/", 1)[-1])
    names = [i.filename.rsplit("/", 1)[-1] for i in entries]
    if len(set(names)) < len(names):
        raise CheckpointError("The zip holds the same file name twice; keep one of each.")
    folders = {i.filename.rsplit("/", 1)[0] if "/" in i.filename else "" for i in entries}
    if len(folders) > 1 or any("/" in folder for folder in folders):
        raise CheckpointError(
            "The zip must hold the checkpoint files at its top or inside one folder; found "
            f"them in {len(folders)} places, e.g. '{entries[-1].filename}'."
        )
    members = {info.filename.rsplit("/", 1)[-1]: info for info in entries}
    _check_total({name: info.file_size for name, info in members.items()}, max_bytes)
    return members


def _check_total(sizes: dict[str, int], max_bytes: int) -> None:
    total = sum(sizes.values())
    if total > max_bytes:
        shown, cap = describe_sizes(total, max_bytes)
        raise CheckpointError(f"The checkpoint unpacks to {shown}; the limit is {cap}.")
