"""The layering, checked on every module's imports (top-level and inside functions).

``settings, fileio < models < training < evaluation < store < submissions, leaderboard <
worker < ui < app``: a module imports only packages of a lower rank (or its own); the two
packages of one rank do not import each other. The documented command-line aliases name a
module above them without importing it (``runpy``), and only they may. The private label store
is opened only by the scorer, the release and the worker. Nothing below the UI imports gradio;
the store loads neither torch nor gradio. No two modules share a file name unless they play
the same role.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from settings import REPO_ROOT

ORDER = [
    ("settings", "fileio"),
    ("models",),
    ("training",),
    ("evaluation",),
    ("store",),
    ("submissions", "leaderboard"),
    ("worker",),
    ("ui",),
    ("app",),
]
RANK = {package: rank for rank, packages in enumerate(ORDER) for package in packages}
PACKAGES = [p for packages in ORDER for p in packages if p not in ("settings", "fileio", "app")]
ALIASES = {  # documented `python -m` names kept for users and scripts
    "evaluation/worker.py": "worker",
    "models/train.py": "training.train",
}
LABEL_READERS = {
    "evaluation/bundle.py",  # defines the store
    "evaluation/scoring.py",  # the scorer
    "evaluation/release.py",  # writes it
    "evaluation/score.py",  # the scorer's command line, through the scorer
    "evaluation/run_checkpoint.py",  # the same for checkpoints
    "evaluation/model_card.py",  # the shipped model's card, through the scorer
    "worker/runner.py",
    "worker/maintenance.py",  # reads only the label-set hash
    "worker/label_store.py",  # checks the store as a whole, or fetches it
}
LABEL_NAMES = {"LabelStore", "load_labels", "PRIVATE_LABELS_CSV", "split_labels", "all_labels"}
SHARED_ROLES = {"__init__.py", "__main__.py", "errors.py"}  # the same role in every package


def modules() -> list[Path]:
    found = [REPO_ROOT / "app.py", REPO_ROOT / "settings.py", REPO_ROOT / "fileio.py"]
    for package in PACKAGES:
        found += sorted((REPO_ROOT / package).rglob("*.py"))
    return found


def layer(path: Path) -> str:
    relative = path.relative_to(REPO_ROOT)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imports(path: Path) -> list[tuple[str, set[str]]]:
    """(module, names) of every import statement, and of every module named to ``runpy``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, set()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, {alias.name for alias in node.names}))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) in ("run_module", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.args[0].value, set()))
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_imports_point_down(path):
    own = layer(path)
    relative = str(path.relative_to(REPO_ROOT))
    for module, _ in imports(path):
        target = module.split(".")[0]
        if target not in RANK or target == own:
            continue
        if ALIASES.get(relative) == module:
            continue
        assert RANK[target] < RANK[own], f"{relative} imports {module}"


def test_aliases_only_forward():
    for relative, target in ALIASES.items():
        tree = ast.parse((REPO_ROOT / relative).read_text())
        assert imports(REPO_ROOT / relative) == [("runpy", set()), (target, set())], relative
        assert len(tree.body) == 3, f"{relative} does more than forward to {target}"


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


def test_no_two_modules_share_a_name_unless_they_share_a_role():
    names = Counter(
        path.name
        for path in modules()
        if "migrations" not in path.parts and str(path.relative_to(REPO_ROOT)) not in ALIASES
    )
    assert {n: k for n, k in names.items() if k > 1 and n not in SHARED_ROLES} == {}


def test_the_store_loads_neither_torch_nor_gradio():
    code = (
        "import sys, store.engine, store.locks, store.entry, store.schema;"
        "print(sorted({'torch', 'gradio'} & set(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_the_checks_can_fail(tmp_path, monkeypatch):
    bad = tmp_path / "leaderboard"
    bad.mkdir()
    (bad / "peek.py").write_text(
        "import gradio\nfrom evaluation.bundle import LabelStore\nfrom ui.space import Space\n"
    )
    (bad / "peer.py").write_text("from submissions.intake import Submissions\n")
    (bad / "hop.py").write_text("import runpy\nrunpy.run_module('worker')\n")
    monkeypatch.setattr("tests.test_layers.REPO_ROOT", tmp_path)
    for check in (
        test_imports_point_down,
        test_only_the_scorer_the_release_and_the_worker_read_labels,
        test_nothing_below_the_ui_imports_gradio,
    ):
        with pytest.raises(AssertionError):
            check(bad / "peek.py")
    for sneaky in ("peer.py", "hop.py"):
        with pytest.raises(AssertionError):
            test_imports_point_down(bad / sneaky)


def test_no_module_is_over_400_lines_and_app_py_is_layout():
    sizes = {str(p.relative_to(REPO_ROOT)): len(p.read_text().splitlines()) for p in modules()}
    assert {p: n for p, n in sizes.items() if n > 400} == {}
    assert sizes["app.py"] <= 250
