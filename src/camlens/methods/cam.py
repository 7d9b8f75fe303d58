"""Gradient-based CAM methods as pure functions ``(A, g) -> raw map``.

Each function takes the target layer's activations ``A`` and gradients ``g = dS/dA``, both
``(B, K, u, v)``, and returns the signed, layer-resolution map ``sum_k w_k A_k`` of shape ``(B, u, v)``
*before* the ReLU. Adding a method is adding a function here, registered by name, with its oracle test.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

CamFunction = Callable[[Tensor, Tensor], Tensor]
CAM_METHODS: dict[str, CamFunction] = {}


def register_cam(name: str) -> Callable[[CamFunction], CamFunction]:
    """Register a CAM function under ``name`` (the key ``explain`` and the CLI use)."""

    def add(function: CamFunction) -> CamFunction:
        if name in CAM_METHODS:
            raise ValueError(f"a CAM method named {name!r} is registered already")
        CAM_METHODS[name] = function
        return function

    return add


def weighted_sum(weights: Tensor, activations: Tensor) -> Tensor:
    """``sum_k w_k A_k`` for channel weights ``(B, K)`` and activations ``(B, K, u, v)``."""
    return torch.einsum("bk,bkij->bij", weights, activations)


@register_cam("gradcam")
def gradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017, Eq. 1-2): ``w_k = mean_ij g_kij``.

    Example:
        >>> A = torch.ones(1, 2, 2, 2); g = torch.tensor([1.0, -2.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
        >>> gradcam(A, g)
        tensor([[[-1., -1.],
                 [-1., -1.]]])
    """
    return weighted_sum(gradients.mean(dim=(2, 3)), activations)


@register_cam("gradcam++")
def gradcam_plus_plus(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018, Eq. 19), with ``Y = exp(S)`` so the exp cancels.

    ``alpha = g^2 / (2 g^2 + (sum_ab A_kab) g^3)``, set to 0 where the denominator is 0 (which
    includes ``g = 0``): a safe division, no epsilon. ``w_k = sum_ij alpha_kij ReLU(g_kij)``.
    """
    g2 = gradients * gradients
    denominator = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g2 * gradients
    nonzero = denominator != 0
    alpha = torch.where(nonzero, g2 / torch.where(nonzero, denominator, torch.ones_like(denominator)), 0.0)
    weights = (alpha * torch.relu(gradients)).sum(dim=(2, 3))
    return weighted_sum(weights, activations)
