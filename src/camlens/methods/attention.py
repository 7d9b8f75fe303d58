"""Attention methods for vision transformers: rollout, generic attention, transformer attribution, AttnLRP.

The attention probabilities are captured without changing the model. :class:`ExplicitAttention`, a
:class:`~torch.overrides.TorchFunctionMode` active for one forward, computes every fused
``F.scaled_dot_product_attention`` call (timm, HuggingFace with ``attn_implementation="sdpa"``) and every
``F.multi_head_attention_forward`` call (``nn.MultiheadAttention``: torchvision's ViT) explicitly as
``softmax(Q K^T * scale + mask) V`` and keeps the probabilities, so their gradient can be taken. No module
is swapped and no flag is flipped. LeGrad (:mod:`camlens.methods.legrad`) uses the same capture.

The two LRP methods run one more forward under :class:`_Relevance`, the same mode with LRP rules: every
operation on the path from the input to the output is computed by an autograd function whose backward
maps the relevance of its output to the relevance of its inputs (so one ``autograd.grad`` propagates
relevance, not gradient). An operation on that path that has no rule raises a ``ValueError`` naming it,
rather than giving a map computed with the wrong rule.

These methods are defined for plain vision transformers: every attention block attends over the same
tokens (prefix tokens and the patch grid) of each image. Windowed, spatially reduced or multi-scale
attention (Swin, PVT, MobileViT, CoAtNet, TinyViT) is outside their definitions and is refused, naming why.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from camlens.layouts import model_grid, model_prefix_tokens
from camlens.methods.context import MethodContext
from camlens.targets import target_scores

HEAD_FUSIONS = ("mean", "max", "min")


class ExplicitAttention(TorchFunctionMode):
    """Computes fused attention explicitly and records the attention probabilities ``(B, heads, N, M)``.

    Subclasses change how the attention's pieces are computed through :meth:`linear`, :meth:`matmul`,
    :meth:`softmax` and :meth:`add_mask` (the LRP rules do).
    """

    def __init__(self) -> None:
        super().__init__()
        self.probabilities: list[Tensor] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return self.scaled_dot_product_attention(func, args, kwargs)
        if func is F.multi_head_attention_forward:
            return self.multi_head_attention(func, args, kwargs)
        return self.other(func, args, kwargs)

    # the pieces (plain here; the LRP mode gives them rules)
    def other(self, func: Any, args: tuple, kwargs: dict) -> Any:
        return func(*args, **kwargs)

    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def matmul(self, a: Tensor, b: Tensor, scale: float = 1.0) -> Tensor:
        return (a @ b) * scale if scale != 1.0 else a @ b

    def softmax(self, logits: Tensor) -> Tensor:
        return logits.softmax(dim=-1)

    def add_mask(self, logits: Tensor, mask: Tensor) -> Tensor:
        return logits + mask

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, scale: float) -> Tensor:
        """``softmax(q k^T * scale + mask) v``, keeping the probabilities."""
        logits = self.matmul(q, k.transpose(-2, -1), scale)
        if causal:
            keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
            logits = logits.masked_fill(~keep, float("-inf"))
        if mask is not None:
            logits = (
                logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else self.add_mask(logits, mask)
            )
        probabilities = self.softmax(logits)
        self.probabilities.append(probabilities)
        return self.matmul(probabilities, v)

    def scaled_dot_product_attention(self, func: Any, args: tuple, kwargs: dict) -> Any:
        names = ["query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale"]
        bound = dict(zip(names, args, strict=False))
        bound.update(kwargs)
        q, k, v = bound["query"], bound["key"], bound["value"]
        if bound.get("dropout_p", 0.0) or bound.get("enable_gqa", False):
            return self.fused(func, args, kwargs)  # training-mode dropout or grouped queries: left fused
        scale = bound.get("scale") or 1.0 / math.sqrt(q.shape[-1])
        return self.attend(q, k, v, bound.get("attn_mask"), bool(bound.get("is_causal", False)), scale)

    def multi_head_attention(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """``nn.MultiheadAttention``'s functional form (torchvision's ViT, open_clip), computed explicitly for
        the common case: no extra key/value biases, zero attention, padding mask or static keys, an
        ``attn_mask`` of ``(L, S)`` or ``(B * heads, L, S)`` (boolean: True is masked, as there), the input
        ``(L, B, E)``. Any other call runs as is (its probabilities are not recorded)."""
        a = _MHA_SIGNATURE.bind(*args, **kwargs)
        a.apply_defaults()
        p = a.arguments
        query, key, value = p["query"], p["key"], p["value"]
        plain = (
            query.dim() == 3
            and p["bias_k"] is None
            and p["bias_v"] is None
            and not p["add_zero_attn"]
            and not (p["training"] and p["dropout_p"])
            and p["key_padding_mask"] is None
            and (p["attn_mask"] is None or p["attn_mask"].dim() in (2, 3))
            and not p["is_causal"]
            and p["static_k"] is None
            and p["static_v"] is None
        )
        if not plain:
            return self.fused(func, args, kwargs)
        length, batch, embed = query.shape
        heads = p["num_heads"]
        if p["use_separate_proj_weight"]:
            weights = (p["q_proj_weight"], p["k_proj_weight"], p["v_proj_weight"])
        else:
            weights = tuple(p["in_proj_weight"].chunk(3))
        biases = (None, None, None) if p["in_proj_bias"] is None else tuple(p["in_proj_bias"].chunk(3))
        if query is key and key is value and not p["use_separate_proj_weight"]:
            q, k, v = self.linear(query, p["in_proj_weight"], p["in_proj_bias"]).chunk(3, dim=-1)
        else:
            q, k, v = (self.linear(t, w, b) for t, w, b in zip((query, key, value), weights, biases, strict=True))

        def split(t: Tensor) -> Tensor:  # (L, B, E) -> (B, heads, L, d)
            return t.reshape(t.shape[0], batch, heads, embed // heads).permute(1, 2, 0, 3)

        mask = p["attn_mask"]
        if mask is not None:
            if mask.dtype == torch.bool:  # True: not allowed to attend (the opposite of sdpa's boolean masks)
                mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(mask, float("-inf"))
            mask = mask.reshape(batch, heads, *mask.shape[-2:]) if mask.dim() == 3 else mask
        out = self.attend(split(q), split(k), split(v), mask, False, 1.0 / math.sqrt(embed // heads))
        out = out.permute(2, 0, 1, 3).reshape(length, batch, embed)
        out = self.linear(out, p["out_proj_weight"], p["out_proj_bias"])
        if not p["need_weights"]:
            return out, None
        weights_out = self.probabilities[-1]
        return out, weights_out.mean(dim=1) if p["average_attn_weights"] else weights_out

    def fused(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """An attention call left as the model makes it (its probabilities are not recorded)."""
        return func(*args, **kwargs)


_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


# --------------------------------------------------------------------------------------------------------
# the token grid and the plain-transformer check


def token_grid(model: nn.Module, x: Tensor, tokens: int) -> tuple[tuple[int, int], int]:
    """The patch grid and the number of prefix tokens of a transformer's ``tokens`` for the input ``x``."""
    size = (int(x.shape[-2]), int(x.shape[-1]))
    grid = model_grid(model, size)
    if grid is None:  # HuggingFace: the patch size is in the config
        patch = getattr(getattr(model, "config", None), "patch_size", None)
        if isinstance(patch, int) and patch > 0:
            grid = (size[0] // patch, size[1] // patch)
    if grid is None:
        side = math.isqrt(tokens - 1)
        grid = (side, side)
    prefix = model_prefix_tokens(model)
    if prefix is None:
        prefix = tokens - grid[0] * grid[1]
    return grid, prefix


def checked_attention(
    method: str, model: nn.Module, x: Tensor, probabilities: list[Tensor]
) -> tuple[tuple[int, int], int]:
    """Refuses a model the method's definition excludes, naming why; returns the grid and prefix count.

    The attention methods read every block's attention over one token sequence: ``B`` images, ``N``
    queries and ``N`` keys, the same ``N`` in every block, prefix tokens plus the patch grid.
    """
    if not probabilities:
        raise ValueError(
            f"{method} needs a vision transformer whose attention runs through "
            "torch.nn.functional.scaled_dot_product_attention or nn.MultiheadAttention (timm, torchvision and "
            "HuggingFace ViTs with attn_implementation='sdpa'); this model has no attention there"
        )
    shapes = sorted({tuple(p.shape) for p in probabilities})
    tokens = probabilities[0].shape[-1]
    same = all(p.shape[0] == x.shape[0] and p.shape[-2] == p.shape[-1] == tokens for p in probabilities)
    grid, prefix = token_grid(model, x, tokens)
    if not same or tokens - prefix != grid[0] * grid[1] or prefix < 0:
        raise ValueError(
            f"{method} is defined for plain vision transformers, whose every attention block attends over the "
            f"same tokens of each image (class/register tokens and the patch grid); this model's attention maps "
            f"have shapes {', '.join(str(s) for s in shapes[:4])}{' ...' if len(shapes) > 4 else ''} for "
            f"{x.shape[0]} image(s) (windowed, spatially reduced or multi-scale attention, as in Swin, PVT, "
            "MobileViT, CoAtNet or TinyViT): use gradcam or fullgrad on it"
        )
    return grid, prefix


def _has_class_token(model: nn.Module, prefix: int) -> bool:
    declared = getattr(model, "has_class_token", None)
    if isinstance(declared, bool):
        return declared
    return prefix > 0


def _readout(model: nn.Module, joint: Tensor, grid: tuple[int, int], prefix: int) -> Tensor:
    """The class token's row of a token-to-token matrix (the mean row without one), on the patch grid."""
    row = joint[:, 0] if _has_class_token(model, prefix) else joint.mean(dim=1)
    return row[:, prefix:].reshape(joint.shape[0], *grid)


def _scores(output: Any, targets: Any, batch: int) -> Tensor:
    return target_scores(output, targets, batch).scores


def _forward_with_gradients(model: nn.Module, x: Tensor, targets: Any) -> tuple[ExplicitAttention, list[Tensor]]:
    """One forward recording the attention probabilities, one backward for the score's gradient there."""
    mode = ExplicitAttention()
    with mode:
        output = model(x)
    if not mode.probabilities:
        return mode, []
    scores = _scores(output, targets, x.shape[0])
    grads = torch.autograd.grad(scores.sum(), mode.probabilities, allow_unused=True)
    return mode, [torch.zeros_like(p) if g is None else g for p, g in zip(mode.probabilities, grads, strict=True)]


# --------------------------------------------------------------------------------------------------------
# the methods (pure functions of the model, the input and the targets)


def attention_rollout(model: nn.Module, x: Tensor, *, head_fusion: str = "mean", discard_ratio: float = 0.0) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020, Eq. in Sec. 3): ``(B, gh, gw)``, class independent.

    Per block the heads' attention is fused (mean by default; ``max`` or ``min``) into ``A``; with
    ``discard_ratio > 0`` the lowest such fraction of each image's entries of ``A`` is set to zero, the
    class token's own entry kept (the option of jacobgil/vit-explain, not in the paper); then
    ``A_hat = (A + I) / 2``, rows re-normalised to sum to 1, and ``R = A_hat_L ... A_hat_1`` (first block
    first). The map is the class token's row of ``R`` over the patch tokens (the mean row without a
    class token).
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, got {head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio!r}")
    mode = ExplicitAttention()
    with torch.no_grad(), mode:
        model(x)
    grid, prefix = checked_attention("attention_rollout", model, x, mode.probabilities)
    batch, tokens = x.shape[0], mode.probabilities[0].shape[-1]
    eye = torch.eye(tokens, device=x.device, dtype=mode.probabilities[0].dtype)
    joint = eye.expand(batch, tokens, tokens)
    for probabilities in mode.probabilities:
        fused = {"mean": probabilities.mean(dim=1), "max": probabilities.amax(dim=1), "min": probabilities.amin(dim=1)}[
            head_fusion
        ]
        if discard_ratio > 0:
            flat = fused.flatten(1).clone()
            count = int(flat.shape[1] * discard_ratio)
            lowest = flat.topk(count, dim=1, largest=False).indices
            drop = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, lowest, True)
            drop[:, 0] = False  # the class token's attention to itself
            fused = flat.masked_fill(drop, 0.0).reshape(fused.shape)
        step = (fused + eye) / 2
        step = step / step.sum(dim=-1, keepdim=True)
        joint = step @ joint
    return _readout(model, joint, grid, prefix).detach()


