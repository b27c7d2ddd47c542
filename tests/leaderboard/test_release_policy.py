"""The release policy as users meet it: a bar that only rises, withdraw, publish from the
allowance, public-split-only checks and maintainer-run accounts, through the real intake and
the worker's own code (in this process)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select, update

from leaderboard.board import build_board
from leaderboard.errors import NotPublishable
from leaderboard.publication import account_bar, publish, release_pending, release_status
from store.entry import EntryMetadata
from store.schema import Account, Job, Result, Submission
from submissions.errors import NotWithdrawable, QuotaExceeded
from submissions.receipts import released_scores
from tests.backend import Backend, correct_a_label
from worker import Worker


@pytest.fixture
def platform(tmp_path):
    backend = Backend(
        tmp_path,
        MITOSIS_HIDDEN_QUOTA="100",
        MITOSIS_MAINTAINER_ACCOUNTS="paper-authors",
        MITOSIS_RELEASE_FLOOR="0.5",  # the tiny release's files are far from the real scale
    )
    backend.worker = Worker(backend.settings)
    truth = pd.read_csv(backend.settings.labels_dir / "labels.csv")
    backend.y = (truth["label"] == "atypical").to_numpy()
    backend.ids = truth["image_id"]
    backend.hidden = truth["split"].isin(["atnorm_br", "atnorm_md"]).to_numpy()
    return backend


PUBLIC = {"public_only": True}


def file_with(backend, wrong: np.ndarray, high: float = 0.9) -> bytes:
    """A prediction file whose decisions are wrong exactly where ``wrong``."""
    prob = np.where(backend.y ^ wrong, high, 0.1)
    return (
        pd.DataFrame({"image_id": backend.ids, "prob_atypical": prob}).to_csv(index=False).encode()
    )


def wrong_on(backend, k: int) -> np.ndarray:
    """Wrong on the first ``k`` hidden crops."""
    return backend.hidden & (np.cumsum(backend.hidden) <= k)


def scored(backend, user, data, name, **kwargs):
    view = backend.service.submit_predictions(user, data, EntryMetadata(name), **kwargs)
    backend.worker.run_job(view.job_id)
    return view.job_id


def bar(backend, user):
    with backend.sessions() as session:
        return account_bar(session, user)


def test_cancelled_probes_retried_after_a_release_face_the_bar_of_that_moment(platform):
    """The order that broke the old policy: queue probes, cancel them, get a release, retry
    the probes newest first. Each retried probe is judged against the bar when it runs."""
    probes = [file_with(platform, wrong_on(platform, k)) for k in (6, 5, 4)]
    for i, data in enumerate(probes):
        view = platform.service.submit_predictions("mallory", data, EntryMetadata(f"probe {i}"))
        platform.service.cancel("mallory", view.job_id)
    best = scored(platform, "mallory", file_with(platform, np.zeros_like(platform.y)), "best")
    assert released_scores(platform.sessions, best)["atnorm_br"] is not None
    high = bar(platform, "mallory")
    for i, data in reversed(list(enumerate(probes))):  # newest first, as the attack did
        job_id = scored(platform, "mallory", data, f"probe {i}")
        assert released_scores(platform.sessions, job_id)["atnorm_md"] is None  # below the bar
        assert bar(platform, "mallory") == high  # and the bar never moved
    assert release_status(platform.sessions, platform.settings, "mallory").startswith(
        f"Your best released hidden mean BA is {high:.3f}: a new scoring is released when its "
        f"hidden mean BA, as released, is at least {high + 0.01:.3f}"
    )


def test_the_bar_survives_withdrawal_and_re_scoring_replays_each_decision(platform):
    good = scored(platform, "alice", file_with(platform, np.zeros_like(platform.y)), "good")
    worse = scored(platform, "alice", file_with(platform, wrong_on(platform, 4)), "worse")
    high = bar(platform, "alice")
    assert released_scores(platform.sessions, worse)["atnorm_br"] is None
    platform.service.withdraw("alice", good)
    names = {e.model_name for e in build_board(platform.sessions)}
    assert "good" not in names and "worse" in names  # withdrawn from every surface
    with pytest.raises(NotWithdrawable, match="already withdrawn"):
        platform.service.withdraw("alice", good)
    assert bar(platform, "alice") == high  # withdrawing never lowers the bar
    folder = platform.settings.results_dataset_dir / "results"
    assert platform.worker.export_if_changed()  # the worker's heartbeat rewrites the Hub folder
    synced = {json.loads(p.read_text())["model_name"] for p in folder.glob("*.json")}
    assert "good" not in synced and "worse" in synced
    assert not platform.worker.export_if_changed()  # nothing changed since
    assert platform.worker.maintenance.rescore_all() >= 2
    with platform.sessions() as session:
        queued = session.scalars(select(Job.id).where(Job.status == "queued")).all()
    for job_id in queued:
        platform.worker.run_job(job_id)
    with platform.sessions() as session:
        decisions = {s.meta["model_name"]: s.release for s in session.scalars(select(Submission))}
        latest = {
            s.meta["model_name"]: s.jobs[-1].id
            for s in session.scalars(select(Submission).where(Submission.user == "alice"))
        }
    assert decisions["good"] == "released" and decisions["worse"] == "withheld"
    assert released_scores(platform.sessions, latest["good"])["atnorm_md"] is not None
    assert released_scores(platform.sessions, latest["worse"])["atnorm_md"] is None


def test_a_withheld_scoring_is_published_from_the_allowance(platform):
    scored(platform, "bob", file_with(platform, np.zeros_like(platform.y)), "first")
    withheld = [
        scored(platform, "bob", file_with(platform, wrong_on(platform, k)), f"variant {k}")
        for k in (1, 2, 3)
    ]
    high = bar(platform, "bob")
    assert publish(platform.sessions, platform.settings, "bob", withheld[0]).startswith(
        f"Job {withheld[0]} is published"
    )
    assert released_scores(platform.sessions, withheld[0])["atnorm_br"] is not None
    assert bar(platform, "bob") == high  # a lower published mean leaves the bar where it was
    with pytest.raises(NotPublishable, match="no withheld hidden scores"):
        publish(platform.sessions, platform.settings, "bob", withheld[0])  # published already
    with pytest.raises(NotPublishable, match="You have no job"):
        publish(platform.sessions, platform.settings, "eve", withheld[1])  # not eve's
    publish(platform.sessions, platform.settings, "bob", withheld[1])
    with pytest.raises(NotPublishable, match="allowance is 2"):
        publish(platform.sessions, platform.settings, "bob", withheld[2])
    assert "may still publish: 0 of 2" in release_status(
        platform.sessions, platform.settings, "bob"
    )
    board = {e.model_name: e for e in build_board(platform.sessions)}
    assert not board["variant 1"].withheld and board["variant 3"].withheld


def test_a_public_split_check_spends_no_hidden_scoring_and_stays_off_the_board(platform):
    data = file_with(platform, wrong_on(platform, 2))
    job_id = scored(platform, "carol", data, "ablation", public_only=True)
    scores = released_scores(platform.sessions, job_id)
    assert set(scores) == {"amibr_test"} and "brier" in scores["amibr_test"]
    view = platform.service.status("carol", job_id)
    assert view.scope == "public" and "public split only" in view.disclosure
    assert "ablation" not in {e.model_name for e in build_board(platform.sessions)}
    assert "left in the last 24 hours: 100 of 100" in platform.service.allowance("carol")
    again = scored(platform, "carol", data, "ablation")  # the same file, now for every split
    assert again != job_id and released_scores(platform.sessions, again)["atnorm_br"]
    view = platform.service.submit_predictions(
        "carol", file_with(platform, wrong_on(platform, 3)), EntryMetadata("x"), public_only=True
    )
    with pytest.raises(QuotaExceeded, match="public-split check queued"):
        platform.service.submit_predictions(
            "carol",
            file_with(platform, wrong_on(platform, 4)),
            EntryMetadata("y"),
            public_only=True,
        )


def test_maintainer_run_accounts_have_every_scoring_released_and_marked(platform):
    for k in (0, 3, 5):  # each worse than the one before
        job_id = scored(
            platform, "paper-authors", file_with(platform, wrong_on(platform, k)), f"m{k}"
        )
        assert released_scores(platform.sessions, job_id)["atnorm_br"] is not None
    board = {e.model_name: e for e in build_board(platform.sessions)}
    assert all(board[f"m{k}"].maintainer_run for k in (0, 3, 5))
    assert "maintainer-run" in release_status(platform.sessions, platform.settings, "paper-authors")


def run_queued(backend) -> None:
    with backend.sessions() as session:
        queued = session.scalars(select(Job.id).where(Job.status == "queued")).all()
    for job_id in queued:
        backend.worker.run_job(job_id)


def test_re_scoring_keeps_a_check_a_check_and_a_late_check_keeps_hidden_results(platform):
    check = scored(platform, "dora", file_with(platform, wrong_on(platform, 1)), "check", **PUBLIC)
    assert platform.worker.maintenance.rescore_all() >= 1
    run_queued(platform)
    with platform.sessions() as session:
        jobs = session.get(Job, check).submission.jobs
        assert [j.scope for j in jobs] == ["public", "public"]  # no hidden scoring spent
    assert set(released_scores(platform.sessions, jobs[-1].id)) == {"amibr_test"}
    assert "check" not in {e.model_name for e in build_board(platform.sessions)}
    # a check queued before the full scoring of the same file, run after it
    data = file_with(platform, wrong_on(platform, 2))
    early = platform.service.submit_predictions("dora", data, EntryMetadata("both"), **PUBLIC)
    full = scored(platform, "dora", data, "both")
    platform.worker.run_job(early.job_id)
    board = {e.model_name: e for e in build_board(platform.sessions)}
    assert board["both"].hidden_mean_ba is not None  # the check did not demote them
    assert released_scores(platform.sessions, full)["atnorm_br"] is not None


def test_a_store_written_before_decisions_were_stored_replays_them(platform):
    """An upgraded database: no stored decision or bar; its results say what was decided."""
    good = scored(platform, "erin", file_with(platform, np.zeros_like(platform.y)), "good")
    worse = scored(platform, "erin", file_with(platform, wrong_on(platform, 4)), "worse")
    with platform.sessions.begin() as session:
        session.execute(update(Submission).values(release=None))
        session.execute(update(Account).values(ladder_bar=None))
    assert platform.worker.maintenance.rescore_all() >= 2
    run_queued(platform)
    board = {e.model_name: e for e in build_board(platform.sessions)}
    assert not board["good"].withheld and board["worse"].withheld
    with platform.sessions() as session:
        latest = session.get(Job, worse).submission.jobs[-1].id
    assert publish(platform.sessions, platform.settings, "erin", latest).startswith("Job")
    assert released_scores(platform.sessions, good)["atnorm_md"] is not None


def forget_decisions(backend, *, before_the_policy: bool = False) -> None:
    """The store as an older version left it: no stored decisions or bars, or (before the
    policy) no decision at all, every result public at full precision."""
    with backend.sessions.begin() as session:
        session.execute(update(Submission).values(release=None))
        session.execute(update(Account).values(ladder_bar=None))
        if before_the_policy:
            session.execute(update(Result).values(published=None))
            session.execute(update(Job).values(disclosure=""))


def test_an_upgraded_store_s_bar_is_the_best_ever_released_not_the_latest(platform):
    """A re-scoring on corrected labels released a lower mean for the same submission: the
    bar of a store without stored bars still counts the earlier, higher one."""
    good = scored(platform, "fred", file_with(platform, np.zeros_like(platform.y)), "good")
    high = bar(platform, "fred")
    for which in range(3):  # the maintainers correct three labels: the perfect file is not now
        correct_a_label(platform.settings.labels_dir, which)
    assert platform.worker.maintenance.rescore_stale() >= 1
    run_queued(platform)
    with platform.sessions() as session:
        latest = session.get(Job, good).submission.jobs[-1].id
    lower = released_scores(platform.sessions, latest)
    assert latest != good and np.mean([lower[s]["ba"] for s in ("atnorm_br", "atnorm_md")]) < high
    forget_decisions(platform)
    assert bar(platform, "fred") == high


def test_a_store_from_before_the_policy_decides_a_re_scored_submission_by_its_first_job(
    platform,
):
    """Jobs from before the policy are decided oldest first; the first job of a submission
    decides by the Ladder, and its re-scoring replays that, not the undecided rows."""
    good = scored(platform, "gina", file_with(platform, np.zeros_like(platform.y)), "good")
    assert platform.worker.maintenance.rescore_all() >= 1
    run_queued(platform)
    forget_decisions(platform, before_the_policy=True)
    assert release_pending(platform.sessions, platform.settings) >= 2
    with platform.sessions() as session:
        submission = session.get(Job, good).submission
        assert submission.release == "released"
        assert all(job.disclosure == "released" for job in submission.jobs)
