from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from models import create_model, get_model_cfg, is_model, list_models, register_model
from models._registry import ModelCfg
from models.errors import ModelError
from models.factory import build_backbone
from models.pretrained import PACKAGE_FILES, export_imagenet_offline

PAPER_AND_FOUNDATION = [
    "efficientnetv2_m",
    "swin_base_patch4_window7_224",
    "vit_large_patch16_224",
    "virchow",
    "virchow2",
    "uni",
    "uni2_h",
    "h_optimus_0",
    "h_optimus_1",
    "prov_gigapath",
]


@pytest.mark.parametrize("name", list_models())
def test_every_registered_variant_builds_and_runs_a_forward_pass(name):
    cfg = get_model_cfg(name)
    size = cfg.input_size
    with torch.device("meta"):  # the architecture, not its memory: the big ones are 1B params
        model = build_backbone(cfg)
        out = model(torch.zeros(2, 3, size, size))
    assert out.shape == (2, 1)


def test_the_papers_and_foundation_models_are_registered():
    assert set(PAPER_AND_FOUNDATION) <= set(list_models())
    virchow2 = get_model_cfg("virchow2")
    assert virchow2.hub_id == "paige-ai/Virchow2" and virchow2.weights == "hf_hub"
    assert virchow2.model_args["act_layer"] is torch.nn.SiLU
    assert get_model_cfg("h_optimus_0").model_args["dynamic_img_size"] is False


@pytest.mark.parametrize(
    "name", ["resnet18_128", "mobilenetv2_100.imagenet_offline", "vit_tiny_test"]
)
def test_small_variants_run_for_real(name):
    cfg = get_model_cfg(name)
    out = create_model(name)(torch.rand(2, 3, cfg.input_size, cfg.input_size))
    assert out.shape == (2, 1) and torch.isfinite(out).all()


def test_any_timm_architecture_by_name():
    assert not is_model("resnet10t")
    assert create_model("resnet10t")(torch.rand(1, 3, 64, 64)).shape == (1, 1)


def test_unknown_name_and_duplicate_registration_raise():
    with pytest.raises(ValueError, match="Unknown model 'no_such_net'.*timm.list_models"):
        get_model_cfg("no_such_net")
    with pytest.raises(ValueError, match="already registered"):
        register_model(lambda: ModelCfg("resnet18_128", "resnet18"))
    with pytest.raises(ValueError, match="Unknown strategy 'distill'"):
        create_model("resnet18_128", strategy="distill")


def test_hub_weights_are_refused_offline_with_a_clear_message():
    with pytest.raises(ModelError, match="virchow2 needs its pretrained weights .* HF_HUB_OFFLINE"):
        create_model("virchow2", pretrained=True)


def test_offline_imagenet_weights_are_copied_by_position(tmp_path):
    # a stand-in for the package file: torchvision-style names, timm's order and shapes
    source = create_model("mobilenetv2_100").state_dict()
    tensors = {
        f"{i}.features.{i}.weight": torch.randn_like(v.float())
        for i, (k, v) in enumerate(
            (k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")
        )
    }
    classifier = [k for k in tensors if k.startswith(f"{len(tensors) - 2}.")][0]
    tensors[classifier] = torch.randn(1000, 1280)  # ImageNet's 1000-class head is dropped
    save_file(tensors, str(tmp_path / "mobilenetv2_100.safetensors"))
    model = create_model("mobilenetv2_100.imagenet_offline", pretrained=True, imagenet_dir=tmp_path)
    assert torch.equal(model.conv_stem.weight, tensors["0.features.0.weight"])
    assert torch.equal(model.bn2.running_var, list(tensors.values())[-3])
    assert model.classifier.weight.shape == (1, 1280)
    half = tmp_path / "half"  # what is carried to a GPU machine: half the bytes
    half.mkdir()
    cfg = get_model_cfg("mobilenetv2_100.imagenet_offline")
    export_imagenet_offline(cfg, half / "mobilenetv2_100.safetensors", torch.float16, tmp_path)
    small = create_model("mobilenetv2_100.imagenet_offline", pretrained=True, imagenet_dir=half)
    assert torch.equal(small.conv_stem.weight, tensors["0.features.0.weight"].half().float())
    assert small.conv_stem.weight.dtype == torch.float32


def test_missing_weight_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(PACKAGE_FILES, "mobilenetv2_100", ("no_such_weight_package", "x.pth"))
    with pytest.raises(
        ModelError, match="PyPI package no-such-weight-package.*never needed to run"
    ):
        create_model("mobilenetv2_100.imagenet_offline", pretrained=True)


def test_strategies_choose_what_trains():
    e2e = create_model("vit_tiny_test")
    assert all(p.requires_grad for p in e2e.parameters())
    probe = create_model("vit_tiny_test", strategy="linear_probe")
    assert {n for n, p in probe.named_parameters() if p.requires_grad} == {
        "head.weight",
        "head.bias",
    }
    lora = create_model("vit_tiny_test", strategy="lora")
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and any("head" in n for n in trainable)
    assert not any("blocks.0.attn.qkv.base_layer" in n for n in trainable)
    config = lora.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.3)
    assert set(config.target_modules) == {"qkv", "proj", "fc1", "fc2"}


def test_virchow_style_embedding_is_class_token_and_mean_patch_token():
    assert get_model_cfg("virchow2").embedding == "cls_mean"
    model = create_model("vit_tiny_cls_mean_test", strategy="linear_probe").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        embedding = model.forward_head(tokens, pre_logits=True)
    prefix = model.num_prefix_tokens
    assert prefix == 3  # class token + 2 register tokens
    assert embedding.shape == (2, 2 * 192)
    assert torch.allclose(embedding[:, :192], tokens[:, 0])
    assert torch.allclose(embedding[:, 192:], tokens[:, prefix:].mean(1))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "head.weight",
        "head.bias",
    }
