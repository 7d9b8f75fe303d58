"""The architectures the sweep covers: (family, source, name, constructor kwargs, input size)."""

from __future__ import annotations

import torch
from torch import nn

# Small variants at small inputs keep the sweep fast; timm transformers are built for the input size.
# inception_v3 and the VGGs are covered by the seed suites (tests/contract, tests/reference).
SWEEP = [
    ("resnet", "torchvision", "resnet18", {}, 64),
    ("densenet", "torchvision", "densenet121", {}, 64),
    ("mobilenet_v2", "torchvision", "mobilenet_v2", {}, 64),
    ("mobilenet_v3", "torchvision", "mobilenet_v3_small", {}, 64),
    ("mobilenet_v3", "timm", "mobilenetv3_small_050", {}, 64),
    ("mobilenet_v4", "timm", "mobilenetv4_conv_small", {}, 64),
    ("efficientnet", "torchvision", "efficientnet_b0", {}, 64),
    ("efficientnet", "timm", "efficientnet_b0", {}, 64),
    ("regnet", "torchvision", "regnet_y_400mf", {}, 64),
    ("regnet", "timm", "regnetx_002", {}, 64),
    ("ghostnet", "timm", "ghostnet_050", {}, 64),
    ("convnext", "timm", "convnext_atto", {}, 64),
    ("convnext", "torchvision", "convnext_tiny", {}, 64),
    ("edgenext", "timm", "edgenext_xx_small", {}, 64),
    ("poolformer", "timm", "poolformerv2_s12", {}, 64),
    ("vit", "timm", "vit_tiny_patch16_224", {"img_size": 64}, 64),
    ("vit", "timm", "deit_tiny_distilled_patch16_224", {"img_size": 64}, 64),
    ("vit", "timm", "vit_base_patch14_reg4_dinov2", {"img_size": 56, "depth": 2, "embed_dim": 96, "num_heads": 2}, 56),
    ("vit", "timm", "vit_little_patch16_reg4_gap_256", {"img_size": 64, "depth": 2}, 64),
    ("vit", "timm", "vit_tiny_patch16_224", {"img_size": 64, "depth": 4, "act_layer": "quick_gelu"}, 64),
    ("vit", "timm", "vit_tiny_patch16_224", {"img_size": (64, 96)}, (64, 96)),
    (
        "vit",
        "torchvision",
        "VisionTransformer",
        {"image_size": 64, "patch_size": 16, "num_layers": 2, "num_heads": 2, "hidden_dim": 64, "mlp_dim": 128},
        64,
    ),
    ("eva", "timm", "eva02_tiny_patch14_224", {"img_size": 56}, 56),
    ("beit", "timm", "beitv2_base_patch16_224", {"img_size": 64, "depth": 2}, 64),
    ("swin", "timm", "swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 2}, 64),
    ("swin", "torchvision", "swin_t", {}, 64),
    ("maxvit", "timm", "maxvit_nano_rw_256", {"img_size": 64}, 64),
    ("coatnet", "timm", "coatnet_nano_rw_224", {"img_size": 64}, 64),
    ("levit", "timm", "levit_128s", {}, 224),
    ("mixer", "timm", "mixer_s16_224", {"img_size": 64}, 64),
    ("tinyvit", "timm", "tiny_vit_5m_224", {}, 64),
    ("fastvit", "timm", "fastvit_t8", {}, 64),
    ("shufflenet", "torchvision", "shufflenet_v2_x0_5", {}, 64),
    ("mnasnet", "torchvision", "mnasnet0_5", {}, 64),
]


def build_sweep(source: str, name: str, kwargs: dict, seed: int = 0) -> nn.Module:
    """A randomly initialised classifier with 10 classes, in eval mode."""
    torch.manual_seed(seed)
    if source == "timm":
        import timm

        model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    else:
        import torchvision

        if name == "VisionTransformer":  # vit_b_16's structure, smaller
            model = torchvision.models.VisionTransformer(num_classes=10, **kwargs)
        else:
            model = getattr(torchvision.models, name)(weights=None, num_classes=10, **kwargs)
    with torch.no_grad():  # torchvision's ViT starts with a zero head: no gradient would reach anything
        for module in model.modules():
            if isinstance(module, nn.Linear) and not module.weight.any():
                module.weight.normal_(0, 0.02)
    return model.eval()


def sweep_id(entry: tuple) -> str:
    family, source, name, kwargs, size = entry
    extra = "-nonsquare" if isinstance(size, tuple) else ""
    return f"{source}-{name}{extra}"
