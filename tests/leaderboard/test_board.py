from __future__ import annotations

import json
import threading
from concurrent.futures import Future
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from datasets import load_dataset
from sqlalchemy import event, select, text, update

from evaluation.bundle import LabelStore
from evaluation.disclosure import RELEASE_NOISE, rank_intervals, round_hidden
from evaluation.metrics import reader_agreement
from leaderboard.board import build_board
from leaderboard.cards import entry_curves
from leaderboard.columns import BoardFilter, board_legend, display_table, filter_entries
from leaderboard.export import board_rows, to_csv, to_json
from leaderboard.hub import HubSync, HubSyncError, start_hub_sync
from leaderboard.paper import paper_rows
from leaderboard.publication import release_pending
from leaderboard.ranking import Entry, rank_entries
from settings import Settings
from store.entry import EntryMetadata
from store.schema import Job, Result, Standing, Submission
from submissions.receipts import job_report
from submissions.requests import request_rows
from tests.backend import Backend
from worker import Worker


@pytest.fixture
def scored(tmp_path):
    """A backend whose entries were scored by the worker's own code, in this process."""
    backend = Backend(tmp_path)
    worker = Worker(backend.settings)
    worker.maintenance.seed()
    truth = pd.read_csv(backend.settings.labels_dir / "labels.csv")
    y = (truth["label"] == "atypical").to_numpy()

    def submit(user, name, team, wrong, high=0.9):
        """Score a file whose decisions are wrong where ``wrong``; its submission id."""
        prob = np.where(y ^ wrong, high, 0.1)
        data = truth[["image_id"]].assign(prob_atypical=prob).to_csv(index=False).encode()
        view = backend.service.submit_predictions(user, data, EntryMetadata(name, team=team))
        worker.run_job(view.job_id)
        with backend.sessions() as session:
            return session.get(Job, view.job_id).submission_id

    none = np.zeros(len(y), bool)
    hidden = truth["split"].isin(["atnorm_br", "atnorm_md"]).to_numpy()
    backend.submit_file, backend.hidden_crops, backend.worker = submit, hidden, worker
    submit("alice", "perfect", "A", none)
    submit("bob", "twin", "B", none, high=0.8)  # the same decisions
    submit("carol", "inverted", "C", hidden)  # every hidden crop wrong: BA 0
    submit("alice", "alice's second", "A", hidden & (np.arange(len(y)) % 2 == 0))
    with backend.sessions() as session:
        for job in session.query(Job).filter(Job.status == "queued"):
            worker.run_job(job.id)  # the shipped model
    return backend


def test_board_ranks_by_released_hidden_mean(scored):
    board = build_board(scored.sessions)
    by_name = {e.model_name: e for e in board}
    ranked = [e for e in board if e.rank is not None]
    means = [e.hidden_mean_ba for e in ranked]
    assert means == sorted(means, reverse=True)
    assert by_name["perfect"].rank == by_name["twin"].rank == 1  # equal decisions, equal values
    assert by_name["perfect"].scores["atnorm_br"]["ba"] in (0.99, 1.0)  # 1 with its offset
    swin = by_name["Swin-B (end-to-end)"]
    assert swin.scores["atnorm_md"] == {"ba": 0.7723, "ba_std": 0.0142, "auroc": 0.8806}
    # ranked and shown at the released precision, dated with the paper, not with today
    assert swin.hidden_mean_ba == (0.78 + 0.77) / 2
    row = display_table(board).set_index("model").loc["Swin-B (end-to-end)"]
    assert row["AtNorM-MD BA"] == "0.77 ± 0.01" and row["AMi-Br test BA"] == "0.8052 ± 0.0124"
    assert swin.provenance["scored_at"].startswith("2026-03-12")
    assert {e.source for e in board} == {"paper", "self-reported", "verified", "pathologist"}


