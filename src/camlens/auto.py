"""The method name ``auto``: per architecture family, the method the ground-truth benchmark ranks best.

The choice table is :data:`camlens.catalog.AUTO_CHOICE` (torch-free; its figures in
``docs/guide/attention.md``, section "auto"). The family is read from one forward pass on the first image
under :class:`~camlens.methods.attention.ExplicitAttention` (the model left as found):

* ``vit``: every attention block attends over the same tokens, with a class token (timm / torchvision /
  HuggingFace ViTs, DeiT, EVA, BEiT, DINOv2, the tiny ViT of :mod:`camlens.synthetic`);
* ``vit_pooled``: the same without a class token (mean-pooled ViTs);
* ``hybrid``: attention over token sets that change from block to block (Swin, PVT, MobileViT, CoAtNet):
  the attention methods' definitions exclude them;
* ``cnn``: no attention at all (CNNs and every other network).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from camlens.catalog import AUTO_CHOICE, AUTO_METHOD
from camlens.methods.attention import ExplicitAttention, _has_class_token, checked_attention


def family_of(model: nn.Module, x: Tensor) -> str:
    """The architecture family of ``model`` on inputs like ``x`` (a key of :data:`~camlens.catalog.AUTO_CHOICE`).

    Run on the eager module inside :func:`camlens.guard.guard` (buffers put back), one image, no gradient.
    """
    mode = ExplicitAttention()
    with torch.no_grad(), mode:
        model(x[:1])
    if not mode.probabilities:
        return "cnn"
    try:
        _, prefix = checked_attention(AUTO_METHOD, model, x[:1], mode.probabilities)
    except ValueError:
        return "hybrid"
    return "vit" if _has_class_token(model, prefix) else "vit_pooled"


def auto_method(model: nn.Module, x: Tensor) -> str:
    """The method ``auto`` runs on ``model`` (see :data:`~camlens.catalog.AUTO_CHOICE`)."""
    return AUTO_CHOICE[family_of(model, x)]


def gradcam_note(model: nn.Module, x: Tensor, target_layer: str | None = None) -> str | None:
    """A line for the user when Grad-CAM at ``target_layer`` (None: the automatic layer) is known to mislead:
    a LayerNorm of a class-token ViT (its output is the attention's or MLP's input), where the sign of the
    channel-mean weights is arbitrary (``docs/evaluation/synthetic_meaning.md``); None otherwise.

    Runs inside :func:`camlens.guard.guard`: one forward without gradient (the family), and for a class-token
    ViT without ``target_layer`` one forward and backward to find the automatic layer (then cached).
    """
    from camlens.guard import guard
    from camlens.layers import default_layer, resolve_layer

    with guard(model) as guarded:
        eager = guarded.model
        if family_of(eager, x) != "vit":
            return None
        name, layer = default_layer(eager, x) if target_layer is None else resolve_layer(eager, target_layer)
    if not isinstance(layer, nn.LayerNorm):
        return None
    return (
        f"gradcam at {name!r}, a LayerNorm of a class-token vision transformer, is known to mislead: the sign of "
        f"its channel weights is arbitrary, so its peak lands on the evidence on {AUTO_EVIDENCE['gradcam']} "
        f"(ground-truth benchmark); --methods auto runs {AUTO_CHOICE['vit']} here ({AUTO_EVIDENCE['vit']})"
    )


#: The measured shares behind the note (``docs/evaluation/synthetic_meaning.md``, the tiny ViT).
AUTO_EVIDENCE = {
    "gradcam": "18.1% of images on average over 10 training seeds (0.8-49.0% by seed)",
    "vit": "94.5% on average, 74-100% by seed, never below Grad-CAM",
}

__all__ = ["AUTO_EVIDENCE", "auto_method", "family_of", "gradcam_note"]
