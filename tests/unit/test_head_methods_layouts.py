"""finercam and shapleycam on token (ViT) and channels-last (Swin-like) layers: the head's derivatives are
taken on the layer's own output and laid on the grid as the activations are. Oracle: the papers' formulas by
hand with a forward hook and torch.autograd (the Hessian-vector product through fused attention, on the math
kernel), the token grid built by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import camlens
from camlens.synthetic import TinyViT
from helpers import assert_untouched, snapshot


class ChannelsLast(nn.Module):
    """A Swin-like model: a patch embedding, a block on (B, H, W, C) maps with self-attention over the
    positions (fused SDPA), a norm, then a mean-pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, stride=4)
        self.qkv = nn.Linear(16, 48)
        self.norm = nn.LayerNorm(16)
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.norm(self.embed(x).permute(0, 2, 3, 1))  # (B, H, W, C): the layer
        b, h, w, c = a.shape
        q, k, v = self.qkv(a.reshape(b, h * w, c)).chunk(3, dim=-1)
        mixed = torch.nn.functional.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return self.head(torch.tanh(self.mix(mixed)).mean(dim=1))


def _finer_score(logits, classes, count=3):
    rows = []
    for b in range(logits.shape[0]):
        c = int(classes[b])
        distance = (logits[b] - logits[b, c]).abs().detach()
        distance[c] = float("inf")
        similar = distance.argsort()[:count]
        p = torch.softmax(logits[b], 0)[similar]
        rows.append((p * (logits[b, c] - logits[b, similar])).sum() / p.sum())
    return torch.stack(rows).sum()


def _by_hand(model, x, layer, classes, to_grid):
    """(finercam raw, shapleycam raw) by the formulas, with a hook on ``layer``."""
    kept = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda _m, _i, out: kept.setdefault("A", out))
    try:
        with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):
            logits = model(x)
            A = kept["A"]
            (finer,) = torch.autograd.grad(_finer_score(logits, classes), A, retain_graph=True)
            score = logits.gather(1, classes[:, None]).sum()
            (g,) = torch.autograd.grad(score, A, create_graph=True)
            (hvp,) = torch.autograd.grad(g, A, grad_outputs=A.detach())
    finally:
        handle.remove()
    a, finer, g, hvp = (to_grid(t.detach()) for t in (A, finer, g, hvp))
    finer_map = torch.einsum("bk,bkij->bij", finer.mean(dim=(2, 3)), a)
    shapley_map = torch.einsum("bk,bkij->bij", (g - 0.5 * hvp).mean(dim=(2, 3)), a)
    return finer_map, shapley_map


def _tokens_to_grid(t):  # (B, 1 + 64, C): drop the class token, 8 x 8 grid, channels first
    return t[:, 1:].reshape(t.shape[0], 8, 8, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("kind", ["tokens", "nhwc"])
def test_finercam_and_shapleycam_on_token_and_channels_last_layers_are_the_formulas(kind):
    torch.manual_seed(0)
    if kind == "tokens":
        model, layer, to_grid = TinyViT().eval(), "blocks.2.norm1", _tokens_to_grid
        x = torch.rand(2, 3, 32, 32)
    else:
        model, layer, to_grid = ChannelsLast().eval(), "norm", lambda t: t.permute(0, 3, 1, 2)
        x = torch.rand(2, 3, 32, 32)
    classes = torch.tensor([1, 3])
    before = snapshot(model)
    result = camlens.explain(model, x, ["finercam", "shapleycam", "gradcam"], target_layer=layer, targets=classes)
    assert_untouched(model, before)
    assert result.layout.kind == kind
    finer, shapley = _by_hand(model, x, layer, classes, to_grid)
    torch.testing.assert_close(result.raw["finercam"], finer, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(result.raw["shapleycam"], shapley, rtol=1e-4, atol=1e-6)
    # the attention after the layer is curved: the Hessian term is not zero, so ShapleyCAM is not Grad-CAM
    assert not torch.allclose(result.raw["shapleycam"], result.raw["gradcam"], rtol=1e-3, atol=1e-6)


def test_the_math_kernel_is_only_for_the_call():
    """After explain, fused attention is allowed again (the kernel choice is restored)."""
    model = TinyViT().eval()
    camlens.explain(model, torch.rand(1, 3, 32, 32), ["shapleycam"], target_layer="blocks.2.norm1")
    assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