def test_tested_entries_get_rank_intervals_and_paper_rows_say_why_not(scored):
    truth = pd.read_csv(scored.settings.labels_dir / "labels.csv")
    normal_br = np.flatnonzero((truth["split"] == "atnorm_br") & (truth["label"] == "normal"))
    two_wrong = np.isin(np.arange(len(truth)), normal_br[:2])  # AtNorM-Br BA 0.67, MD 1
    scored.submit_file("dave", "dave's", "D", two_wrong)
    board = build_board(scored.sessions)
    by_name = {e.model_name: e for e in board}
    perfect, twin, dave = by_name["perfect"], by_name["twin"], by_name["dave's"]
    # three tested entries: two perfect ones (the same decisions) and dave's, 0.165 behind:
    # more than the margin (0.09 on this tiny release) and the rounding slack
    assert abs(dave.hidden_mean_ba - 0.835) <= RELEASE_NOISE + 0.005
    assert perfect.rank_range == twin.rank_range == (1, 2)
    assert perfect.top_group and twin.top_group
    assert dave.rank_range == (3, 3) and dave.top_group is False
    assert {perfect.ranked_among, dave.ranked_among} == {4}  # and the shipped model
    margin = dave.rank_margin
    assert 0 < margin < 0.155 and round(margin * 100) == pytest.approx(margin * 100)
    assert "Rank 3-3 of 4 tested entries" in dave.comparison
    swin = by_name["Swin-B (end-to-end)"]
    assert swin.rank >= 4 and swin.rank_range is None and swin.top_group is None
    assert "mean of 5 fold models" in swin.comparison
    assert "no confidence interval" in swin.comparison
    table = display_table(board)
    cells = dict(zip(table["model"], table["rank range (95 %)"], strict=True))
    assert cells["perfect"] == "1–2 of 4 tested · top group" and cells["dave's"] == "3 of 4 tested"
    assert cells["Swin-B (end-to-end)"] == "not tested (paper row)"
    assert cells["inverted"] == "withheld"


def test_rank_intervals_follow_from_released_values_alone(scored):
    """The leak budget: the rank columns add only the released margin to the released means."""
    scored.submit_file(
        "dave", "dave's", "D", scored.hidden_crops & (np.arange(len(scored.hidden_crops)) % 4 == 1)
    )
    rows = [r for r in board_rows(build_board(scored.sessions)) if r["rank_low"] is not None]
    (margin,) = {r["rank_margin"] for r in rows}
    assert round(margin * 100) == pytest.approx(margin * 100)
    means = {r["submission_id"]: r["hidden_mean_ba"] for r in rows}
    for split in ("atnorm_br", "atnorm_md"):  # the means are the released, rounded BAs
        assert all(r[f"{split}_ba"] == round_hidden(r[f"{split}_ba"]) for r in rows)
    derived = rank_intervals(means, margin)
    assert {r["submission_id"]: (r["rank_low"], r["rank_high"]) for r in rows} == derived


def test_a_withheld_scoring_leaves_the_standing_as_it_was(scored):
    def standings():
        with scored.sessions() as session:
            return session.scalars(select(Standing).order_by(Standing.id)).all()

    before = standings()
    thirds = scored.hidden_crops & (np.arange(len(scored.hidden_crops)) % 3 == 0)
    scored.submit_file("bob", "bob's worse one", "B", thirds)  # withheld: below bob's best
    assert [s.id for s in standings()] == [s.id for s in before]
    fifths = scored.hidden_crops & (np.arange(len(scored.hidden_crops)) % 5 == 0)
    dave = scored.submit_file("dave", "dave's", "D", fifths)  # released
    after = standings()
    assert len(after) == len(before) + 1
    assert after[-1].submission_ids == sorted([*before[-1].submission_ids, dave])
    scored.worker.update_standing()  # nothing changed: nothing written
    assert len(standings()) == len(after)
    scored.service.withdraw("dave", last_job_of(scored, dave))  # off the board, still compared
    assert scored.worker.export_if_changed()  # the heartbeat after a withdrawal
    assert len(standings()) == len(after)  # no new margin: a withdrawal reads no label
    assert dave not in {e.submission_id for e in build_board(scored.sessions)}


def last_job_of(scored, submission_id: int) -> int:
    with scored.sessions() as session:
        return session.get(Submission, submission_id).jobs[-1].id


