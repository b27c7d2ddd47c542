"""Uploads stored by content: ``MITOSIS_DATA_DIR/uploads/<sha[:2]>/<sha256><suffix>``.

Files are hashed and copied in chunks, so a 2 GB checkpoint never sits in memory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fileio import atomic_copy

CHUNK = 2**20


def sha256(source: Path | str | bytes) -> str:
    """Hex SHA-256 of a file (read in chunks) or of bytes."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def stored_path(root: Path, digest: str, suffix: str) -> Path:
    """Where the upload with this hash lives."""
    return Path(root) / digest[:2] / f"{digest}{suffix}"


def store_file(root: Path, source: Path | str | bytes, digest: str, suffix: str) -> bool:
    """Write ``source`` under its hash, atomically; returns False when a copy was there already."""
    path = stored_path(root, digest, suffix)
    if path.is_file():
        return False
    atomic_copy(source, path)
    return True
