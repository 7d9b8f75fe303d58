"""LeGrad (Bousselham et al. 2024) for vision transformers: gradients at every block's attention map.

timm ViTs compute attention with the fused ``F.scaled_dot_product_attention``, which never
materialises the attention probabilities; ``nn.MultiheadAttention`` (torchvision ViTs, open_clip) runs
``F.multi_head_attention_forward``, which asks for none. :class:`ExplicitAttention`, a
:class:`~torch.overrides.TorchFunctionMode` active for one forward, computes each such call as
``softmax(Q K^T / sqrt(d) + mask) V`` explicitly and keeps the probabilities, so their gradient can be
taken. No module is changed (no ``fused_attn`` flag is flipped).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from camlens.methods.context import MethodContext
from camlens.targets import target_scores


class ExplicitAttention(TorchFunctionMode):
    """Computes ``F.scaled_dot_product_attention`` explicitly and records the attention probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.probabilities: list[Tensor] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.multi_head_attention_forward:
            return self._multi_head(func, args, kwargs)
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        names = ["query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale"]
        bound = dict(zip(names, args, strict=False))
        bound.update(kwargs)
        q, k, v = bound["query"], bound["key"], bound["value"]
        if bound.get("dropout_p", 0.0) or bound.get("enable_gqa", False):
            return func(*args, **kwargs)  # training-mode dropout or grouped queries: leave it fused
        scale = bound.get("scale") or 1.0 / math.sqrt(q.shape[-1])
        logits = (q @ k.transpose(-2, -1)) * scale
        mask = bound.get("attn_mask")
        if bound.get("is_causal", False):
            causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
            logits = logits.masked_fill(~causal, float("-inf"))
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
        probabilities = logits.softmax(dim=-1)
        self.probabilities.append(probabilities)
        return probabilities @ v

    def _multi_head(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """``nn.MultiheadAttention`` (open_clip, torchvision) calls ``F.multi_head_attention_forward``, which is
        handed here whole: its common form (one input projection, no extra key/value bias, no padding mask,
        no dropout) is computed as the projections around the explicit attention above; the rest runs as is."""
        names = ["query", "key", "value", "embed_dim", "num_heads", "in_proj_weight", "in_proj_bias", "bias_k",
                 "bias_v", "add_zero_attn", "dropout_p", "out_proj_weight", "out_proj_bias"]  # fmt: skip
        bound = dict(zip(names, args, strict=False))
        bound.update(kwargs)
        plain = (
            len(args) == len(names)
            and bound["bias_k"] is None
            and bound["bias_v"] is None
            and not bound["add_zero_attn"]
            and not (bound.get("training", True) and bound["dropout_p"])
            and not bound.get("use_separate_proj_weight", False)
            and bound.get("key_padding_mask") is None
            and not bound.get("is_causal", False)
            and bound["query"].dim() == 3
        )
        mask = bound.get("attn_mask")
        if not plain or (mask is not None and mask.dim() != 2):
            return func(*args, **kwargs)
        query, key, value, heads = bound["query"], bound["key"], bound["value"], int(bound["num_heads"])
        w, b = bound["in_proj_weight"].chunk(3), [None] * 3
        if bound["in_proj_bias"] is not None:
            b = list(bound["in_proj_bias"].chunk(3))
        length, batch, width = query.shape  # sequence first, as nn.MultiheadAttention passes it

        def split(t: Tensor) -> Tensor:  # (L, B, E) -> (B, heads, L, E / heads)
            return t.reshape(t.shape[0], batch, heads, width // heads).permute(1, 2, 0, 3)

        q, k, v = (split(F.linear(t, w[i], b[i])) for i, t in enumerate((query, key, value)))
        out = self.__torch_function__(F.scaled_dot_product_attention, (), (q, k, v, mask))
        out = F.linear(out.permute(2, 0, 1, 3).reshape(length, batch, width), bound["out_proj_weight"],
                       bound["out_proj_bias"])  # fmt: skip
        if not bound.get("need_weights", True):
            return out, None
        weights = self.probabilities[-1]
        return out, weights.mean(dim=1) if bound.get("average_attn_weights", True) else weights


def _prefix_tokens(model: nn.Module, tokens: int, grid: tuple[int, int]) -> int:
    prefix = getattr(model, "num_prefix_tokens", None)
    return int(prefix) if isinstance(prefix, int) else tokens - grid[0] * grid[1]


def _grid(model: nn.Module, x: Tensor, tokens: int) -> tuple[int, int]:
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "grid_size", None)
    if size is not None and embed is not None and getattr(embed, "dynamic_img_size", False) is False:
        return int(size[0]), int(size[1])
    patch = getattr(model, "patch_size", None) or getattr(getattr(embed, "proj", None), "kernel_size", (None,))[0]
    if patch:
        return int(x.shape[-2]) // int(patch), int(x.shape[-1]) // int(patch)
    side = int(math.isqrt(tokens - 1))
    return side, side


def legrad(context: MethodContext) -> Tensor:
    """LeGrad (Bousselham et al. 2024, arXiv:2404.03214, Eq. 5-7) on the final score, for ViTs.

    For every attention block ``l`` with probabilities ``P_l`` ``(B, heads, N, N)``:
    ``E_l = mean_{heads, queries} ReLU(dS/dP_l)``, a relevance per key token; the map is
    ``mean_l E_l`` on the patch tokens (prefix tokens dropped), laid on the patch grid. One forward and
    one backward. The paper differentiates, per layer, the score its intermediate class token would get
    from the final norm and head (a logit lens); here every layer is differentiated against the
    model's own output score, as the issue defines it (and as the paper's last-layer term). A model
    without ``scaled_dot_product_attention`` calls raises a ``ValueError``.
    """
    model, x = context.model, context.x.detach()
    mode = ExplicitAttention()
    with torch.inference_mode(False), torch.enable_grad():
        with mode:
            output = model(x)
        if not mode.probabilities:
            raise ValueError(
                "legrad needs a vision transformer whose attention runs through "
                "torch.nn.functional.scaled_dot_product_attention (timm and torchvision ViTs do); this model has none"
            )
        targets = context.capture.classes if context.capture.classes is not None else context.targets
        scores = target_scores(output, targets, x.shape[0]).scores
        grads = torch.autograd.grad(scores.sum(), mode.probabilities, allow_unused=True)
    relevance = []
    for probabilities, grad in zip(mode.probabilities, grads, strict=True):
        if grad is None:
            grad = torch.zeros_like(probabilities)
        relevance.append(torch.relu(grad).mean(dim=(1, 2)))  # (B, N keys)
    tokens = relevance[0].shape[-1]
    mean = torch.stack(relevance).mean(dim=0)
    grid = _grid(model, x, tokens)
    prefix = _prefix_tokens(model, tokens, grid)
    return mean[:, prefix:].reshape(x.shape[0], *grid).detach()
