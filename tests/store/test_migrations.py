"""Migrations (Alembic): version 1 (committed in tests/data) opens migrated with every row; the
revisions from empty build the same schema as a fresh database; concurrent openers agree."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, select, text

from leaderboard.board import build_board
from leaderboard.paper import seed_paper_rows
from leaderboard.publication import release_pending
from settings import REPO_ROOT, Settings
from store.clock import store_now
from store.engine import alembic_config, open_store
from store.locks import STANDINGS, hold_lock
from store.schema import Account, Base, Job, Lock, Submission
from submissions.jobs import public_row
from worker import Worker

VERSION_1 = REPO_ROOT / "tests" / "data" / "leaderboard-v1.db"
# version 1 opened by the last version before Alembic (commit ed0fd14): its own migration added
# the newer columns as optional and left them empty in the old rows
VERSION_2 = REPO_ROOT / "tests" / "data" / "leaderboard-v2.db"


def test_a_version_1_database_is_migrated_in_place(tmp_path):
    path = tmp_path / "leaderboard.db"
    shutil.copy(VERSION_1, path)
    sessions = open_store(f"sqlite:///{path}")
    columns = {c["name"] for c in inspect(sessions.kw["bind"]).get_columns("submissions")}
    assert "meta" in columns and not {"model_name", "team", "source"} & columns
    with sessions() as session:
        old = session.scalar(select(Submission).where(Submission.user == "alice"))
        assert old.entry.model_name == "old model" and old.entry.team == "old team"
        assert old.entry.method_type == "LoRA" and old.entry.description == "written by version 1"
        assert old.source == "self-reported"
        assert session.scalar(select(Job.counts_toward_quota).where(Job.submission_id == old.id))
        assert session.query(Submission).filter(Submission.kind == "paper").count() == 17
    assert seed_paper_rows(sessions) == 0  # the paper's rows were there already
    settings = Settings.from_env({"MITOSIS_RELEASE_FLOOR": "0.5"})
    assert release_pending(sessions, settings) == 1  # the old result, under today's policy
    entry = next(e for e in build_board(sessions) if e.model_name == "old model")
    assert abs(entry.scores["atnorm_br"]["ba"] - 0.79) <= 0.011  # rounded, with its offset
    assert "brier" not in entry.scores["atnorm_br"]
    assert entry.scores["amibr_test"]["brier"] == 0.1234567
    assert sum(e.source == "paper" for e in build_board(sessions)) == 17
    open_store(f"sqlite:///{path}")  # opening again changes nothing


def test_a_worker_starts_on_a_version_1_database(tmp_path, real_release):
    path = tmp_path / "leaderboard.db"
    shutil.copy(VERSION_1, path)
    settings = Settings.from_env(
        {
            "MITOSIS_DATA_DIR": str(real_release.data_dir),
            "MITOSIS_DATABASE_URL": f"sqlite:///{path}",
            "MITOSIS_QUEUE_URL": f"sqlite:///{tmp_path / 'queue.db'}",
        }
    )
    Worker(settings).maintenance.seed()
    assert any(e.model_name == "old model" for e in build_board(open_store(settings.database_url)))


def schema_differences(url: str) -> list:
    """What Alembic's autogenerate finds between the database at ``url`` and the schema."""
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    return differences


def current_revision(url: str) -> str:
    engine = create_engine(url)
    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    engine.dispose()
    return revision


@pytest.mark.parametrize("written_by", [VERSION_1, VERSION_2], ids=lambda p: p.stem)
def test_a_database_written_before_alembic_gets_exactly_the_schema(tmp_path, written_by, caplog):
    caplog.set_level(logging.INFO, logger="store")
    url = f"sqlite:///{tmp_path / 'leaderboard.db'}"
    shutil.copy(written_by, tmp_path / "leaderboard.db")
    sessions = open_store(url)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert current_revision(url) == head
    assert f"upgraded the database {url} from 0001 to {head}" in caplog.text
    assert schema_differences(url) == []
    with sessions() as session:
        job = session.scalar(select(Job))
        assert (job.lane, job.estimated_s, job.progress_total) == ("files", 0.0, 0)
        row = public_row(job, own=False, now=store_now(session))  # the queue view reads it whole
        assert row["lane"] == "files"


@pytest.mark.parametrize(
    "database",
    ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)],  # a real server
)
def test_the_migrations_from_empty_build_the_schema_create_all_builds(database, tmp_path, request):
    if database == "sqlite":
        url, fresh = (f"sqlite:///{tmp_path / name}" for name in ("stepwise.db", "fresh.db"))
    else:
        server = request.getfixturevalue("postgres")
        url, fresh = (server.create_database(f"{name}_{tmp_path.name}") for name in ("a", "b"))
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")
    engine.dispose()
    assert schema_differences(url) == []
    open_store(fresh)  # created with create_all and stamped
    assert current_revision(fresh) == current_revision(url)
    assert schema_differences(fresh) == []


def test_named_locks_are_not_accounts(tmp_path):
    path = tmp_path / "leaderboard.db"
    shutil.copy(VERSION_1, path)
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:  # what version 2 wrote: locks as account rows
        command.stamp(alembic_config(connection), "0001")
        command.upgrade(alembic_config(connection), "0002")
        for name in ("(standings)", "(re-scoring)", "alice"):
            connection.execute(text("INSERT INTO accounts (user) VALUES (:n)"), {"n": name})
    engine.dispose()
    sessions = open_store(f"sqlite:///{path}")
    with sessions() as session:
        hold_lock(session, STANDINGS)
        session.commit()
        assert session.scalars(select(Account.user)).all() == ["alice"]
        assert session.scalars(select(Lock.name)).all() == [STANDINGS]


def test_two_processes_opening_a_new_database_at_once_both_succeed(tmp_path):
    url = f"sqlite:///{tmp_path / 'leaderboard.db'}"
    code = f"from store.engine import open_store; open_store({url!r}); print('ok')"
    openers = [
        subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    assert [p.communicate(timeout=120)[0].strip() for p in openers] == [b"ok"] * 3
    assert schema_differences(url) == []
