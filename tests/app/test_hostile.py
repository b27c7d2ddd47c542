"""The red-team corpus through the three upload endpoints of a running app.

Every hostile upload must get our own, specific message (no server path, no "Internal error",
no framework boilerplate), run nothing, keep nothing (no stored file, no row, no copy in
Gradio's upload cache), and leave the app answering.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from safetensors.torch import save as save_safetensors
from sqlalchemy import func, select

from store.schema import SHIPPED_MODEL_USER, Job, Submission
from tests.backend import wait_until
from tests.hostile import corpus, zip_of
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_costly_or_echoing_requests_cost_the_app_little_and_come_back_short(app, tmp_path):
    """A few bytes that claim 16 giant networks, a million-row file and a megabyte of Hub id
    with a direction override: each refused for a fraction of a second of the app's CPU, with a
    short answer and one short log line (no traceback)."""
    client = Client(app.url, verbose=False)
    wait_until(lambda: seeded(app), 300, "the app's worker did not seed the store")
    config = json.loads((tiny_checkpoint(tmp_path / "ckpt") / "config.json").read_text())

    def claim(model: str, members: int) -> Path:
        """A zip of one number whose config claims an ensemble of ``members`` ``model``."""
        path = tmp_path / f"{members}-{model}.zip"
        mitosis = {**config["mitosis"], "model": model, "ensemble_size": members}
        entries = {
            "config.json": json.dumps(
                {**config, "architecture": model, "mitosis": mitosis}
            ).encode(),
            "model.safetensors": save_safetensors({"x": torch.zeros(1)}),
        }
        path.write_bytes(zip_of(entries))
        return path

    giant = claim("vit_giant_patch14_dinov2", 16)
    rows = tmp_path / "million.csv"
    rows.write_text("image_id,prob_atypical\n" + "x,1\n" * 1_000_000)  # 4 MB
    requests = [
        ("/submit_checkpoint", (handle_file(str(giant)), *META.values()), "an ensemble of 16"),
        ("/submit_predictions", (handle_file(str(rows)), *META.values()), "1,000,000 rows"),
        (
            "/submit_hub_model",
            ("\u202e" + "a" * 1_000_000, "main", "", *META.values()),
            r"is not a Hub model id",
        ),
    ]
    first = claim("resnet18", 2)  # the app's first checkpoint imports timm: not counted
    with pytest.raises(AppError, match="an ensemble of 2 resnet18"):
        client.predict(handle_file(str(first)), *META.values(), api_name="/submit_checkpoint")
    pid, costs = app.process.pid, {}
    for endpoint, args, match in requests:
        log_size, cpu, rss = app.log.stat().st_size, cpu_seconds(pid), rss_mb(pid)
        with pytest.raises(AppError) as refused:
            client.predict(*args, api_name=endpoint)
        message = str(refused.value)
        assert re.search(match, message) and len(message) < 400, message
        assert "\u202e" not in message
        costs[endpoint] = (cpu_seconds(pid) - cpu, rss_mb(pid) - rss)
        logged = app.log.read_bytes()[log_size:].decode(errors="replace")
        assert "Traceback" not in logged and len(logged) < 2000, logged[:3000]
    print("\napp CPU s and RSS growth MB per refusal:", costs)
    assert costs["/submit_checkpoint"][0] < 1.5  # building all 16 cost 5.4-7.8 s
    assert costs["/submit_predictions"][0] < 1.0  # parsing it cost 4.9 s
    assert costs["/submit_predictions"][1] < 60  # parsing it cost +237 MB
    assert costs["/submit_hub_model"][0] < 1.0