def generic_attention(model: nn.Module, x: Tensor, targets: Any = None) -> Tensor:
    """Generic attention explainability (Chefer, Gur & Wolf, ICCV 2021, Eq. 5-6, self-attention).

    ``R = I``; for every block in order, ``R <- R + mean_h(relu(dS/dA * A)) @ R``, with ``A`` the block's
    attention probabilities and ``S`` the explained score. The map is the class token's row of ``R`` over
    the patch tokens (the mean row without a class token). One forward, one backward.
    """
    x = x.detach()
    with torch.inference_mode(False), torch.enable_grad():
        mode, grads = _forward_with_gradients(model, x, targets)
        grid, prefix = checked_attention("generic_attention", model, x, mode.probabilities)
        batch, tokens = x.shape[0], mode.probabilities[0].shape[-1]
        relevance = torch.eye(tokens, device=x.device, dtype=grads[0].dtype).expand(batch, tokens, tokens)
        for probabilities, grad in zip(mode.probabilities, grads, strict=True):
            cam = torch.relu(grad * probabilities.detach()).mean(dim=1)
            relevance = relevance + cam @ relevance
    return _readout(model, relevance, grid, prefix).detach()


def transformer_attribution(model: nn.Module, x: Tensor, targets: Any = None) -> Tensor:
    """Transformer attribution (Chefer, Gur & Wolf, CVPR 2021, Eq. 13-14, and their ``ViT_LRP`` code).

    One LRP pass from the explained class (relevance 1 at its logit) with the paper's rules: linear
    layers by the z+ rule (``alpha = 1, beta = 0``, no bias), layer norm, GELU and softmax by their local
    gradient times input (``x * J^T (R / f(x))``), residual additions with each branch's share
    re-normalised to the sum of the output's relevance (``Add.relprop``), the attention matmuls by
    gradient times input halved between the two factors. For each block ``Abar = I + mean_h((dS/dA *
    R_A)^+)`` with ``R_A`` the relevance reaching the attention probabilities and ``dS/dA`` the score's
    gradient there; ``C = Abar_L ... Abar_1``, the product the paper's rollout (and its reference code)
    computes, the last block leftmost. The map is the class token's row of ``C`` over the patch tokens (the
    mean row without a class token). Two forwards, two backwards.
    """
    x = x.detach()
    with torch.inference_mode(False), torch.enable_grad():
        mode, grads = _forward_with_gradients(model, x, targets)
        grid, prefix = checked_attention("transformer_attribution", model, x, mode.probabilities)
        relevance_mode, output = _relevance_pass(model, x, "transformer_attribution")
        relevance_mode.check()
        scores = _scores(output, targets, x.shape[0])
        relevances = torch.autograd.grad(scores.sum(), relevance_mode.probabilities, allow_unused=True)
        batch, tokens = x.shape[0], mode.probabilities[0].shape[-1]
        eye = torch.eye(tokens, device=x.device, dtype=grads[0].dtype)
        joint = eye.expand(batch, tokens, tokens)
        for grad, relevance in zip(grads, relevances, strict=True):
            if relevance is None:
                relevance = torch.zeros_like(grad)
            joint = (eye + torch.relu(grad * relevance).mean(dim=1)) @ joint
    return _readout(model, joint, grid, prefix).detach()


