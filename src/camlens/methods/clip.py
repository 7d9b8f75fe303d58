"""Formulas of the vision-language methods (pure functions; :mod:`camlens.text` gathers their inputs).

* gScoreCAM (Chen et al., ACCV 2022): Score-CAM restricted to the ``k`` channels with the largest mean
  gradient (:func:`top_gradient_channels` picks them, :func:`gscorecam_weights` weighs them).
* Grad-ECLIP (Zhao et al., ICML 2024): on the last attention block, channel weights from the gradient of
  the similarity at the class token's attention output, spatial weights from the min-max normalised
  cosine of the class token's query with each key, times the values (:func:`gradeclip`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def top_gradient_channels(gradients: Tensor, k: int) -> Tensor:
    """``(B, k)`` indices of the ``k`` channels with the largest mean gradient ``mean_ij g_kij`` (signed, as
    the gScoreCAM authors' code) of ``(B, K, u, v)`` gradients."""
    return gradients.mean(dim=(2, 3)).topk(min(int(k), gradients.shape[1]), dim=1).indices


def gscorecam_weights(scores: Tensor, channels: Tensor, count: int) -> Tensor:
    """Channel weights ``(B, K)``: ``softmax`` over the chosen channels of their masked-input scores.

    ``scores`` ``(B, k)`` are the target's logits for the image masked by each chosen channel
    (``channels`` ``(B, k)``); the others get weight 0. The authors' code softmaxes over all ``K`` channels
    with the unchosen ones scored 0 (weight ``exp(0) / Z``, negligible beside CLIP's logits of 20-30).
    """
    weights = torch.zeros(scores.shape[0], count, dtype=scores.dtype, device=scores.device)
    return weights.scatter(1, channels, torch.softmax(scores, dim=1))


def gradeclip(gradient: Tensor, query: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """Grad-ECLIP's signed map over the tokens, before the ReLU: ``sum_c w_c lambda_i v_ic``.

    Args:
        gradient: ``(B, C)`` ``w = dS/do``, the similarity's gradient at the class token's attention output
            ``o`` (before the output projection, heads concatenated).
        query: ``(B, C)`` the class token's query ``q``.
        keys: ``(B, N, C)`` every token's key ``k_i``.
        values: ``(B, N, C)`` every token's value ``v_i``.

    ``lambda_i = minmax_i(cos(q, k_i))`` ("loosened" attention: no softmax), min-max over the ``N`` tokens
    given (pass the patch tokens only, as the authors do). Returns ``(B, N)``.
    """
    cosine = (F.normalize(query, dim=-1)[:, None, :] * F.normalize(keys, dim=-1)).sum(-1)  # (B, N)
    low = cosine.amin(dim=1, keepdim=True)
    span = cosine.amax(dim=1, keepdim=True) - low
    spatial = (cosine - low) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.einsum("bc,bnc->bn", gradient, values) * spatial
