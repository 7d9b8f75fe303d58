"""ROAD: RemOve And Debias (Rong et al., ICML 2022), with noisy linear imputation solved in torch.

A removed pixel takes the weighted mean of its 8 neighbours (weights 1/6 direct, 1/12 diagonal, only
neighbours inside the image), where the neighbours may themselves be removed: for the removed set
``R`` and every ``i`` in ``R``

    sum_j w_ij * v_i  -  sum_{j in R} w_ij * v_j  =  sum_{j not in R} w_ij * x_j

one sparse, symmetric positive-definite system per image and channel (Eq. 3 of the paper's appendix).
The reference code builds it with scipy and solves it with a sparse LU per image; here it is solved
for every image, channel and percentage at once by Jacobi-preconditioned conjugate gradients whose
matrix-vector product is one 3 x 3 depthwise convolution: batched, on the model's device, no loop
over pixels. A component of removed pixels with no known neighbour (e.g. 100% removed) keeps the mean
of the image's known pixels. Then Gaussian noise of standard deviation ``noise`` is added to the
imputed pixels (the "noisy" in noisy linear imputation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camlens.metrics._common import MetricResult, check_choice, check_maps, make_scorer, saliency_order
from camlens.targets import Targets

DIRECT = 1 / 6
DIAGONAL = 1 / 12
ORDERS = ("combined", "morf", "lerf")
DEFAULT_PERCENTAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _kernel(dtype: torch.dtype, device: torch.device) -> Tensor:
    k = torch.tensor([[DIAGONAL, DIRECT, DIAGONAL], [DIRECT, 0.0, DIRECT], [DIAGONAL, DIRECT, DIAGONAL]])
    return k.to(device=device, dtype=dtype).view(1, 1, 3, 3)


def noisy_linear_impute(
    x: Tensor,
    removed: Tensor,
    *,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    tol: float = 1e-6,
    max_iter: int = 5000,
) -> Tensor:
    """Fill the ``removed`` pixels of ``x`` by noisy linear imputation (ROAD, Rong et al. 2022).

    Args:
        x: images ``(N, C, H, W)``.
        removed: ``(N, H, W)`` bool, True where a pixel (all channels) is removed.
        noise: standard deviation of the Gaussian noise added to imputed pixels (0: plain linear).
        generator: for the noise (deterministic with a seeded generator).
        tol: relative residual at which conjugate gradients stop (float64 inside).
        max_iter: iteration cap.

    Returns:
        a new ``(N, C, H, W)`` tensor: ``x`` where kept, the imputed values where removed.

    Example:
        >>> x = torch.tensor([[[[1.0, 1.0, 1.0], [1.0, 9.0, 1.0], [1.0, 1.0, 1.0]]]])
        >>> removed = torch.zeros(1, 3, 3, dtype=torch.bool); removed[0, 1, 1] = True
        >>> noisy_linear_impute(x, removed, noise=0.0)[0, 0, 1, 1].item()  # the neighbours' mean
        1.0
    """
    if removed.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"removed must be (N, H, W) = {(x.shape[0], *x.shape[2:])}, got {tuple(removed.shape)}")
    n, channels, height, width = x.shape
    work = x.detach().double()
    hole = removed.to(x.device)[:, None].expand(n, channels, height, width)
    known = ~hole
    kernel = _kernel(torch.float64, x.device).expand(channels, 1, 3, 3)

    def conv(t: Tensor) -> Tensor:
        return F.conv2d(t, kernel, padding=1, groups=channels)

    degree = conv(torch.ones(1, channels, height, width, dtype=torch.float64, device=x.device))  # in-image weights
    holef = hole.double()

    def apply(v: Tensor) -> Tensor:  # A v on the removed pixels (v is 0 elsewhere)
        return (degree * v - conv(v)) * holef

    rhs = conv(work * known) * holef
    count = known.sum(dim=(2, 3), keepdim=True).clamp(min=1)
    mean_known = (work * known).sum(dim=(2, 3), keepdim=True) / count
    v = mean_known * holef  # a start that also fills components without known neighbours
    r = rhs - apply(v)
    inv_diag = torch.where(hole, 1.0 / degree.expand_as(work), torch.zeros_like(work))
    z = r * inv_diag
    p = z.clone()
    rz = (r * z).sum(dim=(2, 3), keepdim=True)
    scale = rhs.norm(dim=(2, 3), keepdim=True).clamp(min=1e-30)
    for _ in range(max_iter):
        if bool(((r.norm(dim=(2, 3), keepdim=True) / scale) <= tol).all()):
            break
        ap = apply(p)
        pap = (p * ap).sum(dim=(2, 3), keepdim=True)
        alpha = torch.where(pap > 0, rz / pap.clamp(min=1e-300), torch.zeros_like(pap))
        v = v + alpha * p
        r = r - alpha * ap
        z = r * inv_diag
        rz_new = (r * z).sum(dim=(2, 3), keepdim=True)
        beta = torch.where(rz > 0, rz_new / rz.clamp(min=1e-300), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    if noise:
        v = v + noise * torch.randn(v.shape, generator=generator, dtype=v.dtype, device="cpu").to(v.device) * holef
    return torch.where(hole, v, work).to(x.dtype)


def removal_masks(ranks: Tensor, percentages: Tensor, pixels: int, most_relevant: bool) -> Tensor:
    """``(B, P, H*W)`` bool: the ``round(p * H*W)`` most (or least) salient pixels of each image and percentage."""
    counts = torch.round(percentages.double() * pixels).long().to(ranks.device)
    if most_relevant:
        return ranks[:, None, :] < counts[None, :, None]
    return ranks[:, None, :] >= (pixels - counts)[None, :, None]


def road(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    targets: Targets = None,
    *,
    percentages: Sequence[float] = DEFAULT_PERCENTAGES,
    order: str = "combined",
    noise: float = 0.01,
    seed: int = 0,
    score: str = "probability",
    batch_size: int = 32,
) -> MetricResult:
    """ROAD (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022).

    For each percentage ``p``, remove the ``round(p * H*W)`` most relevant (MoRF) or least relevant
    (LeRF) pixels (ties in raster order), impute them by noisy linear imputation and score the fixed
    class. ``.extra["morf"]`` and ``.extra["lerf"]`` hold the ``(B, P)`` curves, ``.fractions`` the
    percentages. ``.values`` by ``order``:

    * ``"morf"``: mean MoRF score over the percentages (lower is better);
    * ``"lerf"``: mean LeRF score (higher is better);
    * ``"combined"`` (default): ``mean_p (LeRF - MoRF) / 2`` (higher is better), as pytorch-grad-cam's
      ``ROADCombined`` (its scores are differences to the clean score, which cancel).

    Percentages count *removed* pixels as in the paper (pytorch-grad-cam's ``ROADMostRelevantFirst(p)``
    keeps the pixels below the ``p``-th percentile, i.e. removes ``100 - p`` %, and thresholds ties).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2))
        >>> result = road(model, torch.rand(2, 3, 4, 4), torch.rand(2, 4, 4), percentages=[0.25, 0.5])
        >>> result.values.shape, result.extra["morf"].shape
        (torch.Size([2]), torch.Size([2, 2]))
    """
    check_choice(order, "order", ORDERS)
    if isinstance(percentages, str) or not len(percentages):
        raise ValueError("percentages must be a non-empty sequence of fractions in (0, 1]")
    fractions = torch.tensor([float(p) for p in percentages], dtype=torch.float64)
    if (fractions <= 0).any() or (fractions > 1).any():
        raise ValueError(f"percentages must be fractions in (0, 1] (0.2 for 20%), got {list(percentages)}")
    scorer, x, _ = make_scorer(model, x, targets, score, batch_size)
    maps = check_maps(maps, x)
    batch, _, height, width = x.shape
    pixels = height * width
    ranks = saliency_order(maps)
    generator = torch.Generator().manual_seed(seed)
    points = fractions.shape[0]
    curves: dict[str, Tensor] = {}
    for name, most in (("morf", True), ("lerf", False)):
        if order != "combined" and name != order:
            continue
        removed = removal_masks(ranks, fractions, pixels, most).view(batch * points, height, width)
        image_of = torch.arange(batch, device=x.device).repeat_interleave(points)
        scores = []
        for start in range(0, batch * points, batch_size):
            rows = slice(start, min(start + batch_size, batch * points))
            imputed = noisy_linear_impute(x[image_of[rows]], removed[rows], noise=noise, generator=generator)
            scores.append(scorer(imputed, image_of[rows]))
        curves[name] = torch.cat(scores).view(batch, points).cpu()
    if order == "combined":
        values = ((curves["lerf"] - curves["morf"]) / 2).mean(dim=1)
    else:
        values = curves[order].mean(dim=1)
    return MetricResult(
        values=values,
        higher_is_better=order != "morf",
        curve=curves.get("morf", curves.get("lerf")),
        fractions=fractions.float(),
        extra=curves,
    )
