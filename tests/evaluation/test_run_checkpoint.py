from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from evaluation.bundle import PublicBundle
from evaluation.errors import TimeLimitExceeded
from evaluation.release import build_release
from evaluation.run_checkpoint import load_split_crops, predict_splits
from evaluation.run_checkpoint import main as run_checkpoint_main
from evaluation.score import main as score_main
from models.predictor import Predictor
from settings import REPO_ROOT
from tests.conftest import TINY_COUNTS
from tests.models.conftest import tiny_checkpoint

pytestmark = pytest.mark.slow  # processes, servers or real training: `make test` only


@pytest.fixture
def tiny_release(tiny_source, tmp_path):
    build_release(
        tiny_source,
        tmp_path / "data" / "public",
        tmp_path / "data" / "private",
        expected=TINY_COUNTS,
    )
    return tmp_path / "data"


def test_predict_splits_and_the_crop_cache(tiny_release, tmp_path):
    bundle = PublicBundle(tiny_release / "public")
    cache = tmp_path / "cache"
    crops = load_split_crops(bundle, "atnorm_md", cache)
    assert crops.shape == (7, 128, 128, 3) and crops.dtype == np.uint8
    assert len(list(cache.glob("atnorm_md-*.npy"))) == 1
    assert np.array_equal(load_split_crops(bundle, "atnorm_md", cache), crops)
    predictor = Predictor(tiny_checkpoint(tmp_path / "ckpt"))
    frame = predict_splits(predictor, bundle, ["amibr_test", "atnorm_md"], cache_dir=cache)
    assert list(frame.columns) == ["image_id", "prob_atypical", "label"]
    assert len(frame) == 12 and set(frame["label"]) <= {"atypical", "normal"}


@pytest.mark.parametrize(
    ("pause_s", "reported", "finishes"), [(0.6, True, True), (0.6, False, False)]
)
def test_pauses_for_the_space_s_users_move_the_deadline(
    tiny_release, tmp_path, pause_s, reported, finishes
):
    """A 1 s limit; the first two chunks wait ``pause_s`` each for the Space's users. Reported,
    1.2 s of pauses move the deadline (the model keeps its second); unreported, they do not."""
    bundle = PublicBundle(tiny_release / "public")
    predictor = Predictor(tiny_checkpoint(tmp_path / "ckpt"))
    calls = []

    def users_first(done: int, total: int) -> float:
        calls.append(done)
        if len(calls) > 2:
            return 0.0
        time.sleep(pause_s)  # the pause itself: real time passing
        return pause_s if reported else 0.0

    def run():
        return predict_splits(
            predictor,
            bundle,
            ["amibr_test", "atnorm_br", "atnorm_md"],
            deadline=time.monotonic() + 1.0,
            before_chunk=users_first,
        )

    if finishes:
        assert len(run()) == len(bundle.manifest) and len(calls) >= 3
    else:
        with pytest.raises(TimeLimitExceeded, match="within the time limit"):
            run()


def test_checkpoint_command_scores_several_checkpoints(tiny_release, tmp_path, monkeypatch, capsys):
    a = tiny_checkpoint(tmp_path / "a")
    b = tiny_checkpoint(tmp_path / "b", "vit_tiny_test")
    env = {
        **os.environ,
        "MITOSIS_DATA_DIR": str(tiny_release),
        "MITOSIS_BOOTSTRAP_RESAMPLES": "1000",
    }
    out = subprocess.run(
        [sys.executable, "-m", "evaluation.run_checkpoint", str(a), str(b), "--json"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    assert set(report["checkpoints"]) == {str(a), str(b)}
    bas = [
        report["checkpoints"][str(c)]["atnorm_br"]["balanced_accuracy"]["estimate"] for c in (a, b)
    ]
    assert report["summary"]["atnorm_br"]["ba_mean"] == pytest.approx(np.mean(bas))
    assert report["summary"]["atnorm_br"]["ba_std"] == pytest.approx(np.std(bas))
    written = tmp_path / "p.csv"  # the other commands in this process (the entry point ran)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert run_checkpoint_main([str(a), "--predictions-out", str(written)]) == 0
    capsys.readouterr()
    assert score_main([str(written), "--json"]) == 0
    assert (
        json.loads(capsys.readouterr().out)["splits"]["atnorm_br"]["balanced_accuracy"]["estimate"]
        == report["checkpoints"][str(a)]["atnorm_br"]["balanced_accuracy"]["estimate"]
    )
    with pytest.raises(SystemExit) as refused:  # a sentence and exit 2, not a traceback
        run_checkpoint_main([str(a), "--split", "amibr_tst"])
    assert refused.value.code == 2
    assert "invalid choice: 'amibr_tst' (choose from 'amibr_test'" in capsys.readouterr().err


def test_every_reading_of_the_test_sets_is_logged_with_its_reason(
    tiny_release, tmp_path, monkeypatch, capsys
):
    a = tiny_checkpoint(tmp_path / "a")
    monkeypatch.setenv("MITOSIS_DATA_DIR", str(tiny_release))
    log = tmp_path / "readings.json"
    command = [str(a), "--log-reading", str(log)]
    with pytest.raises(SystemExit) as refused:
        run_checkpoint_main(command)
    assert refused.value.code == 2 and "needs --reason" in capsys.readouterr().err
    assert not log.exists()
    for reason in ("final model, recipe chosen by CV", "second reading"):
        assert run_checkpoint_main([*command, "--reason", reason]) == 0
    readings = json.loads(log.read_text())
    assert [r["reading"] for r in readings] == [1, 2]
    assert readings[0]["reason"] == "final model, recipe chosen by CV"
    assert (
        readings[0]["weights_sha256"][0]
        == hashlib.sha256((a / "model.safetensors").read_bytes()).hexdigest()
    )
    assert set(readings[1]["ba"]) == {"amibr_test", "atnorm_br", "atnorm_md"}
