"""The Space in a real browser: Debian's Chromium driven by Playwright (never a downloaded one)."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect, sync_playwright

from settings import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "test-artifacts"
expect.set_options(timeout=30_000)  # a loaded 2-core machine: wait for the page, not 5 s


@pytest.fixture(scope="module")
def page(app):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1100})
        tab.set_default_timeout(60_000)
        tab.goto(app.url)
        expect(tab.get_by_text("Research use only, not for diagnosis")).to_be_visible()
        yield tab
        browser.close()


def test_classify_an_example_crop(page, app):
    page.get_by_role("tab", name="Classify").click()
    crop = next((app.backend.settings.public_dir / "test_crops").glob("*.png"))
    page.locator("#crop input[type=file]").set_input_files(str(crop))
    page.get_by_role("button", name="Classify", exact=True).click()
    decision = page.locator("#decision textarea, #decision input").first
    deadline = time.monotonic() + 60
    while decision.input_value() not in ("atypical", "normal"):
        assert time.monotonic() < deadline, "no answer"
        time.sleep(0.2)
    prob = float(page.locator("#prob-atypical input").input_value())
    assert 0 <= prob <= 1
    page.screenshot(path=str(ARTIFACTS / "classify.png"), full_page=True)


def test_submit_a_prediction_file_and_find_it_on_the_board(page, app):
    path = app.backend.settings.data_dir / "browser.csv"
    path.write_bytes(app.backend.predictions(21))
    page.get_by_role("tab", name="Submit").click()
    page.locator("#model-name textarea, #model-name input").first.fill("browser model")
    page.locator("#predictions-file input[type=file]").set_input_files(str(path))
    page.get_by_role("button", name="Submit predictions").click()
    expect(page.locator("#receipt")).to_contain_text("job_id")
    expect(page.locator("#workers")).to_contain_text("alive")  # the worker's health, refreshed
    job = app.backend.service.my_submissions("local")[0]
    app.backend.wait("local", job.job_id)
    page.screenshot(path=str(ARTIFACTS / "submit.png"), full_page=True)
    page.get_by_role("tab", name="Leaderboard").click()
    search = page.locator("#search textarea, #search input").first
    search.fill("browser model")
    search.press("Enter")
    expect(page.locator("#board")).to_contain_text("browser model")
    expect(page.locator("#board")).not_to_contain_text("Swin-B")
    page.screenshot(path=str(ARTIFACTS / "board-search.png"), full_page=True)


def test_filter_the_board(page):
    page.get_by_role("tab", name="Leaderboard").click()
    search = page.locator("#search textarea, #search input").first
    search.fill("Swin")
    search.press("Enter")
    board = page.locator("#board")
    expect(board).to_contain_text("Swin-B")
    expect(board).not_to_contain_text("Virchow2")
    expect(board).to_contain_text("not tested (paper row)")
    legend = page.locator("#board-legend")
    expect(legend).to_contain_text("rank range (95 %)")
    expect(legend).to_contain_text("mean of 5 fold models")
    page.screenshot(path=str(ARTIFACTS / "board-filter.png"), full_page=True)


def test_many_crops_give_a_table_and_a_csv(page, app):
    page.get_by_role("tab", name="Classify").click()
    page.get_by_text("Many crops").click()
    crops = sorted((app.backend.settings.public_dir / "test_crops").glob("*.png"))[:3]
    page.locator("#many-crops input[type=file]").set_input_files([str(c) for c in crops])
    page.get_by_role("button", name="Classify all").click()
    table = page.locator("#batch-table")
    for crop in crops:
        expect(table).to_contain_text(crop.name)
    expect(page.locator("#batch-csv")).to_contain_text("predictions")
    page.screenshot(path=str(ARTIFACTS / "classify-many.png"), full_page=True)


def test_entry_details_and_exports(page):
    page.get_by_role("tab", name="Leaderboard").click()
    page.locator("#entry-choice input").click()
    page.get_by_role("option").first.click()
    details = page.locator("#entry-card")
    expect(details).to_contain_text("balanced accuracy")
    expect(details).to_contain_text("AtNorM-MD (hidden)")
    with page.expect_download() as download:  # one click
        page.get_by_role("button", name="Download CSV").click()
    assert download.value.suggested_filename == "leaderboard.csv"
    header = open(download.value.path()).readline()
    assert header.startswith("rank,rank_low,rank_high") and "atnorm_md_ba" in header
    page.screenshot(path=str(ARTIFACTS / "board-details.png"), full_page=True)