def attnlrp(model: nn.Module, x: Tensor, targets: Any = None) -> Tensor:
    """AttnLRP (Achtibat et al., ICML 2024), one relevance pass from the explained score: ``(B, gh, gw)``.

    Rules: LayerNorm (and RMSNorm) with the division by the standard deviation held constant (the identity
    rule on the normalisation, then LRP-0 on the remaining linear map); element-wise activations by the
    identity rule (relevance passes unchanged); softmax by its Taylor decomposition at the input
    (``x * (R - s * sum R)``, Prop. 3.1); the attention matmuls ``Q K^T`` and ``A V`` by the uniform rule
    (half to each factor), a product of two activations likewise; linear layers, convolutions and additions
    by LRP-0 (biases absorbing their share). As in the authors' LXT library these rules are one modified
    gradient (relevance = input x gradient everywhere): the softmax and LRP-0 rules are the gradient
    itself, the identity rule multiplies it by ``f(x) / x``, the uniform rule halves it, and the norm's
    divisor is detached. The relevance starts as the score at the explained output and is read at the
    input pixels, summed over the colour channels and over each patch: the patch grid.
    """
    x = x.detach()
    with torch.inference_mode(False), torch.enable_grad():
        leaf = x.clone().requires_grad_(True)
        mode, output = _relevance_pass(model, leaf, "attnlrp")
        grid, _prefix = checked_attention("attnlrp", model, x, mode.probabilities)
        mode.check()
        scores = _scores(output, targets, x.shape[0])
        (gradient,) = torch.autograd.grad(scores.sum(), leaf)
    pixels = (x * gradient).sum(dim=1)
    ph, pw = x.shape[-2] // grid[0], x.shape[-1] // grid[1]
    pixels = pixels[:, : grid[0] * ph, : grid[1] * pw]
    return pixels.reshape(x.shape[0], grid[0], ph, grid[1], pw).sum(dim=(2, 4)).detach()


