"""A database written by version 1 (committed in tests/data) opens, migrated, with every row."""

from __future__ import annotations

import shutil

from sqlalchemy import inspect, select

from evaluation.worker import Worker
from leaderboard.board import build_board
from leaderboard.paper import seed_paper_rows
from leaderboard.publication import release_pending
from settings import REPO_ROOT, Settings
from submissions.tables import Job, Submission, open_store

VERSION_1 = REPO_ROOT / "tests" / "data" / "leaderboard-v1.db"


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
    Worker(settings).upkeep.seed()
    assert any(e.model_name == "old model" for e in build_board(open_store(settings.database_url)))