def test_the_ladder_withholds_what_does_not_beat_the_account_s_best(scored):
    board = build_board(scored.sessions)
    by_name = {e.model_name: e for e in board}
    for name in ("inverted", "alice's second"):  # below chance; below alice's best
        entry = by_name[name]
        assert entry.withheld and entry.rank is None and entry.rank_range is None
        assert set(entry.scores) == {"amibr_test"} and "withheld" in entry.disclosure
    withheld = [e for e in board if e.withheld]
    assert board[-len(withheld) :] == sorted(withheld, key=lambda e: e.submission_id)
    table = display_table(board)
    second = table[table["model"] == "alice's second"].iloc[0]
    assert second["rank"] == "" and second["AtNorM-Br BA"] == second["hidden mean BA"] == "withheld"
    with scored.sessions() as session:  # the full-precision numbers are kept, not shown
        rows = session.scalars(
            select(Result).where(Result.split == "atnorm_br", Result.published.is_(None))
        ).all()
    assert len(rows) == len(withheld) and all(r.ba is not None and r.brier for r in rows)


def test_an_entry_scored_while_the_board_is_read_does_not_break_it(scored):
    """The board reads in several statements, each seeing what was committed before it; an
    entry scored between them (the worker is always writing) waits for the next read."""
    engine = scored.sessions.kw["bind"]
    during = []

    def score_one_more(*_):
        if not during:  # after the board's first statement, once
            during.append(None)  # the scoring's own statements come here too
            wrong = scored.hidden_crops & (np.arange(len(scored.hidden_crops)) % 3 == 0)
            during[0] = scored.submit_file("dave", "meanwhile", "D", wrong)

    event.listen(engine, "after_cursor_execute", score_one_more)
    try:
        board = build_board(scored.sessions)
    finally:
        event.remove(engine, "after_cursor_execute", score_one_more)
    assert during and during[0] not in {e.submission_id for e in board}
    assert during[0] in {e.submission_id for e in build_board(scored.sessions)}


def test_equal_scores_share_a_rank():
    entries = [Entry(i, "paper", EntryMetadata(f"m{i}")) for i in range(3)]
    for entry, ba in zip(entries, (0.8, 0.7, 0.8), strict=True):
        entry.scores = {s: {"ba": ba} for s in ("atnorm_br", "atnorm_md")}
    ranked = rank_entries(entries)
    assert [e.rank for e in ranked] == [1, 1, 3]
    assert [e.submission_id for e in ranked] == [0, 2, 1]  # equal values: by entry id


def test_best_entry_per_team(scored):
    board = filter_entries(build_board(scored.sessions), BoardFilter(per_team=True))
    teams = [e.team or e.user for e in board if e.source != "pathologist"]
    assert len(teams) == len(set(teams))
    assert "alice's second" not in {e.model_name for e in board}


def test_exports_hold_released_numbers_only(scored):
    rows = board_rows(build_board(scored.sessions))
    parsed = json.loads(to_json(rows))
    assert len(parsed) == 17 + 5 + 5  # paper rows, submissions, pathologists
    first = parsed[0]
    for key in ("atnorm_br_ba_low", "sha256", "label_set_hash", "scorer_version", "scored_at"):
        assert key in first
    for row in parsed:
        if row["source"] == "paper":
            continue
        for split in ("atnorm_br", "atnorm_md"):
            for metric in ("sensitivity", "specificity", "auroc", "brier", "ece"):
                assert row[f"{split}_{metric}"] is None
            ba = row[f"{split}_ba"]
            assert ba is None or ba == round_hidden(ba)
        if row["source"] != "pathologist":  # the public split keeps everything
            assert row["amibr_test_brier"] is not None
    assert all(not isinstance(v, (list, dict, bytes)) for row in parsed for v in row.values())
    assert not any("decision" in key or "image" in key or "p_vs" in key for key in first)
    assert "\n=" not in to_csv(rows)