# --------------------------------------------------------------------------------------------------------
# LRP: relevance-propagating autograd functions, applied by a function mode


def safe_divide(a: Tensor, b: Tensor) -> Tensor:
    """``a / b`` with ``b`` kept 1e-9 away from zero and 0 where ``b`` is 0 (Chefer et al.'s stabiliser)."""
    den = b.clamp(min=1e-9) + b.clamp(max=1e-9)
    den = den + den.eq(0).to(den.dtype) * 1e-9
    return a / den * b.ne(0).to(b.dtype)


def _sum_to(t: Tensor, shape: torch.Size) -> Tensor:
    """``t`` summed over the dimensions broadcasting expanded to reach it from ``shape``."""
    if t.shape == shape:
        return t
    while t.dim() > len(shape):
        t = t.sum(dim=0)
    dims = [d for d, n in enumerate(shape) if n == 1 and t.shape[d] != 1]
    return t.sum(dim=dims, keepdim=True) if dims else t


def gradient_times_input(fn: Callable[..., Tensor], inputs: list[Any], relevance: Tensor, which: list[int]) -> list:
    """The local LRP-0 rule: ``x_i * d/dx_i <f(x), R / f(x)>`` for the inputs ``which`` (others get None)."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(i in which) if isinstance(t, Tensor) else t for i, t in enumerate(inputs)]
        z = fn(*leaves)
        grads = torch.autograd.grad(z, [leaves[i] for i in which], safe_divide(relevance, z), allow_unused=True)
    out: list = [None] * len(inputs)
    for i, g in zip(which, grads, strict=True):
        out[i] = torch.zeros_like(inputs[i]) if g is None else inputs[i] * g
    return out


class _Rule(torch.autograd.Function):
    """Forward: ``rule.forward(*inputs)``; backward: ``rule.relevance(inputs, R)``, relevance in, relevance out."""

    @staticmethod
    def forward(ctx: Any, rule: Any, *inputs: Any) -> Tensor:
        ctx.rule = rule
        ctx.inputs = inputs
        return rule.forward(*inputs)

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple:
        return (None, *ctx.rule.relevance(list(ctx.inputs), relevance))


class _Local:
    """LRP-0 on ``fn`` for the inputs ``which`` (``scale``: a factor on their relevance, 1/2 for matmuls)."""

    def __init__(self, fn: Callable[..., Tensor], which: list[int], scale: float = 1.0) -> None:
        self.forward, self.which, self.scale = fn, which, scale

    def relevance(self, inputs: list, relevance: Tensor) -> list:
        out = gradient_times_input(self.forward, inputs, relevance, self.which)
        return [r * self.scale if r is not None and self.scale != 1.0 else r for r in out]


class _Pass:
    """The identity rule: the relevance of the output goes unchanged to input ``index`` (summed over any
    broadcasting)."""

    def __init__(self, fn: Callable[..., Tensor], index: int = 0, share: float = 1.0) -> None:
        self.forward, self.index, self.share = fn, index, share

    def relevance(self, inputs: list, relevance: Tensor) -> list:
        out: list = [None] * len(inputs)
        out[self.index] = _sum_to(relevance * self.share, inputs[self.index].shape)
        return out


class _HalfGradient(torch.autograd.Function):
    """The identity forward, half the gradient backward (AttnLRP's uniform rule on a product's output)."""

    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        return t.view_as(t)

    @staticmethod
    def backward(ctx: Any, gradient: Tensor) -> Tensor:
        return gradient / 2


class _IdentityRule(torch.autograd.Function):
    """``f(x)`` forward, ``gradient * f(x) / x`` backward: relevance ``x * gradient`` passes unchanged."""

    @staticmethod
    def forward(ctx: Any, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        y = fn(x)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx: Any, gradient: Tensor) -> tuple:
        x, y = ctx.saved_tensors
        return None, gradient * safe_divide(y, x)


class _ZPlus:
    """Chefer et al.'s linear rule, ``alpha = 1, beta = 0`` (``layers_ours.Linear.relprop``)."""

    def __init__(self) -> None:
        self.forward = F.linear

    def relevance(self, inputs: list, relevance: Tensor) -> list:
        x, weight = inputs[0], inputs[1]
        pw, nw = weight.clamp(min=0), weight.clamp(max=0)
        px, nx = x.clamp(min=0), x.clamp(max=0)
        s = safe_divide(relevance, F.linear(px, pw) + F.linear(nx, nw))
        out: list = [None] * len(inputs)
        out[0] = px * (s @ pw) + nx * (s @ nw)
        return out


