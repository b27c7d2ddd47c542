"""The red-team corpus through the three upload endpoints of a running app.

Every hostile upload must get our own, specific message (no server path, no "Internal error",
no framework boilerplate), run nothing, keep nothing (no stored file, no row, no copy in
Gradio's upload cache), and leave the app answering.
"""

from __future__ import annotations

import re

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from sqlalchemy import func, select

from store.schema import SHIPPED_MODEL_USER, Job, Submission
from tests.backend import wait_until
from tests.hostile import corpus
from tests.models.conftest import tiny_checkpoint

pytestmark = pytest.mark.slow  # processes, servers or real training: `make test` only

META = {
    "name": "hostile",
    "team": "red team",
    "method": "end-to-end",
    "backbone": "resnet18",
    "pretraining": "none",
    "data": "AMi-Br train",
    "midog": False,
    "paper": "",
    "code": "",
    "about": "",
}


def stored(app) -> tuple:
    uploads = app.backend.settings.data_dir / "uploads"
    with app.backend.sessions() as session:
        rows = (
            session.scalar(select(func.count(Submission.id))),
            session.scalar(select(func.count(Job.id))),
        )
    files = sorted(p.name for p in uploads.rglob("*")) if uploads.exists() else []
    return rows, files


def seeded(app) -> bool:
    with app.backend.sessions() as session:
        return bool(
            session.scalar(
                select(func.count(Job.id))
                .join(Submission)
                .where(Submission.user == SHIPPED_MODEL_USER)
            )
        )


def test_every_hostile_upload_gets_a_specific_message_and_leaves_nothing(app, tmp_path):
    client = Client(app.url, verbose=False)
    marker = tmp_path / "executed"
    cases = corpus(
        tmp_path / "corpus",
        marker,
        tiny_checkpoint(tmp_path / "ckpt"),
        app.backend.predictions(99),
    )
    wait_until(lambda: seeded(app), 300, "the app's worker did not seed the store")
    before = stored(app)  # after the worker's own rows (the paper's and the shipped model's)
    outcomes = []
    for case in cases:
        if case.endpoint == "/classify":
            args = (handle_file(str(case.path)), "Default model (shipped)", False, True)
        else:
            args = (handle_file(str(case.path)), *{**META, **case.meta}.values())
        with pytest.raises(AppError) as refused:
            client.predict(*args, api_name=case.endpoint)
        message = str(refused.value)
        outcomes.append((case.endpoint, case.path.name, message))
        assert re.search(case.match, message), (case, message)
        for leak in ("/tmp", str(app.gradio_cache), "Internal error", "upstream", "Traceback"):
            assert leak not in message, (case, message)
        assert not marker.exists(), f"{case.path.name} ran code"
        assert stored(app) == before, f"{case.path.name} left a file or a row"
        assert not list(app.gradio_cache.rglob(case.path.name)), f"{case.path.name} was kept"
        board = client.predict("", "all", ["paper"], False, api_name="/leaderboard")
        assert len(board) == 17  # the app still answers
    print(f"\n{len(outcomes)} hostile uploads, {len(outcomes)} specific refusals:")
    for endpoint, name, message in outcomes:
        print(f"  {endpoint:<20} {name:<16} {message[:90]}")