def test_job_reports_hold_released_numbers_only(scored):
    views = [job_report(scored.sessions, v) for v in scored.service.my_submissions("alice")]
    assert set(views[0]) == {
        "job_id",
        "model_name",
        "kind",
        "source",
        "status",
        "reason",
        "lane",
        "queue_position",
        "ahead",
        "created_at",
        "scores",
        "disclosure",
        "progress",
        "notice",
        "hub_model",
        "scope",
        "withdrawn",
        "taken_down",
    }
    second, perfect = views
    assert perfect["disclosure"] == "released"
    assert perfect["scores"]["atnorm_md"] == {
        "ba": pytest.approx(perfect["scores"]["atnorm_md"]["ba"]),
        "ba_low": pytest.approx(perfect["scores"]["atnorm_md"]["ba_low"]),
        "ba_high": 1.0,
        "n": 7,
        "n_atypical": 3,
    }
    assert second["scores"]["atnorm_br"] is None and second["scores"]["atnorm_md"] is None
    assert "brier" in second["scores"]["amibr_test"]


def test_results_written_before_the_policy_are_released_at_start(scored):
    with scored.sessions.begin() as session:
        session.execute(update(Result).values(published=None).where(Result.job_id.is_not(None)))
        session.execute(update(Job).values(disclosure=""))
    assert release_pending(scored.sessions, scored.settings) == 5
    by_name = {e.model_name: e for e in build_board(scored.sessions)}
    assert by_name["perfect"].scores["atnorm_br"]["ba"] in (0.99, 1.0)
    assert by_name["alice's second"].withheld and by_name["inverted"].withheld


def test_paper_rows_are_the_published_table(scored):
    assert len(paper_rows()) == 17
    Worker(scored.settings).maintenance.seed()  # idempotent
    assert sum(e.source == "paper" for e in build_board(scored.sessions)) == 17


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


def test_a_hub_that_refuses_the_token_is_a_sentence(tmp_path, monkeypatch):
    def refused(**kwargs):  # CommitScheduler creates the repo first: the Hub answers here
        raise PermissionError("401 Client Error: Unauthorized")

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.CommitScheduler", refused)
    configured = Settings.from_env(
        {"MITOSIS_DATA_DIR": str(tmp_path), "MITOSIS_HUB_RESULTS_REPO": "org/r", "HF_TOKEN": "x"}
    )
    with pytest.raises(HubSyncError) as refusal:
        start_hub_sync(configured)
    assert str(refusal.value) == (
        "Cannot sync the results to org/r (PermissionError: 401 Client Error: Unauthorized). "
        "Check that HF_TOKEN may write there, and MITOSIS_HUB_RESULTS_REPO."
    )


def test_rescoring_replays_the_ladder_s_decisions(scored):
    def released():
        return {e.model_name: e.withheld for e in build_board(scored.sessions)}

    before = released()
    worker = Worker(scored.settings)
    assert worker.maintenance.rescore_all() == 5
    with scored.sessions() as session:
        queued = [j.id for j in session.query(Job).filter(Job.status == "queued")]
    for job_id in reversed(queued):  # any order: only earlier entries set the bar
        worker.run_job(job_id)
    assert released() == before


def test_the_hub_sync_writes_the_released_board(scored, tmp_path):
    class Api:  # an empty repo
        def list_repo_files(self, repo_id, repo_type):
            return []

    class Scheduler:  # the CommitScheduler's part the sync uses; pushing is the Hub's
        lock = threading.Lock()
        api, repo_id, repo_type, revision, path_in_repo = Api(), "org/results", "dataset", None, ""

    sync = HubSync(tmp_path / "hub-sync", Scheduler())
    entries = build_board(scored.sessions)
    with scored.sessions() as session:
        sync.write(entries, request_rows(session, {e.submission_id for e in entries}))
    rows = json.loads((tmp_path / "hub-sync" / "board.json").read_text())
    assert len(rows) == 27 and rows == json.loads(to_json(board_rows(entries)))
    assert all(r["atnorm_br_brier"] is None for r in rows)
    assert (tmp_path / "hub-sync" / "board.csv").read_text() == to_csv(board_rows(entries))


