"""The layering, checked on every module's imports (top-level and inside functions).

``app.py, ui/ -> leaderboard, submissions -> evaluation -> models``, with ``settings`` and
``fileio`` below everything. ``leaderboard`` may read ``submissions``' records (one way only);
``evaluation/worker/`` is the one package that imports upward (the join point of queue, store
and scorer). The private label store is opened only by the scorer, the release and the worker.
Nothing below the UI imports gradio.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from settings import REPO_ROOT

RANK = {"settings": 0, "fileio": 0, "models": 1, "evaluation": 2, "submissions": 3}
RANK["leaderboard"] = 4  # reads submissions' records, so one above them
RANK["ui"] = RANK["app"] = 5
JOIN_POINT = "evaluation/worker/"
LABEL_READERS = {
    "evaluation/bundle.py",  # defines the store
    "evaluation/scoring.py",  # the scorer
    "evaluation/release.py",  # writes it
    "evaluation/worker/core.py",
    "evaluation/worker/upkeep.py",  # reads only the label-set hash
    "evaluation/score.py",  # the scorer's command line, through the scorer
    "evaluation/checkpoint.py",  # the same for checkpoints
    "evaluation/model_card.py",  # the shipped model's card, through the scorer
}
LABEL_NAMES = {"LabelStore", "load_labels", "PRIVATE_LABELS_CSV", "split_labels", "all_labels"}


def modules() -> list[Path]:
    found = [REPO_ROOT / "app.py", REPO_ROOT / "settings.py", REPO_ROOT / "fileio.py"]
    for package in ("models", "evaluation", "submissions", "leaderboard", "ui"):
        found += sorted((REPO_ROOT / package).rglob("*.py"))
    return found


def layer(path: Path) -> str:
    relative = path.relative_to(REPO_ROOT)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imports(path: Path) -> list[tuple[str, set[str]]]:
    """(module, names) of every import statement of the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, set()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, {alias.name for alias in node.names}))
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_imports_point_down(path):
    own = layer(path)
    relative = str(path.relative_to(REPO_ROOT))
    for module, _ in imports(path):
        target = module.split(".")[0]
        if target not in RANK or target == own:
            continue
        upward = RANK[target] > RANK[own] or (own, target) == ("submissions", "leaderboard")
        assert not upward or relative.startswith(JOIN_POINT), f"{relative} imports {module}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_only_the_scorer_the_release_and_the_worker_read_labels(path):
    relative = str(path.relative_to(REPO_ROOT))
    if relative in LABEL_READERS:
        return
    for module, names in imports(path):
        assert not (names & LABEL_NAMES), f"{relative} imports {names & LABEL_NAMES} from {module}"
    used = {n.attr for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Attribute)}
    assert not (used & LABEL_NAMES), f"{relative} uses {used & LABEL_NAMES}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_nothing_below_the_ui_imports_gradio(path):
    if layer(path) in ("ui", "app"):
        return
    for module, _ in imports(path):
        assert module.split(".")[0] not in ("gradio", "gradio_client"), path


def test_the_checks_can_fail(tmp_path, monkeypatch):
    bad = tmp_path / "leaderboard"
    bad.mkdir()
    (bad / "peek.py").write_text(
        "import gradio\nfrom evaluation.bundle import LabelStore\nfrom ui.space import Space\n"
    )
    monkeypatch.setattr("tests.test_layers.REPO_ROOT", tmp_path)
    for check in (
        test_imports_point_down,
        test_only_the_scorer_the_release_and_the_worker_read_labels,
        test_nothing_below_the_ui_imports_gradio,
    ):
        with pytest.raises(AssertionError):
            check(bad / "peek.py")


def test_no_module_is_over_400_lines_and_app_py_is_layout():
    sizes = {str(p.relative_to(REPO_ROOT)): len(p.read_text().splitlines()) for p in modules()}
    assert {p: n for p, n in sizes.items() if n > 400} == {}
    assert sizes["app.py"] <= 250
