"""The README and docs/ cannot drift from the code: what they name exists and runs.

Every ``python -m`` command they show answers ``--help``; every dotted name of the project
(``store.engine.open_store``) imports; every project path (``evaluation/metrics.py``) exists;
every link between pages resolves; the checkpoint recipe of docs/submitting.md runs. The
README stays one page.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from settings import REPO_ROOT
from tests import reaper

PAGES = [
    REPO_ROOT / "README.md",
    REPO_ROOT / "ABOUT.md",
    *sorted((REPO_ROOT / "docs").glob("*.md")),
]
PACKAGES = (
    "app settings fileio models training evaluation store submissions leaderboard worker ui bench"
).split()
COMMAND = re.compile(r"python -m ([a-z_][\w.]*+)(?!<)")  # not `bench.<name>`
DOTTED = re.compile(r"`(?:python -m )?((?:" + "|".join(PACKAGES) + r")(?:\.[A-Za-z_]\w*)+)")
PATH = re.compile(r"`((?:" + "|".join(PACKAGES + ["tests", "docs", "scripts"]) + r")/[\w./-]*)`")
RUN_MARK = {k: v for k, v in os.environ.items() if k == reaper.MARK}  # dies with the run
LINK = re.compile(r"\]\(((?!https?:)[^)#\s]+)(?:#[^)]*)?\)")


def text(page: Path) -> str:
    return page.read_text()


def found(pattern: re.Pattern) -> dict[str, Path]:
    """Each match of ``pattern`` in the pages, with the first page that names it."""
    names: dict[str, Path] = {}
    for page in PAGES:
        for match in pattern.findall(text(page)):
            names.setdefault(match.rstrip("."), page)
    return names


def test_the_readme_is_one_page():
    assert len(text(REPO_ROOT / "README.md").splitlines()) <= 200


def test_every_command_the_docs_show_answers_help():
    commands = sorted(m for m in found(COMMAND) if m.split(".")[0] in PACKAGES)
    assert {"worker", "evaluation.worker", "training.train", "models.train"} <= set(commands)
    probe = (
        "import contextlib, io, json, runpy, sys\n"
        "results = {}\n"
        "for module in sys.argv[1:]:\n"
        "    sys.argv = [module, '--help']\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
        "            code = 0\n"
        "        except SystemExit as e:\n"
        "            code = e.code or 0\n"
        "    results[module] = [code, 'usage:' in out.getvalue()]\n"
        "print(json.dumps(results))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *commands],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", **RUN_MARK},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert {m: r for m, r in results.items() if r != [0, True]} == {}


def test_every_dotted_name_the_docs_use_imports():
    missing = {}
    for name, page in found(DOTTED).items():
        parts = name.split(".")
        if parts[-1] in ("py", "md", "json"):  # a file name: the path check reads those
            continue
        for cut in range(len(parts), 0, -1):
            try:
                target = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attribute in parts[cut:]:
                    target = getattr(target, attribute)
            except AttributeError:
                missing[name] = page.name
            break
        else:
            missing[name] = page.name
    assert missing == {}


NOT_YET = {"models/default-evidence/cv.json"}  # written by the GPU selection run (issue 22)


def test_every_path_and_link_the_docs_use_exists():
    paths = {
        p: page.name
        for p, page in found(PATH).items()
        if not (REPO_ROOT / p).exists() and p not in NOT_YET
    }
    assert paths == {}
    links = {}
    for page in PAGES:
        for target in LINK.findall(text(page)):
            if not (page.parent / target).exists():
                links[f"{page.name} -> {target}"] = True
    assert links == {}


def test_the_checkpoint_recipe_runs(tmp_path):
    page = text(REPO_ROOT / "docs" / "submitting.md")
    recipe = page.split("## Your own PyTorch model as a checkpoint", 1)[1]
    code = recipe.split("```python\n", 1)[1].split("```", 1)[0]
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        check=True,
        env={
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO_ROOT),
            "PATH": "/usr/bin:/bin",
            **RUN_MARK,
        },
        timeout=300,
    )
    from models.archive import CheckpointFiles
    from models.checkpoint import checkpoint_from_files

    with CheckpointFiles.open(tmp_path / "my_checkpoint") as files:
        checkpoint = checkpoint_from_files(files)
    assert checkpoint.config["mitosis"]["provenance"]["train_split"] == "amibr_train"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_names_a_module_that_is_gone(page):
    gone = ["leaderboard.store", "evaluation/worker/", "submissions.tables", "models.select"]
    assert [g for g in gone if g in text(page)] == []


def test_the_layout_page_names_every_module():
    page = text(REPO_ROOT / "docs" / "development.md")
    named = set(re.findall(r"`([\w/]+?)(?:\.py)?`", page))
    missing = []
    for package in ("models", "training", "evaluation", "store", "submissions", "leaderboard"):
        for module in sorted((REPO_ROOT / package).glob("*.py")):
            if module.stem not in named and module.stem not in ("__init__", "errors"):
                missing.append(f"{package}/{module.name}")
    for package in ("worker", "ui"):
        for module in sorted((REPO_ROOT / package).glob("*.py")):
            if module.stem not in named and module.stem != "__init__":
                missing.append(f"{package}/{module.name}")
    assert missing == []
