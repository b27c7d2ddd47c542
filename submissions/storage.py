"""Uploads stored by content: ``MITOSIS_DATA_DIR/uploads/<sha[:2]>/<sha256><suffix>``."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def store_bytes(root: Path, data: bytes, suffix: str) -> Path:
    """Write ``data`` under its hash, atomically; an existing copy is kept."""
    digest = sha256(data)
    path = Path(root) / digest[:2] / f"{digest}{suffix}"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
