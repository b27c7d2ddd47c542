from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from evaluation.worker import Worker
from leaderboard.board import build_board
from leaderboard.export import board_rows, to_csv, to_json
from leaderboard.hub import HubSyncError, start_hub_sync
from leaderboard.paper import paper_rows
from leaderboard.ranking import Entry, rank_entries
from settings import Settings
from submissions.metadata import EntryMetadata
from tests.backend import Backend


@pytest.fixture
def scored(tmp_path):
    """A backend whose entries were scored by the worker's own code, in this process."""
    backend = Backend(tmp_path)
    worker = Worker(backend.settings)
    worker.seed()
    truth = pd.read_csv(backend.settings.labels_dir / "labels.csv")
    y = (truth["label"] == "atypical").to_numpy()

    def submit(user, name, team, flip_rate, seed, high=0.9):
        rng = np.random.default_rng(seed)
        wrong = rng.random(len(y)) < flip_rate
        prob = np.where(y ^ wrong, high, 0.1)
        data = truth[["image_id"]].assign(prob_atypical=prob).to_csv(index=False).encode()
        view = backend.service.submit_predictions(user, data, EntryMetadata(name, team=team))
        worker.run_job(view.job_id)

    submit("alice", "perfect", "A", 0.0, 0)
    submit("bob", '=HYPERLINK("http://x")', "B", 0.0, 1, high=0.8)  # the same decisions
    submit("carol", "coin", "C", 0.5, 2)
    submit("alice", "alice's second", "A", 0.3, 3)
    with backend.sessions() as session:
        from leaderboard.store import Job

        for job in session.query(Job).filter(Job.status == "queued"):
            worker.run_job(job.id)  # the shipped model
    return backend


def test_board_ranks_by_hidden_mean_and_marks_ties(scored):
    board = build_board(scored.sessions, scored.settings.labels_dir, n_resamples=1000)
    assert len(board) == 17 + 5
    means = [e.hidden_mean_ba for e in board]
    assert means == sorted(means, reverse=True)
    by_name = {e.model_name: e for e in board}
    assert by_name["perfect"].rank == 1 and by_name["perfect"].tied_with_first == "reference"
    assert by_name['=HYPERLINK("http://x")'].tied_with_first == "yes"
    assert by_name["coin"].tied_with_first == "no"
    assert all(e.tied_with_first == "n/a" for e in board if e.source == "paper")
    assert {e.source for e in board} == {"paper", "self-reported", "verified"}
    swin = by_name["Swin-B (end-to-end)"]
    assert swin.results["atnorm_md"].ba == 0.7723 and swin.results["atnorm_md"].ba_std == 0.0142


def test_equal_scores_share_a_rank():
    entries = [
        Entry(i, f"m{i}", "", "", "paper", "", "", "", "", False, "", "", "", None)
        for i in range(3)
    ]
    for entry, ba in zip(entries, (0.8, 0.7, 0.8), strict=True):
        entry.results = {
            s: type("R", (), {"ba": ba, "decisions": None})() for s in ("atnorm_br", "atnorm_md")
        }
    ranked = rank_entries(entries, None)
    assert [e.rank for e in ranked] == [1, 1, 3]


def test_best_entry_per_team(scored):
    board = build_board(
        scored.sessions, scored.settings.labels_dir, per_team=True, n_resamples=1000
    )
    teams = [e.team or e.user for e in board]
    assert len(teams) == len(set(teams))
    assert "alice's second" not in {e.model_name for e in board}


def test_exports_are_aggregate_safe_and_complete(scored):
    rows = board_rows(build_board(scored.sessions, scored.settings.labels_dir, n_resamples=1000))
    csv_text = to_csv(rows)
    assert "'=HYPERLINK" in csv_text and "\n=HYPERLINK" not in csv_text
    parsed = json.loads(to_json(rows))
    assert len(parsed) == 22
    first = parsed[0]
    for key in (
        "atnorm_br_ba_low",
        "atnorm_md_auroc_high",
        "sha256",
        "label_set_hash",
        "scorer_version",
        "versions",
        "scored_at",
        "tied_with_first",
    ):
        assert key in first
    # aggregates only: no per-crop field anywhere, every value a scalar
    assert all(not isinstance(v, (list, dict, bytes)) for row in parsed for v in row.values())
    assert not any("decision" in key or "image" in key for key in first)


def test_job_views_hold_aggregates_only(scored):
    for view in scored.service.my_submissions("alice"):
        assert set(view.to_dict()) == {
            "job_id",
            "model_name",
            "kind",
            "source",
            "status",
            "reason",
            "queue_position",
            "created_at",
            "balanced_accuracy",
        }
        assert all(isinstance(v, float) for v in view.balanced_accuracy.values())


def test_paper_rows_are_the_published_table(scored):
    assert len(paper_rows()) == 17
    worker = Worker(scored.settings)
    worker.seed()  # idempotent
    board = build_board(scored.sessions, scored.settings.labels_dir, n_resamples=1000)
    assert sum(e.source == "paper" for e in board) == 17


def test_sqlite_store_runs_in_wal_mode(scored):
    with scored.sessions() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_hub_sync_is_off_unless_configured_and_refuses_offline(tmp_path):
    assert start_hub_sync(Settings.from_env({"MITOSIS_DATA_DIR": str(tmp_path)})) is None
    configured = Settings.from_env(
        {
            "MITOSIS_DATA_DIR": str(tmp_path),
            "MITOSIS_HUB_RESULTS_REPO": "org/results",
            "HF_TOKEN": "hf_x",
        }
    )
    with pytest.raises(HubSyncError, match="HF_HUB_OFFLINE is set.*org/results"):
        start_hub_sync(configured)
