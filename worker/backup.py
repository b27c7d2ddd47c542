"""``python -m worker --backup FOLDER``: what a deployment cannot rebuild, copied while it runs.

The database (submissions, jobs, results, the release policy's decisions and the key of its
offsets: without it every released number would change), the stored uploads (by content hash,
so a repeated backup into the same folder copies only new ones) and the private label store.
The public release is rebuilt from the source (its ids come back with the label store's key).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from settings import Settings
from store.sqlite_backup import backup_database


def backup(settings: Settings, folder: Path) -> str:
    """Copy the database, the uploads and the label store into ``folder``; what was copied."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)  # it holds the hidden labels
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name, n = f"leaderboard-{stamp}.db", 1
    while (folder / name).exists():  # two backups within a second
        n += 1
        name = f"leaderboard-{stamp}-{n}.db"
    database = backup_database(settings.database_url, folder / name)
    uploads = settings.data_dir / "uploads"
    copied = 0
    for source in sorted(uploads.rglob("*")) if uploads.is_dir() else []:
        target = folder / "uploads" / source.relative_to(uploads)
        if source.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            copied += 1
    labels = settings.labels_dir
    if labels.is_dir():
        shutil.copytree(labels, folder / "private", dirs_exist_ok=True)
    return (
        f"database copied to {database}; {copied} new upload(s) copied to {folder / 'uploads'}; "
        + (f"label store copied to {folder / 'private'}" if labels.is_dir() else "no label store")
    )
