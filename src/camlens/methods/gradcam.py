"""Grad-CAM and the weightings of its gradients, as pure functions ``(A, g) -> raw map``.

Each function takes the target layer's activations ``A`` and gradients ``g = dS/dA``, both
``(B, K, u, v)``, and returns the signed, layer-resolution map ``sum_k w_k A_k`` of shape ``(B, u, v)``
*before* the ReLU: Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM and element-wise Grad-CAM. Each is a
row of :mod:`camlens.catalog` (see there how to add a method); the gradient-free weightings are in
:mod:`camlens.methods.activation`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def weighted_sum(weights: Tensor, activations: Tensor) -> Tensor:
    """``sum_k w_k A_k`` for channel weights ``(B, K)`` and activations ``(B, K, u, v)`` (or ``(B, K, t, u, v)``)."""
    return torch.einsum("bk,bk...->b...", weights, activations)


def gradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017, Eq. 1-2): ``w_k = mean_ij g_kij``.

    Example:
        >>> A = torch.ones(1, 2, 2, 2); g = torch.tensor([1.0, -2.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
        >>> gradcam(A, g)
        tensor([[[-1., -1.],
                 [-1., -1.]]])
    """
    return weighted_sum(gradients.mean(dim=(2, 3)), activations)


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


def _safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    nonzero = denominator != 0
    return torch.where(nonzero, numerator / torch.where(nonzero, denominator, torch.ones_like(denominator)), 0.0)


def xgradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """XGrad-CAM (Fu et al., BMVC 2020, Eq. 9): ``w_k = sum_ij A_kij g_kij / sum_ab A_kab``.

    Channels whose activations sum to 0 get weight 0 (pytorch-grad-cam adds ``1e-7`` instead).

    Example:
        >>> A = torch.tensor([[[[1.0, 3.0]]]]); g = torch.tensor([[[[2.0, 0.0]]]])
        >>> xgradcam(A, g)  # w = (1*2 + 3*0) / 4 = 0.5
        tensor([[[0.5000, 1.5000]]])
    """
    weights = _safe_divide((activations * gradients).sum(dim=(2, 3)), activations.sum(dim=(2, 3)))
    return weighted_sum(weights, activations)


def layercam(activations: Tensor, gradients: Tensor) -> Tensor:
    """LayerCAM (Jiang et al., IEEE TIP 2021, Eq. 5-6): ``sum_k ReLU(g_kij) A_kij``, per position.

    Example:
        >>> layercam(torch.tensor([[[[1.0, 2.0]]]]), torch.tensor([[[[-1.0, 3.0]]]]))
        tensor([[[0., 6.]]])
    """
    return (torch.relu(gradients) * activations).sum(dim=1)


def hirescam(activations: Tensor, gradients: Tensor) -> Tensor:
    """HiResCAM (Draelos & Carin 2020, Eq. 4): ``sum_k g_kij A_kij`` (the gradient is not averaged).

    Example:
        >>> hirescam(torch.tensor([[[[1.0, 2.0]]]]), torch.tensor([[[[-1.0, 3.0]]]]))
        tensor([[[-1.,  6.]]])
    """
    return (gradients * activations).sum(dim=1)


def gradcam_elementwise(activations: Tensor, gradients: Tensor) -> Tensor:
    """Element-wise Grad-CAM (as pytorch-grad-cam's ``GradCAMElementWise``): ``sum_k ReLU(g_kij A_kij)``.

    Example:
        >>> A = torch.tensor([[[[1.0, 2.0]], [[1.0, 1.0]]]]); g = torch.tensor([[[[-1.0, 3.0]], [[2.0, 2.0]]]])
        >>> gradcam_elementwise(A, g)
        tensor([[[2., 8.]]])
    """
    return torch.relu(gradients * activations).sum(dim=1)
