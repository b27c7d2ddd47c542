"""The maintainers take an entry off the board with a reason its submitter reads, and put it
back; what was released stays counted, and a submitter's own withdrawal stays theirs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from leaderboard.board import build_board, last_updated
from leaderboard.publication import account_bar
from store.entry import EntryMetadata
from store.schema import Job, Submission
from submissions.errors import ModerationRefused, NotWithdrawable
from submissions.moderation import restore, take_down
from submissions.receipts import job_report, receipt_card, submissions_table
from tests.backend import Backend
from worker import Worker
from worker.__main__ import main as worker_main

REASON = "Trained on AtNorM-MD crops, as its code shows (report #12)."


@pytest.fixture
def scored(tmp_path):
    """Alice's entry, correct on every crop and so released; its backend, job and entry ids."""
    backend = Backend(tmp_path)
    truth = pd.read_csv(backend.settings.labels_dir / "labels.csv")
    prob = np.where(truth["label"] == "atypical", 0.9, 0.1)
    data = truth[["image_id"]].assign(prob_atypical=prob).to_csv(index=False).encode()
    view = backend.service.submit_predictions("alice", data, EntryMetadata("perfect"))
    Worker(backend.settings).run_job(view.job_id)
    with backend.sessions() as session:
        entry_id = session.get(Job, view.job_id).submission_id
    return backend, view.job_id, entry_id


def on_board(backend) -> set[int]:
    return {e.submission_id for e in build_board(backend.sessions)}


def bar(backend) -> float | None:
    with backend.sessions() as session:
        return account_bar(session, "alice")


def test_taken_down_with_a_reason_then_put_back(scored):
    backend, job_id, entry_id = scored
    released = bar(backend)  # the released hidden mean: 1 within the keyed offset
    assert entry_id in on_board(backend) and released > 0.98
    before = last_updated(backend.sessions)
    assert take_down(backend.sessions, entry_id, f"  {REASON}\n") == "perfect"
    assert entry_id not in on_board(backend)
    assert last_updated(backend.sessions) > before  # workers rewrite standings and exports
    assert bar(backend) == released  # what was released stays counted
    report = job_report(backend.sessions, backend.service.status("alice", job_id))
    assert (report["withdrawn"], report["taken_down"]) == (True, REASON)
    assert (
        "Taken off the public board by the maintainers: Trained on AtNorM\\-MD crops, as its "
        "code shows \\(report \\#12\\)\\." in receipt_card(report)
    )
    assert submissions_table([report]).loc[0, "note"] == f"taken down by the maintainers: {REASON}"
    again = f"already taken down, with the reason .{REASON[:20]}.*--restore {entry_id} and"
    with pytest.raises(ModerationRefused, match=again):
        take_down(backend.sessions, entry_id, "again")

    taken = last_updated(backend.sessions)
    assert restore(backend.sessions, entry_id) == "perfect"
    assert entry_id in on_board(backend) and last_updated(backend.sessions) > taken
    report = job_report(backend.sessions, backend.service.status("alice", job_id))
    assert (report["withdrawn"], report["taken_down"]) == (False, "")
    assert "maintainers" not in receipt_card(report)
    with pytest.raises(ModerationRefused, match=f"^Entry {entry_id} was not taken down\\.$"):
        restore(backend.sessions, entry_id)


@pytest.mark.parametrize("taken_down_first", [False, True])
def test_a_submitter_s_withdrawal_is_theirs(scored, taken_down_first):
    backend, job_id, entry_id = scored
    if taken_down_first:  # then the submitter withdraws it too: it stays off, as theirs
        take_down(backend.sessions, entry_id, REASON)
    backend.service.withdraw("alice", job_id)
    report = job_report(backend.sessions, backend.service.status("alice", job_id))
    assert (report["withdrawn"], report["taken_down"]) == (True, "")
    assert "Withdrawn from the public board by its submitter." in receipt_card(report)
    assert submissions_table([report]).loc[0, "note"] == "withdrawn"
    with pytest.raises(NotWithdrawable, match="already withdrawn"):
        backend.service.withdraw("alice", job_id)
    with pytest.raises(ModerationRefused, match="withdrawn by its submitter already"):
        take_down(backend.sessions, entry_id, REASON)
    with pytest.raises(ModerationRefused, match="not taken down \\(its submitter withdrew it\\)"):
        restore(backend.sessions, entry_id)
    assert entry_id not in on_board(backend)


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        (" \n ", "^Give the reason its submitter will read \\(--reason\\)\\.$"),
        ("x" * 301, "^The reason has 301 characters; at most 300 fit\\.$"),
        ("cheat\u202e", "control or text-direction character"),
    ],
)
def test_a_reason_is_plain_text_its_submitter_can_read(scored, reason, message):
    backend, _, entry_id = scored
    with pytest.raises(ModerationRefused, match=message):
        take_down(backend.sessions, entry_id, reason)
    assert entry_id in on_board(backend)


def test_only_submitted_entries_are_moderated(scored):
    backend, _, _ = scored
    Worker(backend.settings).maintenance.seed()
    with backend.sessions() as session:
        paper = session.query(Submission.id).filter(Submission.kind == "paper").first()[0]
    for entry_id in (paper, 10_000):
        with pytest.raises(ModerationRefused, match=f"^No submitted entry has id {entry_id} "):
            take_down(backend.sessions, entry_id, REASON)
    with backend.sessions() as session:  # the shipped model's job: its id is a paper row's
        job = session.scalars(select(Job).order_by(Job.id.desc())).first()
        assert session.get(Submission, job.id).kind == "paper"
    with pytest.raises(ModerationRefused, match=f"Job {job.id} is entry {job.submission_id}.$"):
        take_down(backend.sessions, job.id, REASON)


def test_the_worker_command_takes_down_and_restores(scored, monkeypatch, capsys):
    backend, _, entry_id = scored
    for name, value in backend.env.items():
        monkeypatch.setenv(name, value)
    results = backend.settings.results_dataset_dir / "results" / f"{entry_id}.json"
    assert worker_main(["--take-down", str(entry_id), "--reason", REASON]) == 0
    assert capsys.readouterr().out == f"took entry {entry_id} (perfect) off the board\n"
    assert not results.exists()  # the results folder (and its Hub sync) follows at once
    assert worker_main(["--take-down", str(entry_id), "--reason", REASON]) == 2
    assert capsys.readouterr().err.startswith(f"error: Entry {entry_id} is already taken down")
    assert worker_main(["--restore", str(entry_id)]) == 0
    assert capsys.readouterr().out == f"put entry {entry_id} (perfect) back on the board\n"
    assert json.loads(results.read_text())["model_name"] == "perfect"
    with pytest.raises(SystemExit):
        worker_main(["--reason", REASON])
    assert "--reason goes with --take-down ENTRY_ID." in capsys.readouterr().err
    with pytest.raises(SystemExit):  # refused before the database is opened
        worker_main(["--take-down", str(entry_id), "--reason", "  "])
    assert "--take-down needs --reason TEXT: its submitter reads why." in capsys.readouterr().err
