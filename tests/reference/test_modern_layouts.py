"""Grad-CAM at the automatic layer of a ViT, a Swin and a ConvNeXt against a hand-written reference:
the layer's output and gradient captured with a plain hook and ``autograd.grad``, reshaped by hand
(prefix tokens dropped / channels-last permuted), and the paper's formula ``sum_k mean_ij(g_k) A_k``.
"""

from __future__ import annotations

import pytest
import timm
import torch

import camlens
from helpers import corr

CASES = [
    # (timm name, kwargs, input size, expected automatic layer, hand reshape of the layer output)
    (
        "vit_tiny_patch16_224",
        {"img_size": (64, 96), "depth": 4},
        (64, 96),
        "blocks.3.norm1",
        lambda t: t[:, 1:, :].reshape(t.shape[0], 4, 6, t.shape[-1]).permute(0, 3, 1, 2),
    ),
    (
        "deit_tiny_distilled_patch16_224",
        {"img_size": 64, "depth": 4},
        (64, 64),
        "blocks.3.norm1",
        lambda t: t[:, 2:, :].reshape(t.shape[0], 4, 4, t.shape[-1]).permute(0, 3, 1, 2),
    ),
    (
        "swin_tiny_patch4_window7_224",
        {"img_size": 64, "window_size": 2, "depths": (1, 1, 2, 1)},
        (64, 64),
        "norm",
        lambda t: t.permute(0, 3, 1, 2),
    ),
    ("convnext_atto", {}, (64, 64), "stages", lambda t: t),
]


def hand_gradcam(model, layer, x, classes, reshape):
    seen = {}
    handle = layer.register_forward_hook(lambda m, i, o: seen.setdefault("a", o))
    try:
        with torch.enable_grad():
            logits = model(x)
            score = logits.gather(1, classes[:, None]).sum()
            (g,) = torch.autograd.grad(score, seen["a"])
    finally:
        handle.remove()
    a, g = reshape(seen["a"].detach()), reshape(g)
    weights = g.mean(dim=(2, 3))  # Selvaraju et al. Eq. 1
    return torch.einsum("bk,bkij->bij", weights, a)  # Eq. 2 before the ReLU


@pytest.mark.parametrize(("name", "kwargs", "size", "layer", "reshape"), CASES, ids=[c[0] for c in CASES])
def test_gradcam_at_the_automatic_layer_equals_the_hand_reference(name, kwargs, size, layer, reshape):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=7, **kwargs).eval()
    x = torch.rand(2, 3, *size)
    result = camlens.explain(model, x, ["gradcam"])
    assert result.target_layer == layer
    reference = hand_gradcam(model, dict(model.named_modules())[layer], x, result.classes, reshape)
    assert reference.shape == result.raw["gradcam"].shape
    assert corr(reference, result.raw["gradcam"]) >= 0.999
    torch.testing.assert_close(result.raw["gradcam"], reference, rtol=1e-3, atol=1e-6)