class _ChefersAdd:
    """Chefer et al.'s ``Add.relprop``: LRP-0 shares, each re-scaled so the branches' totals split the
    output's total in proportion to their absolute LRP-0 totals (per image)."""

    def __init__(self, fn: Callable[..., Tensor]) -> None:
        self.forward = fn

    def relevance(self, inputs: list, relevance: Tensor) -> list:
        a, b = inputs
        z = self.forward(a, b)
        s = safe_divide(relevance, z)
        ra = a * s if isinstance(a, Tensor) else torch.zeros_like(z)
        rb = b * s if isinstance(b, Tensor) else torch.full_like(z, float(b)) * s
        ra, rb = ra.expand_as(z), rb.expand_as(z)
        dims = tuple(range(1, z.dim()))
        sa, sb = ra.sum(dim=dims, keepdim=True), rb.sum(dim=dims, keepdim=True)
        total = relevance.sum(dim=dims, keepdim=True)
        fa = safe_divide(sa.abs(), sa.abs() + sb.abs()) * total
        fb = safe_divide(sb.abs(), sa.abs() + sb.abs()) * total
        ra, rb = ra * safe_divide(fa, sa), rb * safe_divide(fb, sb)
        return [_sum_to(r, t.shape) if isinstance(t, Tensor) else None for r, t in zip((ra, rb), inputs, strict=True)]


