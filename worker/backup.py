"""``python -m worker --backup FOLDER``: what a deployment cannot rebuild, copied while it runs.

The database (submissions, jobs, results, the release policy's decisions and the key of its
offsets: without it every released number would change), the stored uploads (by content hash,
so a repeated backup into the same folder copies only new ones) and the private label store.
The public release is rebuilt from the source (its ids come back with the label store's key).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fileio import atomic_copy, replace_folder, staged_folder
from settings import Settings
from store.errors import BackupRefused
from store.sqlite_backup import backup_database, sqlite_file


def backup(settings: Settings, folder: Path) -> str:
    """Copy the database, the uploads and the label store into ``folder``; what was copied.

    ``folder`` is made owner-only, or must be already: it holds the hidden labels. Every file
    is written under a temporary name and renamed when whole, owner-only.
    """
    folder = Path(folder)
    sqlite_file(settings.database_url)  # refused before a folder is made
    if folder.exists() and folder.stat().st_mode & 0o077:
        raise BackupRefused(
            f"{folder} is open to other users; a backup holds the hidden labels: give a new "
            "folder, or one only you can read (chmod 700)."
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name, n = f"leaderboard-{stamp}.db", 1
    while (folder / name).exists():  # two backups within a second
        n += 1
        name = f"leaderboard-{stamp}-{n}.db"
    database = backup_database(settings.database_url, folder / name)
    database.chmod(0o600)
    uploads = settings.data_dir / "uploads"
    copied = 0
    for source in sorted(uploads.rglob("*")) if uploads.is_dir() else []:
        relative = source.relative_to(uploads)
        if not source.is_file() or any(part.startswith(".") for part in relative.parts):
            continue  # a file being written (atomic writes, Hub fetches) is not an upload yet
        target = folder / "uploads" / relative
        if not target.exists() or target.stat().st_size != source.stat().st_size:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_copy(source, target)
            copied += 1
    labels = settings.labels_dir
    if labels.is_dir():
        with staged_folder(folder / "private", 0o700) as staged:
            for item in labels.iterdir():
                if item.is_file():
                    atomic_copy(item, staged / item.name)
            replace_folder(staged, folder / "private")
    return (
        f"database copied to {database}; {copied} new upload(s) copied to {folder / 'uploads'}; "
        + (f"label store copied to {folder / 'private'}" if labels.is_dir() else "no label store")
    )
