"""The tabs' handlers, called in this process (no server, no browser): what they return."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr
import pytest
import sklearn.datasets
from PIL import Image
from sqlalchemy import select

from app import build_demo
from fileio import markdown_literal
from leaderboard.columns import MAIN_COLUMNS
from settings import REPO_ROOT
from store.entry import EntryMetadata
from store.schema import Job, JobStatus
from tests.backend import Backend
from tests.conftest import stained_noise
from ui import classify_tab, leaderboard_tab, submit_tab
from ui.components import get_upload_folder
from ui.space import Space
from worker import Worker

FORM = ["my model", "lab", "LoRA", "virchow2", "pathology FM", "AMi-Br train", False, "", "", ""]
FILTERS = ["", "all", ["verified", "self-reported", "paper", "pathologist"], [], False, []]


@pytest.fixture
def space(tmp_path):
    backend = Backend(tmp_path)
    worker = Worker(backend.settings)
    worker.maintenance.seed()
    with backend.sessions() as session:
        for job_id in session.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED)):
            worker.run_job(job_id)
    space = Space(backend.settings)
    space.backend, space.worker = backend, worker
    return space


def upload(space: Space, seed: int) -> str:
    """A prediction file where Gradio puts an upload: a folder of its own in its cache."""
    folder = Path(tempfile.mkdtemp(dir=get_upload_folder()))
    path = folder / f"predictions-{seed}.csv"
    path.write_bytes(space.backend.predictions(seed))
    return str(path)


def test_submitting_through_the_handler_gives_a_receipt_and_removes_the_upload(space):
    file = upload(space, 1)
    report = submit_tab.submit_predictions(space, file, *FORM)
    assert report["status"] == "queued" and report["model_name"] == "my model"
    assert not os.path.exists(file)  # stored by hash; Gradio's copy removed
    card, job_id = submit_tab.show_receipt(report)
    assert job_id == report["job_id"] and "my model" in card and "**queued**" in card
    waiting, _ = submit_tab.follow_receipt(space, report)
    assert waiting == gr.skip()  # nothing changed: the receipt stays as it is
    space.worker.run_job(job_id)
    followed, followed_card = submit_tab.follow_receipt(space, report)  # the 3 s timer
    assert followed["status"] == "finished" and "**finished**" in followed_card
    assert submit_tab.follow_receipt(space, followed) == (gr.skip(), gr.skip())  # unchanged
    finished = submit_tab.submission_status(space, job_id)
    assert finished["status"] == "finished" and set(finished["scores"]) == {
        "amibr_test",
        "atnorm_br",
        "atnorm_md",
    }
    table, allowance = submit_tab.my_submissions(space)
    assert list(table["job"]) == [job_id] and "Hidden-split scorings left" in allowance
    assert allowance.endswith(f"You submit as **{space.user(None)}**.")
    # a refused action on the job in the box keeps its receipt; another job's look-up clears it
    assert submit_tab.receipt_of_box(finished, job_id) == (gr.skip(), gr.skip())
    assert submit_tab.receipt_of_box(finished, job_id + 1) == (None, "")
    # a late answer from before a withdrawal put the finished receipt back: the tick mends it
    submit_tab.withdraw_submission(space, job_id)
    mended, mended_card = submit_tab.follow_receipt(space, finished)
    assert mended["withdrawn"] and "Withdrawn from the public board" in mended_card
    again = submit_tab.submit_predictions(space, upload(space, 1), *FORM)  # the same file
    assert again["job_id"] == job_id and "already submitted" in again["notice"]
    assert submit_tab.follow_receipt(space, again) == (gr.skip(), gr.skip())  # still said
    assert submit_tab.follow_receipt(space, {**again, "job_id": job_id + 99}) == (None, "")


def test_the_handlers_say_what_is_missing(space):
    with pytest.raises(gr.Error, match="Upload a prediction file .\\.csv. first"):
        submit_tab.submit_predictions(space, None, *FORM)
    handlers = (
        submit_tab.submission_status,
        submit_tab.cancel_submission,
        submit_tab.withdraw_submission,
        submit_tab.publish_submission,
    )
    for handler in handlers:
        for empty in (None, 0):  # the page's empty box sends 0
            with pytest.raises(gr.Error, match="Give the job id of .*My submissions show it"):
                handler(space, empty)
        with pytest.raises(gr.Error, match="A job id is a whole number; found 2.5"):
            handler(space, 2.5)
    with pytest.raises(gr.Error, match="'Model name' starts with '='"):
        submit_tab.submit_predictions(space, upload(space, 2), "=1+1", *FORM[1:])
    with pytest.raises(gr.Error, match="Give the Hub model id"):
        submit_tab.submit_hub_model(space, " ", "main", "", *FORM)


def test_the_board_handlers_draw_every_view_from_one_list(space):
    space.backend.service.submit_predictions(
        "bob", space.backend.predictions(3), EntryMetadata("bob's model")
    )
    for job in space.backend.service.my_submissions("bob"):
        space.worker.run_job(job.job_id)
    table, plot, choices, legend, csv_file, json_file, status, best = leaderboard_tab.refresh(
        space, *FILTERS, None
    )
    assert list(table.columns) == MAIN_COLUMNS and len(table) == len(space.board())
    assert len(choices.choices) == len(table) and "rank" in legend.lower()
    assert open(csv_file.value["path"]).read().startswith("rank,") and status.startswith(
        "Last updated"
    )
    assert csv_file.label == "Download CSV (all entries, as shown)"
    top = [e.model_name for e in space.board() if e.top_group]
    assert top and best.startswith("**Best tested entr")  # the tested entries' top group
    assert all(markdown_literal(name) in best for name in top)
    searched, *_, csv_file, _, _, _ = leaderboard_tab.refresh(space, "bob's", *FILTERS[1:], None)
    assert list(searched["model"]) == ["bob's model"]
    assert (
        len(open(csv_file.value["path"]).read().splitlines()) == 2
    )  # the header and the one shown
    assert csv_file.label == f"Download CSV (1 of {len(space.board())} entries, as shown)"
    per_team = list(FILTERS)
    per_team[4] = True  # each team's best entry: the downloads count what is shown
    best_of_teams, *_, csv_file, _, _, _ = leaderboard_tab.refresh(space, *per_team, None)
    assert len(best_of_teams) < len(space.board())
    assert csv_file.label == (
        f"Download CSV ({len(best_of_teams)} of {len(space.board())} entries, as shown)"
    )
    searched, *_ = leaderboard_tab.refresh(space, "no such model", *FILTERS[1:], None)
    assert list(searched["model"]) == ["No entry matches the search and filters."]
    sort, sorted_table, *_ = leaderboard_tab.resort(space, "model|1", None, *FILTERS)
    assert sort == ("model", False) and list(sorted_table["model ▲"]) == sorted(
        table["model"], key=str.lower
    )
    again, _, *_ = leaderboard_tab.resort(space, "model ▲|2", sort, *FILTERS)  # header as shown
    assert again == ("model", True)
    rows = leaderboard_tab.leaderboard(space, search="bob's")
    assert [row["model_name"] for row in rows] == ["bob's model"]


def test_a_vanished_entry_gets_a_sentence_not_an_internal_error(space):
    with pytest.raises(gr.Error, match="Entry 999 is not on the board .any more.") as refused:
        leaderboard_tab.card(space, 999)
    assert "Internal error" not in str(refused.value)
    text, roc, reliability = leaderboard_tab.card(space, None)
    assert text.startswith("Choose an entry") and not roc.visible and not reliability.visible


def test_a_paper_row_s_card_shows_only_what_applies(space):
    board = space.board()
    paper = next(e for e in board if e.source == "paper")
    text, roc, reliability = leaderboard_tab.card(space, paper.submission_id)
    assert text.count("Paper row:") == 1 and "only the balanced accuracy" not in text
    assert roc.visible is False and reliability.visible is False


def test_classify_answers_a_real_crop_in_words(space):
    crop = next((REPO_ROOT / "tests" / "data").glob("*.png"), None) or space.examples()[0][0]
    prob, label, overlay = classify_tab.classify(space, str(crop), None, False, True)
    assert 0 <= prob <= 1 and label in ("atypical", "normal") and overlay.shape[-1] == 3
    words = classify_tab.describe(space, str(crop), prob)
    assert "atypical" in words or "normal" in words
    with pytest.raises(gr.Error, match="Upload a crop first"):
        classify_tab.classify(space, "", None, False, True)
    tagged = classify_tab.answer_crop(space, str(crop), None, False, False, "asked 1")
    number, decision, _, answer = classify_tab.answer_if_current(tagged, "asked 1")
    assert (number.value, number.visible, decision) == (prob, True, label) and answer == words
    nothing = classify_tab.answer_crop(space, None, None, False, True, "asked 1")
    assert classify_tab.answer_if_current(nothing, "asked 1") == (gr.skip(),) * 4
    # asked before the crop or a setting changed (the page waits for "asked 2"): not shown
    assert classify_tab.answer_if_current(tagged, "asked 2") == (gr.skip(),) * 4
    assert classify_tab.answer_if_current(None, "asked 1") == (gr.skip(),) * 4
    # after a refusal: a removed upload empties the box, a crop still there stays
    assert classify_tab.empty_if_removed("/nonexistent/removed.png") is None
    assert classify_tab.empty_if_removed(str(crop)) == gr.skip()


def test_a_public_test_crop_is_answered_with_its_pathologists_label(space, tmp_path):
    """An example (Gradio serves a copy under the same name): its public AMi-Br test label;
    another image under that name: none."""
    example = Path(space.examples()[0][0])
    labels = space.submissions.bundle.public_labels()
    truth = "atypical" if labels.y_true[list(labels.image_ids).index(example.stem)] else "normal"
    served = tmp_path / "served" / example.name
    served.parent.mkdir()
    served.write_bytes(example.read_bytes())
    words = classify_tab.describe(space, str(served), 0.3)
    assert words.endswith(f"the pathologists labelled it **{truth}**.")
    other = tmp_path / "other" / example.name
    other.parent.mkdir()
    Image.new("RGB", (128, 128), (200, 120, 180)).save(other)
    assert "pathologists labelled" not in classify_tab.describe(space, str(other), 0.3)


def test_many_crops_list_the_refused_first_with_a_summary_and_size_notes(space, tmp_path):
    crops = [str(c[0]) for c in space.examples()[:2]]
    big = tmp_path / "big.png"
    Image.open(crops[0]).resize((1024, 1024)).save(big)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    photo = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    stained = tmp_path / "stained.png"
    Image.fromarray(stained_noise()).save(stained)
    shown, csv_path, as_file, summary = classify_tab.classify_many(
        space, [*crops, str(big), str(broken), str(photo), str(stained)], None, False
    )
    assert list(shown["image"])[0] == "broken.png" and shown.iloc[0]["label"] == "not classified"
    assert csv_path.endswith("answers.csv")  # not named like a prediction file
    notes = shown.set_index("image")["note"]
    assert "1024" in notes["big.png"]
    assert "Its colours are unlike an H&E stain" in notes["china.jpg"]  # a photograph
    assert notes["stained.png"] == ""  # nothing to say
    assert summary.startswith("**5** crops classified, **1** not classified (listed first")
    assert as_file is None and "not all test crops named by their id" in summary  # big.png
    _, _, as_file, summary = classify_tab.classify_many(space, crops, None, False)
    assert as_file and summary.endswith("also a prediction file (only these crops).")


def test_what_the_page_shows_is_filled_when_it_loads(space):
    """Every view refreshed by a timer is also filled on page load: no blank table with
    Gradio's placeholder headers (1, 2, 3) until the first tick."""
    config = build_demo(space.settings).get_config_file()
    elem = {c["id"]: c["props"].get("elem_id") for c in config["components"]}
    on_load, on_tick = set(), set()
    for dependency in config["dependencies"]:
        events = {event for _, event in dependency["targets"]}
        outputs = {elem.get(o) for o in dependency["outputs"]}
        on_load |= outputs if "load" in events else set()
        on_tick |= outputs if "tick" in events else set()
    assert {"mine", "allowance", "queue", "workers"} <= on_tick
    assert on_tick - {"receipt", "receipt-json"} <= on_load  # the receipt follows its own job