def _norm_held(fn_name: str) -> Callable[..., Tensor]:
    """LayerNorm / RMSNorm with the divisor held constant (AttnLRP's identity rule on the normalisation)."""

    def layer_norm(x: Tensor, shape: Any, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5):
        dims = tuple(range(-len(shape), 0))
        centred = x - x.mean(dim=dims, keepdim=True)
        std = (centred.pow(2).mean(dim=dims, keepdim=True) + eps).sqrt().detach()
        y = centred / std
        y = y * weight if weight is not None else y
        return y + bias if bias is not None else y

    def rms_norm(x: Tensor, shape: Any, weight: Tensor | None = None, eps: float | None = None):
        dims = tuple(range(-len(shape), 0))
        eps = torch.finfo(x.dtype).eps if eps is None else eps
        y = x / (x.pow(2).mean(dim=dims, keepdim=True) + eps).sqrt().detach()
        return y * weight if weight is not None else y

    norms: dict[str, Callable[..., Tensor]] = {"layer_norm": layer_norm, "rms_norm": rms_norm}
    return norms[fn_name]


# operations that only move, select or copy values: autograd routes relevance through them unchanged
_STRUCTURAL = {
    "__getitem__", "__get__", "reshape", "view", "view_as", "permute", "transpose", "flatten", "unflatten",
    "unbind", "split", "chunk", "contiguous", "expand", "expand_as", "cat", "concat", "concatenate", "stack",
    "squeeze", "unsqueeze", "clone", "to", "type", "type_as", "float", "double", "half", "bfloat16", "narrow",
    "select", "dropout", "movedim", "swapaxes", "repeat", "tile", "roll", "flip", "index_select", "gather",
    "masked_fill", "detach", "requires_grad_", "identity",
}  # fmt: skip
_ACTIVATIONS = {"gelu", "silu", "relu", "relu6", "hardswish", "mish", "leaky_relu", "elu", "softplus", "tanh",
                "quick_gelu", "selu", "celu", "hardtanh"}  # fmt: skip
