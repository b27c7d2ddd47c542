from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import timm
import torch

from models import create_model, load_checkpoint, save_checkpoint
from models._registry import get_model_cfg
from models.archive import CheckpointFiles
from models.checkpoint import inspect_checkpoint
from models.checkpoint_config import make_config
from models.errors import CheckpointError, UnsafeCheckpoint
from models.factory import Ensemble


def saved(tmp_path: Path, name: str, strategy: str = "end_to_end", model=None) -> tuple:
    torch.manual_seed(0)
    model = model or create_model(name, strategy=strategy)
    members = model.members if isinstance(model, Ensemble) else [model]
    config = make_config(
        get_model_cfg(name),
        strategy,
        num_features=members[0].num_features,
        ensemble_size=len(members),
        provenance={"seed": 0},
    )
    return model.eval(), save_checkpoint(model, tmp_path / f"ckpt-{strategy}", config)


def zipped(directory: Path, extra: dict[str, bytes] | None = None, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for path in directory.iterdir():
            z.write(path, prefix + path.name)
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, strategy",
    [("resnet18_128", "end_to_end"), ("vit_tiny_test", "linear_probe"), ("vit_tiny_test", "lora")],
)
def test_round_trip_gives_identical_outputs(tmp_path, name, strategy):
    model, directory = saved(tmp_path, name, strategy)
    size = get_model_cfg(name).input_size
    x = torch.rand(3, 3, size, size)
    if strategy == "lora":  # make the adapter non-trivial: lora_B starts at zero
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_()
        model, directory = saved(tmp_path, name, strategy, model=model)
    loaded = load_checkpoint(directory)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))
    assert loaded.config["mitosis"]["strategy"] == strategy
    from_zip = load_checkpoint(_write(tmp_path / "c.zip", zipped(directory, prefix="ckpt/")))
    with torch.no_grad():
        assert torch.equal(model(x), from_zip.model(x))


