"""python -m worker --backup: the database at one moment, the uploads and the label store."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import inspect, make_url

from settings import Settings
from store.engine import open_store
from store.entry import EntryMetadata
from store.errors import BackupRefused
from store.schema import Job, JobStatus
from store.sqlite_backup import backup_database
from tests.backend import Backend
from worker import Worker
from worker.__main__ import main as worker_main
from worker.backup import backup


def test_a_backup_is_the_database_at_one_moment_with_uploads_and_labels(
    tmp_path, monkeypatch, capsys
):
    backend = Backend(tmp_path)
    view = backend.service.submit_predictions("alice", backend.predictions(1), EntryMetadata("m"))
    Worker(backend.settings).run_job(view.job_id)
    for name, value in backend.env.items():
        monkeypatch.setenv(name, value)
    live = make_url(backend.settings.database_url).database
    writer = sqlite3.connect(live)  # a write half done while the backup runs
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE half_done (x)")
    folder = tmp_path / "backups"
    try:
        assert worker_main(["--backup", str(folder)]) == 0
    finally:
        writer.rollback()
        writer.close()
    said = capsys.readouterr().out
    assert "1 new upload(s) copied" in said and "label store copied" in said
    (copy,) = folder.glob("leaderboard-*.db")
    assert "half_done" not in inspect(open_store(f"sqlite:///{copy}").kw["bind"]).get_table_names()
    with open_store(f"sqlite:///{copy}")() as session:
        assert session.get(Job, view.job_id).status == JobStatus.FINISHED
    labels = backend.settings.labels_dir / "labels.csv"
    assert (folder / "private" / "labels.csv").read_bytes() == labels.read_bytes()
    assert folder.stat().st_mode & 0o777 == 0o700  # it holds the hidden labels
    assert {p.stat().st_mode & 0o777 for p in folder.rglob("*") if p.is_file()} == {0o600}
    (backend.settings.data_dir / "uploads" / ".upload.zip.x1.zip").write_bytes(b"half")
    assert worker_main(["--backup", str(folder)]) == 0  # again: a second copy, no new upload
    assert "0 new upload(s) copied" in capsys.readouterr().out
    assert len(list(folder.glob("leaderboard-*.db"))) == 2
    assert not list(folder.rglob(".upload*"))  # a file being written is not an upload yet
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    assert worker_main(["--backup", str(shared)]) == 2
    assert "is open to other users; a backup holds the hidden labels" in capsys.readouterr().err


def test_a_backup_refuses_what_it_cannot_copy(tmp_path):
    with pytest.raises(BackupRefused, match="pg_dump for PostgreSQL") as refused:
        backup_database("postgresql+psycopg://u:secret@db.lab/board", tmp_path / "b.db")
    assert "secret" not in str(refused.value)
    postgres = Settings.from_env(
        {"MITOSIS_DATA_DIR": str(tmp_path), "MITOSIS_DATABASE_URL": "postgresql://u@db.lab/b"}
    )
    with pytest.raises(
        BackupRefused,
        match="nothing was copied. .* copy MITOSIS_DATA_DIR/uploads and the label store",
    ):
        backup(postgres, tmp_path / "backup")
    assert not (tmp_path / "backup").exists()  # refused before a folder is made
    with pytest.raises(BackupRefused, match="No SQLite database at"):
        backup_database(f"sqlite:///{tmp_path / 'none.db'}", tmp_path / "b.db")
    (tmp_path / "b.db").write_text("mine")
    sqlite3.connect(tmp_path / "live.db").close()
    with pytest.raises(BackupRefused, match="already exists; a backup never overwrites"):
        backup_database(f"sqlite:///{tmp_path / 'live.db'}", tmp_path / "b.db")
    assert (tmp_path / "b.db").read_text() == "mine"
