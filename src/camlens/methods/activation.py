"""CAM weightings read off the activations' own statistics: pure functions ``(A, g) -> raw (B, u, v)`` map.

FEM (k-sigma channel weights) and Eigen-CAM / KPCA-CAM (the first principal component of ``A``) ignore the
gradients; Eigen-Grad-CAM is the first principal component of ``A * g``. Like
:func:`camlens.methods.gradcam.gradcam`, each takes the target layer's activations ``A`` and gradients
``g = dS/dA``, both ``(B, K, u, v)``, and returns the signed layer-resolution map before the final ReLU.
They are rows of :mod:`camlens.catalog`, so one ``explain`` call computes any number of them from one
forward pass (each costs an einsum or an SVD).

This module also holds the ``eigen_smooth`` option of every other weighting. Those weightings are
*channel-separable*: the map is a sum over channels of a term that depends on that channel alone.
:func:`channel_terms` recovers those terms from the function itself, which is what ``eigen_smooth`` projects.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from camlens.catalog import ROWS
from camlens.methods.gradcam import weighted_sum


def fem(activations: Tensor, gradients: Tensor, k: float = 2.0) -> Tensor:
    """FEM, the Feature Explanation Method (Fuad et al., IPTA 2020; Ahmed et al. 2023): gradient-free.

    Each channel's weight is the fraction of its positions above the channel's k-sigma threshold
    ``mean_k + k * std_k`` (population standard deviation, ``k = 2``); the map is ``sum_k w_k A_k``.
    ``gradients`` are ignored.

    Example:
        >>> A = torch.zeros(1, 1, 1, 10); A[0, 0, 0, 0] = 10.0  # one outlier above mean + 2 std
        >>> fem(A, torch.zeros_like(A))[0, 0, :2]
        tensor([1., 0.])
    """
    del gradients
    mean = activations.mean(dim=(2, 3), keepdim=True)
    std = activations.std(dim=(2, 3), keepdim=True, unbiased=False)
    weights = (activations > mean + k * std).to(activations.dtype).mean(dim=(2, 3))
    return weighted_sum(weights, activations)


def orient(projection: Tensor, reference: Tensor) -> Tensor:
    """Fix the arbitrary sign of a principal-component map: positive correlation with ``reference``.

    ``projection`` and ``reference`` are ``(B, u, v)``. When the correlation is exactly 0, the largest
    absolute value of the map is made positive; a map of zeros stays zeros.
    """
    p = projection.flatten(1)
    r = reference.flatten(1)
    covariance = ((p - p.mean(dim=1, keepdim=True)) * (r - r.mean(dim=1, keepdim=True))).sum(dim=1)
    peak = p.gather(1, p.abs().argmax(dim=1, keepdim=True))[:, 0]
    sign = torch.where(covariance != 0, torch.sign(covariance), torch.sign(peak))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return projection * sign.view(-1, 1, 1)


def first_component(maps: Tensor, reference: Tensor | None = None) -> Tensor:
    """Projection of the ``(u v, K)`` matrix of ``maps`` (centred over positions) on its first right
    singular vector, oriented by :func:`orient` against ``reference`` (default: the channel mean):
    ``(B, K, u, v) -> (B, u, v)``.

    This is Eigen-CAM's map (Muhammad & Yeasin 2020, Eq. 3-4) and pytorch-grad-cam's ``eigen_smooth``.

    The decomposition runs on the smaller side of ``X`` (``uv x K``, centred): the top eigenvector of the
    ``(K, K)`` covariance ``X^T X`` projected as ``X v_1`` when ``K < uv`` (an 80 x 80 layer of 256
    channels: a 256 x 256 eigenproblem, not 6400 x 6400), else ``sigma_1 u_1`` from the ``(uv, uv)``
    Gram matrix. Both are ``X v_1`` exactly, in float64; only the arbitrary sign differs, and
    :func:`orient` fixes it.
    """
    batch, channels, height, width = maps.shape
    matrix = torch.nan_to_num(maps).flatten(2).transpose(1, 2).to(torch.float64)  # (B, uv, K)
    centred = matrix - matrix.mean(dim=1, keepdim=True)
    if channels < height * width:
        _, vectors = torch.linalg.eigh(centred.transpose(1, 2) @ centred)  # (B, K, K)
        projection = (centred @ vectors[:, :, -1:])[:, :, 0].view(batch, height, width)
    else:
        # X v_1 = sigma_1 u_1: the top eigenvector of the (uv, uv) Gram matrix
        values, vectors = torch.linalg.eigh(centred @ centred.transpose(1, 2))
        projection = (vectors[:, :, -1] * values[:, -1].clamp(min=0).sqrt()[:, None]).view(batch, height, width)
    reference = maps.mean(dim=1) if reference is None else reference
    return orient(projection, reference.to(torch.float64)).to(maps.dtype)


def eigencam(activations: Tensor, gradients: Tensor) -> Tensor:
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): the first principal component of the activations.

    Class-agnostic (``gradients`` are ignored). The SVD sign is arbitrary; here the map is oriented to
    correlate positively with the mean activation (pytorch-grad-cam leaves the sign to LAPACK, so its
    map is sometimes the negative of this one).

    Example:
        >>> A = torch.zeros(1, 2, 1, 3); A[0, 0, 0] = torch.tensor([0.0, 1.0, 2.0]); A[0, 1] = A[0, 0]
        >>> eigencam(A, A).round(decimals=3)  # centred (-1, 0, 1) * sqrt(2): sign follows the mean
        tensor([[[-1.4140,  0.0000,  1.4140]]])
    """
    del gradients
    return first_component(activations)


def eigengradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """Eigen-Grad-CAM (as pytorch-grad-cam): the first principal component of ``A * g``, sign as eigencam."""
    return first_component(activations * gradients)


def kernel_first_component(maps: Tensor, gamma: float | None = None, coef0: float = 1.0) -> Tensor:
    """Kernel PCA of the ``(u v, K)`` matrix of ``maps``: the first component's scores, ``(B, u, v)``.

    The sigmoid kernel ``tanh(gamma <a_p, a_q> + coef0)`` on the position vectors (centred over
    positions), ``gamma = 1 / K`` by default, the kernel matrix centred in feature space, scores
    ``sqrt(lambda_1) v_1`` as scikit-learn's ``KernelPCA(n_components=1, kernel="sigmoid")``.
    """
    batch, channels, height, width = maps.shape
    matrix = torch.nan_to_num(maps).flatten(2).transpose(1, 2).to(torch.float64)
    centred = matrix - matrix.mean(dim=1, keepdim=True)
    g = 1.0 / channels if gamma is None else gamma
    kernel = torch.tanh(g * centred @ centred.transpose(1, 2) + coef0)
    n = kernel.shape[-1]
    ones = torch.full((n, n), 1.0 / n, dtype=kernel.dtype, device=kernel.device)
    kernel = kernel - ones @ kernel - kernel @ ones + ones @ kernel @ ones
    values, vectors = torch.linalg.eigh((kernel + kernel.transpose(1, 2)) / 2)
    top = values[:, -1].clamp(min=0)
    scores = (vectors[:, :, -1] * top.sqrt()[:, None]).view(batch, height, width)
    return orient(scores, maps.mean(dim=1).to(torch.float64)).to(maps.dtype)


def kpcacam(activations: Tensor, gradients: Tensor) -> Tensor:
    """KPCA-CAM (Karmani et al. 2024, as pytorch-grad-cam's ``KPCA_CAM``): kernel PCA of the activations.

    Sigmoid kernel, ``gamma = 1/K``, first component; class-agnostic. The sign is oriented like
    :func:`eigencam` (scikit-learn's sign convention is arbitrary with respect to the image).
    """
    del gradients
    return kernel_first_component(activations)


def channel_terms(function: Callable[[Tensor, Tensor], Tensor], activations: Tensor, gradients: Tensor) -> Tensor:
    """The per-channel terms ``T_k`` of a channel-separable CAM (``raw = sum_k T_k``), ``(B, K, u, v)``.

    Each channel is evaluated on its own (as a batch of one-channel layers), so any weighting whose
    channel weight depends on that channel only -- Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM,
    HiResCAM, element-wise Grad-CAM, FEM -- gives back exactly its terms ``w_k A_k``.
    """
    batch, channels, height, width = activations.shape
    single_a = activations.reshape(batch * channels, 1, height, width)
    single_g = gradients.reshape(batch * channels, 1, height, width)
    return function(single_a, single_g).reshape(batch, channels, height, width)


EIGEN_METHODS = frozenset(row.name for row in ROWS if row.eigen)  # their own decomposition: not eigen-smoothed


def eigen_smooth(function: Callable[[Tensor, Tensor], Tensor], activations: Tensor, gradients: Tensor) -> Tensor:
    """pytorch-grad-cam's ``eigen_smooth``: the first principal component of the weighted activations.

    Replaces ``sum_k T_k`` by the first principal component of the terms ``T_k`` (see
    :func:`channel_terms`), oriented to correlate positively with ``sum_k T_k``.
    """
    terms = channel_terms(function, activations, gradients)
    return first_component(terms, terms.sum(dim=1))