def test_lora_layout_is_peft_s(tmp_path):
    _, directory = saved(tmp_path, "vit_tiny_test", "lora")
    names = sorted(p.name for p in directory.iterdir())
    assert names == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "config.json",
        "model.safetensors",
    ]
    adapter = json.loads((directory / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "vit_tiny_test"
    assert adapter["modules_to_save"] == ["head"]


def test_ensemble_round_trip_and_timm_local_dir(tmp_path):
    torch.manual_seed(1)
    members = [create_model("resnet18_128") for _ in range(2)]
    ensemble, directory = saved(tmp_path, "resnet18_128", model=Ensemble(members))
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        mean_prob = (torch.sigmoid(members[0](x)) + torch.sigmoid(members[1](x))) / 2
        assert torch.allclose(
            torch.sigmoid(load_checkpoint(directory).model(x)), mean_prob, atol=1e-6
        )
    single, single_dir = saved(tmp_path / "one", "resnet18_128")
    config = json.loads((single_dir / "config.json").read_text())
    assert config["pretrained_cfg"]["input_size"] == [3, 128, 128]
    assert list(config) == sorted(config)  # written with sort_keys
    via_timm = timm.create_model(f"local-dir:{single_dir}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(via_timm(x), single(x))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


class Boom:
    """A pickle whose payload would create a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickles_are_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Boom(marker))
    _, directory = saved(tmp_path, "resnet18_128")
    (directory / "model.pt").write_bytes(payload)
    with pytest.raises(UnsafeCheckpoint, match="contains 'model.pt'.*never loaded.*save_file"):
        load_checkpoint(directory)
    (directory / "model.pt").unlink()
    with pytest.raises(UnsafeCheckpoint, match="contains 'pytorch_model.bin'"):
        load_checkpoint(
            _write(tmp_path / "a.zip", zipped(directory, {"pytorch_model.bin": payload}))
        )
    with pytest.raises(UnsafeCheckpoint, match="contains 'weights.pth'"):
        load_checkpoint(_write(tmp_path / "weights.pth", payload))
    assert not marker.exists()


@pytest.mark.parametrize(
    "entry, error, message",
    [
        ("../evil/config.json", UnsafeCheckpoint, "points outside the checkpoint folder"),
        ("/etc/config.json", UnsafeCheckpoint, "points outside"),
        ("inner.zip", UnsafeCheckpoint, "nested archives"),
        ("notes.txt", CheckpointError, "not part of the format"),
        ("a/b/README.md", CheckpointError, "at its top or inside one folder"),
        ("x/config.json", CheckpointError, "same file name twice"),
    ],
)
def test_dangerous_zip_entries_are_refused(tmp_path, entry, error, message):
    _, directory = saved(tmp_path, "resnet18_128")
    with pytest.raises(error, match=message):
        CheckpointFiles.open(zipped(directory, {entry: b"x"}))


def test_symlinks_are_refused(tmp_path):
    _, directory = saved(tmp_path, "resnet18_128")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        info = zipfile.ZipInfo("config.json")
        info.external_attr = 0o120777 << 16
        z.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeCheckpoint, match="symbolic link"):
        CheckpointFiles.open(buffer.getvalue())
    (directory / "README.md").symlink_to("/etc/passwd")
    with pytest.raises(UnsafeCheckpoint, match="'README.md' in the checkpoint is a symbolic link"):
        load_checkpoint(directory)


def test_size_cap(tmp_path):
    _, directory = saved(tmp_path, "resnet18_128")
    with pytest.raises(CheckpointError, match="unpacks to .* MB; the limit is 1 MB"):
        CheckpointFiles.open(zipped(directory), max_bytes=2**20)


def test_broken_checkpoints_name_the_problem(tmp_path):
    _, directory = saved(tmp_path, "resnet18_128")
    weights = (directory / "model.safetensors").read_bytes()
    config = json.loads((directory / "config.json").read_text())
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="lacks model.safetensors"):
        load_checkpoint(directory)
    (directory / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="model.safetensors has no valid safetensors header"):
        load_checkpoint(directory)
    (directory / "model.safetensors").write_bytes(weights)
    (directory / "config.json").write_text(
        json.dumps({**config, "architecture": "resnet18.a1_in1k"})
    )
    load_checkpoint(directory)  # a tag names weights, not another network
    (directory / "config.json").write_text(json.dumps({**config, "architecture": "resnet34"}))
    with pytest.raises(  # timm's loader would build a resnet34, this server a resnet18
        CheckpointError,
        match="says architecture 'resnet34' but mitosis.model 'resnet18_128' is a resnet18: "
        "set architecture to 'resnet18'",
    ):
        load_checkpoint(directory)
    (directory / "config.json").write_text(
        json.dumps(
            {
                **config,
                "architecture": "resnet34",
                "mitosis": {**config["mitosis"], "model": "resnet34"},
            }
        )
    )
    with pytest.raises(CheckpointError, match="'layer1.0.conv1.weight' is|lacks|has"):
        load_checkpoint(directory)
    (directory / "config.json").write_text(
        json.dumps({**config, "mitosis": {**config["mitosis"], "model": "alexnet_9000"}})
    )
    with pytest.raises(CheckpointError, match="names the model 'alexnet_9000'"):
        load_checkpoint(directory)
    (directory / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not a valid checkpoint config"):
        load_checkpoint(directory)


def test_shape_mismatch_is_reported(tmp_path):
    _, directory = saved(tmp_path, "resnet18_128")
    config = json.loads((directory / "config.json").read_text())
    config["mitosis"]["model"] = config["architecture"] = "resnet10t"
    other = create_model("resnet10t")
    state = {k: v for k, v in other.state_dict().items()}
    state["fc.weight"] = torch.zeros(1, 7)
    from safetensors.torch import save_file

    save_file(state, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError,
        match=r"'fc.weight' is \(1, 7\) in the checkpoint but "
        r"resnet10t expects \(1, 512\)",
    ):
        load_checkpoint(directory)


@pytest.mark.parametrize("strategy", ["linear_probe", "lora"])
def test_cls_mean_models_round_trip(tmp_path, strategy):
    model, directory = saved(tmp_path, "vit_tiny_cls_mean_test", strategy)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), load_checkpoint(directory).model(x))


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda c: c["pretrained_cfg"].update(input_size=[3, 100000, 100000]),
            "input_size must be",
        ),
        (lambda c: c["pretrained_cfg"].update(std=[0.2, 0.0, 0.2]), "std > 0"),
        (lambda c: c["mitosis"].update(threshold=float("nan")), "threshold must be a number"),
        (lambda c: c["mitosis"].update(ensemble_size=10**6), "ensemble_size must be"),
        (lambda c: c["mitosis"].update(model="hf-hub:someone/anything"), "no hf-hub: ids"),
        (lambda c: c["mitosis"].update(model=["resnet18"]), "registry or timm name"),
    ],
)
def test_config_values_are_bounded(tmp_path, edit, message):
    _, directory = saved(tmp_path, "resnet18_128")
    config = json.loads((directory / "config.json").read_text())
    edit(config)
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(directory)


def test_lora_adapter_must_be_complete_and_plain(tmp_path):
    from safetensors.torch import load_file, save_file

    _, directory = saved(tmp_path, "vit_tiny_test", "lora")
    adapter = load_file(str(directory / "adapter_model.safetensors"))
    head = [k for k in adapter if "head" in k]
    save_file(
        {k: v for k, v in adapter.items() if k not in head},
        str(directory / "adapter_model.safetensors"),
    )
    with pytest.raises(CheckpointError, match="adapter_model.safetensors lacks 2 tensor"):
        load_checkpoint(directory)
    save_file(adapter, str(directory / "adapter_model.safetensors"))
    config = json.loads((directory / "adapter_config.json").read_text())
    config["megatron_core"] = "os"  # fields outside LoRA's own are ignored, never imported
    (directory / "adapter_config.json").write_text(json.dumps(config))
    assert load_checkpoint(directory).config["mitosis"]["strategy"] == "lora"


def test_malformed_safetensors_headers(tmp_path):
    import struct

    _, directory = saved(tmp_path, "resnet18_128")
    for header in (
        b"[1, 2]",
        json.dumps(
            {"fc.weight": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 0]}}
        ).encode(),
    ):
        (directory / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
        with pytest.raises(CheckpointError, match="invalid safetensors header"):
            from models.checkpoint import inspect_checkpoint

            inspect_checkpoint(CheckpointFiles.open(directory))


def test_a_config_size_the_network_cannot_take_is_refused_with_its_cost_unknown(tmp_path):
    _, directory = saved(tmp_path, "vit_tiny_test")  # a ViT built for 32 px
    with CheckpointFiles.open(directory) as files:
        summary = inspect_checkpoint(files)
    assert summary["flops_per_crop"] > 0
    config = json.loads((directory / "config.json").read_text())
    config["pretrained_cfg"]["input_size"] = [3, 64, 64]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="vit_tiny_test cannot run on 64x64 inputs"):
        with CheckpointFiles.open(directory) as files:
            inspect_checkpoint(files)