def test_a_withdrawn_entry_is_deleted_from_the_hub_repo(scored, tmp_path):
    """The scheduler only adds files; the sync deletes what left the board, in one commit."""

    class Api:  # HfApi up to the network: what the repo holds, and the commits made
        commits, pushed = [], []

        def list_repo_files(self, repo_id, repo_type):
            return self.pushed

        def create_commit(self, **kwargs):
            self.commits.append(kwargs)

    class Scheduler:
        lock = threading.Lock()
        api, repo_id, repo_type, revision, path_in_repo = Api(), "org/results", "dataset", None, ""
        pushes = 0

        def trigger(self):  # push the folder now; the Hub's part
            Scheduler.pushes += 1
            done = Future()
            done.set_result(None)
            return done

    folder = tmp_path / "hub-sync"
    sync = HubSync(folder, Scheduler())
    entries = build_board(scored.sessions)
    with scored.sessions() as session:
        sync.write(entries, request_rows(session, {e.submission_id for e in entries}))
    sync.deleting.join(10)  # the first write compares the repo with the folder: all there
    assert Api.commits == []
    Api.pushed = [p.relative_to(folder).as_posix() for p in folder.rglob("*.json")]  # the push
    (entry,) = [e for e in build_board(scored.sessions) if e.model_name == "twin"]
    job = scored.service.my_submissions("bob")[0].job_id
    scored.service.withdraw("bob", job)
    entries = build_board(scored.sessions)
    with scored.sessions() as session:
        sync.write(entries, request_rows(session, {e.submission_id for e in entries}))
    sync.deleting.join(10)
    (commit,) = Api.commits
    deleted = sorted(op.path_in_repo for op in commit["operations"])
    assert deleted == [f"{kind}/{entry.submission_id}.json" for kind in ("requests", "results")]
    assert commit["repo_id"] == "org/results" and not (folder / deleted[1]).exists()

    # a deletion another process did not finish (a command that exited): the next sync's first
    # write deletes what the repo still holds and the folder does not, and nothing else
    Api.commits.clear()
    Api.pushed = [*Api.pushed, "results/999.json", "requests/999.json", "README.md", "x/1.json"]
    later = HubSync(folder, Scheduler())
    with scored.sessions() as session:
        later.write(entries, request_rows(session, {e.submission_id for e in entries}))
    later.flush()  # what a command does before it exits: the deletion ends, the folder is pushed
    assert not later.deleting.is_alive() and Scheduler.pushes == 1
    (commit,) = Api.commits
    assert sorted(op.path_in_repo for op in commit["operations"]) == sorted(
        f"{kind}/{n}.json" for kind in ("requests", "results") for n in (999, entry.submission_id)
    )


def by_id(rows):
    """Rows in submission order, timestamps (typed by the card) as the export writes them."""

    def plain(value):
        return value.isoformat(timespec="seconds") if isinstance(value, datetime) else value

    rows = [{k: plain(v) for k, v in row.items()} for row in rows]
    return sorted(rows, key=lambda r: (r["submission_id"] is None, r["submission_id"] or 0))


def test_results_and_requests_round_trip_through_datasets(scored, tmp_path):
    view = scored.service.submit_predictions(
        "dave", scored.predictions(7), EntryMetadata("still queued", team="D")
    )
    folder = scored.settings.results_dataset_dir
    scored.worker.export_results()  # what the worker does after every job
    entries = build_board(scored.sessions)
    results = load_dataset(str(folder), "results", cache_dir=str(tmp_path), split="train")
    expected = by_id(json.loads(to_json(board_rows(entries))))
    assert by_id(results.to_list()) == expected
    as_json = load_dataset(  # the JSON loader, given the card's column types
        "json",
        data_files=str(folder / "results" / "*.json"),
        features=results.features,
        cache_dir=str(tmp_path),
        split="train",
    )
    assert by_id(as_json.to_list()) == expected
    requests = by_id(
        load_dataset(str(folder), "requests", cache_dir=str(tmp_path), split="train").to_list()
    )
    with scored.sessions() as session:
        assert requests == by_id(request_rows(session, {e.submission_id for e in entries}))
    queued = [r for r in requests if r["status"] == "queued"]
    assert len(queued) == 1 and queued[0]["lane"] == "files"
    # in the queue: the public queue's anonymised row, nothing of who or what
    assert queued[0]["model_name"] is None and queued[0]["team"] is None
    assert queued[0]["submission_id"] is None  # would tie it to its later entry
    assert (folder / "requests" / "queue-1.json").is_file()
    on_board = {e.submission_id: e for e in entries}
    for request in requests:
        entry = on_board.get(request["submission_id"])
        if entry is not None:
            assert request["model_name"] == entry.model_name and request["status"] == "finished"
    scored.worker.run_job(view.job_id)
    scored.worker.export_results()  # rewritten: the request now shows its entry
    with scored.sessions() as session:
        submission_id = session.get(Job, view.job_id).submission_id
    record = json.loads((folder / "requests" / f"{submission_id}.json").read_text())
    assert record["model_name"] == "still queued" and record["status"] == "finished"
    assert (folder / "results" / f"{submission_id}.json").is_file()
    assert not (folder / "requests" / "queue-1.json").exists()  # the queue is empty now


