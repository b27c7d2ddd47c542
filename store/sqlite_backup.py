"""A consistent copy of a SQLite database while the app and its workers keep writing.

Copying the file itself can catch a write half done (and misses what is still in the WAL);
SQLite's online backup API copies page by page from one read transaction, so the copy is the
database at one moment. PostgreSQL has its own tool, ``pg_dump``; this module says so.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from store.engine import shown_url
from store.errors import BackupRefused


def sqlite_file(url: str) -> Path:
    """The SQLite database file ``url`` names; ``BackupRefused`` for any other database."""
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise BackupRefused("MITOSIS_DATABASE_URL is not a database URL.") from e
    if parsed.get_backend_name() != "sqlite":
        raise BackupRefused(
            f"The database is {shown_url(url)}, and --backup copies a SQLite database: nothing "
            "was copied. Back the database up with its server's own tool (pg_dump for "
            "PostgreSQL), and copy MITOSIS_DATA_DIR/uploads and the label store "
            "(MITOSIS_LABELS_DIR, by default MITOSIS_DATA_DIR/private)."
        )
    source = Path(parsed.database or "")
    if not source.is_file():
        raise BackupRefused(f"No SQLite database at {source}.")
    return source


def backup_database(url: str, dest: Path) -> Path:
    """Copy the SQLite database at ``url`` to the new file ``dest``; returns ``dest``.

    The copy is checked (``PRAGMA integrity_check``) before it takes its name, so ``dest``
    is either a whole database or absent; an existing ``dest`` is never overwritten.
    """
    source = sqlite_file(url)
    dest = Path(dest)
    if dest.exists():
        raise BackupRefused(f"{dest} already exists; a backup never overwrites a file.")
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        with closing(sqlite3.connect(source, timeout=30)) as live:
            with closing(sqlite3.connect(partial)) as copy:
                live.backup(copy)
                (verdict,) = copy.execute("PRAGMA integrity_check").fetchone()
    except sqlite3.Error as e:  # locked for over 30 s, or not a database
        partial.unlink(missing_ok=True)
        raise BackupRefused(f"Cannot copy {source} ({e}); nothing was written.") from e
    if verdict != "ok":
        partial.unlink()
        raise BackupRefused(f"The copy of {source} failed its integrity check ({verdict}).")
    os.replace(partial, dest)
    return dest