_ADD = {"add", "__add__", "__radd__", "__iadd__"}  # (in-place ``add_`` is refused: its result may be unused)
_MUL = {"mul", "__mul__", "__rmul__", "__imul__", "div", "__truediv__", "__itruediv__", "true_divide"}
_REDUCE = {"mean", "sum"}


def _tensors(obj: Any) -> Iterator[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


_MARK = "_camlens_relevance"


def _marked(t: Any) -> bool:
    return isinstance(t, Tensor) and getattr(t, _MARK, False)


def _mark(obj: Any) -> Any:
    for t in _tensors(obj):
        if t.is_floating_point():
            setattr(t, _MARK, True)
    return obj


class _Relevance(ExplicitAttention):
    """The LRP pass: every operation on the input's path goes through its method's rule (see the
    methods' docstrings); an operation without one is refused.

    ``transformer_attribution``: autograd functions whose backward maps relevance to relevance (the z+
    rule is no gradient). ``attnlrp``: the modified gradient (relevance = input x gradient), so the
    operations whose rule is LRP-0 keep their own backward.
    """

    def __init__(self, method: str) -> None:
        super().__init__()
        self.method = method
        self.chefer = method == "transformer_attribution"
        self.refused: str | None = None

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if not any(_marked(t) for t in _tensors((args, kwargs))):
            return func(*args, **kwargs)
        return _mark(super().__torch_function__(func, types, args, kwargs))

    def fused(self, func: Any, args: tuple, kwargs: dict) -> Any:
        return self._refuse("attention with dropout or grouped queries", func, args, kwargs)

    # the attention's pieces
    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.chefer:
            return _Rule.apply(_ZPlus(), x, weight, bias)
        return F.linear(x, weight, bias)

    def matmul(self, a: Tensor, b: Tensor, scale: float = 1.0) -> Tensor:
        if self.chefer:
            return _Rule.apply(_Local(lambda p, q: (p @ q) * scale, [0, 1], 0.5), a, b)
        return _HalfGradient.apply(super().matmul(a, b, scale))

    def softmax(self, logits: Tensor) -> Tensor:
        if self.chefer:
            return _Rule.apply(_Local(lambda t: t.softmax(dim=-1), [0]), logits)
        return logits.softmax(dim=-1)

    def add_mask(self, logits: Tensor, mask: Tensor) -> Tensor:
        return self.add(torch.add, logits, mask)

    def add(self, fn: Any, a: Any, b: Any) -> Tensor:
        return _Rule.apply(_ChefersAdd(fn), a, b) if self.chefer else fn(a, b)

    def other(self, func: Any, args: tuple, kwargs: dict) -> Any:
        name = getattr(func, "__name__", repr(func))
        if name == "__setitem__" or (name.endswith("_") and not name.endswith("__") and name != "requires_grad_"):
            return self._refuse(name, func, args, kwargs)  # written in place: the relevance would not follow
        if name in _STRUCTURAL:
            return func(*args, **kwargs)
        if name in ("linear", "conv1d", "conv2d"):
            names = ["input", "weight", "bias", "stride", "padding", "dilation", "groups"]
            bound = dict(zip(names, args, strict=False)) | kwargs
            x, weight, bias = bound.pop("input"), bound.pop("weight"), bound.pop("bias", None)
            if _marked(weight) or _marked(bias):
                return self._refuse(f"{name} with a computed weight", func, args, kwargs)
            if name == "linear":
                return self.linear(x, weight, bias)
            if not self.chefer:
                return func(*args, **kwargs)
            return _Rule.apply(_Local(lambda t, w, b: func(t, w, b, **bound), [0]), x, weight, bias)
        if name in ("layer_norm", "rms_norm"):
            if self.chefer:
                x, *rest = args
                return _Rule.apply(_Local(lambda t, *r: func(t, *r, **kwargs), [0]), x, *rest)
            return _norm_held(name)(*args, **kwargs)
        if name in _ACTIVATIONS or name == "softmax":
            if name == "softmax" and not self.chefer:
                return func(*args, **kwargs)
            x, *rest = args
            fn = lambda t: func(t, *rest, **kwargs)  # noqa: E731
            return _Rule.apply(_Local(fn, [0]), x) if self.chefer else _IdentityRule.apply(fn, x)
        if name in _ADD and len(args) == 2 and not kwargs:
            return self.add(lambda p, q: func(p, q), *args)
        if name in _MUL and len(args) == 2 and not kwargs:
            a, b = args
            product = name in ("mul", "__mul__", "__rmul__", "__imul__")
            if _marked(a) and _marked(b):
                if self.chefer or not product:
                    return self._refuse(f"{name} of two activations (a gated unit)", func, args, kwargs)
                return _HalfGradient.apply(func(a, b))
            if _marked(b) and not product:
                return self._refuse(name, func, args, kwargs)  # a constant divided by an activation
            if not self.chefer:
                return func(a, b)
            return _Rule.apply(_Pass(lambda p, q: func(p, q), 0 if _marked(a) else 1), a, b)
        if name in ("neg", "__neg__", "negative"):
            return _Rule.apply(_Pass(lambda t: func(t)), args[0]) if self.chefer else func(*args)
        if name in _REDUCE:
            if not self.chefer:
                return func(*args, **kwargs)
            x, *rest = args
            return _Rule.apply(_Local(lambda t: func(t, *rest, **kwargs), [0]), x)
        out = func(*args, **kwargs)
        if any(t.is_floating_point() for t in _tensors(out)):
            self.refused = self.refused or name  # shapes, sizes, comparisons carry no relevance
        return out

    def _refuse(self, name: str, func: Any, args: tuple, kwargs: dict) -> Any:
        """Records the first operation without a rule (:meth:`check` raises after the forward, once the
        attention itself has been checked) and computes it as the model does."""
        self.refused = self.refused or name
        return func(*args, **kwargs)

    def check(self) -> None:
        """Raises the refusal of the first operation on the relevance path that has no rule."""
        if self.refused:
            raise ValueError(
                f"{self.method} has no LRP rule for the operation {self.refused!r} this model applies to its "
                "activations (rules cover linear layers, convolutions, layer norms, activations, residual "
                "additions, constant scalings and the attention): the method does not apply to this model"
            )


def _relevance_pass(model: nn.Module, x: Tensor, method: str) -> tuple[_Relevance, Any]:
    """One forward under the method's LRP rules: the mode (its probabilities, any refusal) and the output."""
    mode = _Relevance(method)
    leaf = x if x.requires_grad else x.clone().requires_grad_(True)
    _mark(leaf)
    try:
        with mode:
            output = model(leaf)
    finally:
        if hasattr(leaf, _MARK):
            delattr(leaf, _MARK)
    return mode, output


# --------------------------------------------------------------------------------------------------------
# the entries of the catalog's rows: functions of a MethodContext (layer-free)


def _targets_of(context: MethodContext) -> Any:
    return context.capture.classes if context.capture.classes is not None else context.targets


def rollout_of(context: MethodContext) -> Tensor:
    """:func:`attention_rollout` with the context's ``head_fusion`` and ``discard_ratio`` options."""
    options = context.options
    return attention_rollout(
        context.model, context.x, head_fusion=options.head_fusion, discard_ratio=options.discard_ratio
    )


def generic_attention_of(context: MethodContext) -> Tensor:
    """:func:`generic_attention` of the context's explained classes."""
    return generic_attention(context.model, context.x, _targets_of(context))


def transformer_attribution_of(context: MethodContext) -> Tensor:
    """:func:`transformer_attribution` of the context's explained classes."""
    return transformer_attribution(context.model, context.x, _targets_of(context))


def attnlrp_of(context: MethodContext) -> Tensor:
    """:func:`attnlrp` of the context's explained classes."""
    return attnlrp(context.model, context.x, _targets_of(context))