def test_pathologists_are_reference_rows_scored_against_the_other_experts(scored):
    votes = LabelStore(scored.settings.labels_dir).reader_votes()
    expected = reader_agreement(votes)
    as_normal = reader_agreement(votes, ties="normal")
    as_atypical = reader_agreement(votes, ties="atypical")
    board = build_board(scored.sessions)
    experts = [e for e in board if e.source == "pathologist"]
    assert [e.model_name for e in experts] == [f"Pathologist {i} of 5" for i in range(1, 6)]
    ranked = [e for e in board if e.rank is not None]
    assert board.index(experts[0]) == len(ranked)  # after the ranked entries, unranked
    for entry, agreement, normal, atypical in zip(
        experts, expected, as_normal, as_atypical, strict=True
    ):
        # rounded BAs and the tie share alone: the crops compared and their classes stay private
        assert entry.scores["atnorm_md"] == {
            "ba": round_hidden(agreement.balanced_accuracy),
            "ba_ties_normal": round_hidden(normal.balanced_accuracy),
            "ba_ties_atypical": round_hidden(atypical.balanced_accuracy),
            "tied_percent": round(100 * agreement.tied / len(votes)),
        }
        assert set(entry.scores) == {"atnorm_md"} and entry.rank is None
        assert "majority of the other four" in entry.comparison
        assert f"as atypical, {round_hidden(atypical.balanced_accuracy):.2f}" in entry.comparison
    assert "counting them as normal gives" in board_legend(board)
    Worker(scored.settings).maintenance.seed()  # the same label set: nothing rewritten
    with scored.sessions() as session:
        rows = session.scalars(select(Result).where(Result.scorer_version == "readers")).all()
    assert len(rows) == 5 and all(r.current for r in rows)
    table = display_table(board)
    cells = table[table["model"] == "Pathologist 1 of 5"].iloc[0]
    assert cells["rank range (95 %)"] == "reference (pathologist)"
    assert cells["AtNorM-MD BA"] == f"{experts[0].scores['atnorm_md']['ba']:.2f}"
    per_team = filter_entries(build_board(scored.sessions), BoardFilter(per_team=True))
    assert sum(e.source == "pathologist" for e in per_team) == 5  # readers, not one team
    assert cells["hidden mean BA"] == "" and cells["rank"] == ""


def test_curves_are_released_for_the_public_split_only(scored):
    board = build_board(scored.sessions)
    perfect = next(e for e in board if e.model_name == "perfect")
    assert set(perfect.scores["amibr_test"]["curves"]) == {"roc", "reliability"}
    assert all("curves" not in perfect.scores[s] for s in ("atnorm_br", "atnorm_md"))
    roc, reliability = entry_curves(board, perfect.submission_id)
    model = roc[roc["curve"] == "model"]
    assert (model["x"].iloc[0], model["y"].iloc[0], model["x"].iloc[-1]) == (0.0, 0.0, 1.0)
    assert model["y"].max() == 1.0  # a perfect ranking
    assert set(reliability["curve"]) == {"model", "perfectly calibrated"}
    swin = next(e for e in board if e.model_name == "Swin-B (end-to-end)")
    assert all(frame.empty for frame in entry_curves(board, swin.submission_id))
    with scored.sessions() as session:  # nor are they computed for a hidden split
        hidden = session.scalars(select(Result.curves).where(Result.split == "atnorm_br")).all()
    assert not any(hidden)
