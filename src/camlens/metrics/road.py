"""ROAD: RemOve And Debias (Rong et al., ICML 2022), with noisy linear imputation solved in torch.

A removed pixel takes the weighted mean of its 8 neighbours (weights 1/6 direct, 1/12 diagonal, only
neighbours inside the image), where the neighbours may themselves be removed: for the removed set
``R`` and every ``i`` in ``R``

    sum_j w_ij * v_i  -  sum_{j in R} w_ij * v_j  =  sum_{j not in R} w_ij * x_j

one sparse, symmetric positive-definite system per image and channel (Eq. 3 of the paper's appendix).
As in the authors' code, it is solved by a sparse LU (scipy) per image, one factorisation for all
channels; the system is assembled with one vectorised pass per neighbour offset (no loop over
pixels). Imputation runs on the CPU (numpy at this edge); the perturbed images are then scored in
batches on the model's device. Every connected removed region touches a known pixel unless the whole
image is removed (then it becomes 0). Then Gaussian noise of standard deviation ``noise`` is added to
the imputed pixels (the "noisy" in noisy linear imputation). An iterative torch solver (conjugate
gradients with a 3 x 3 convolution as the matrix product) was tried first: on 224 x 224 images with
half the pixels removed it needs hundreds of iterations, far slower than the direct solve.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from camlens.metrics._common import MetricResult, check_choice, check_maps, make_scorer, saliency_order
from camlens.targets import Targets

DIRECT = 1 / 6
DIAGONAL = 1 / 12
ORDERS = ("combined", "morf", "lerf")
DEFAULT_PERCENTAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


OFFSETS = (
    ((-1, -1), DIAGONAL), ((-1, 0), DIRECT), ((-1, 1), DIAGONAL), ((0, -1), DIRECT),
    ((0, 1), DIRECT), ((1, -1), DIAGONAL), ((1, 0), DIRECT), ((1, 1), DIAGONAL),
)  # fmt: skip


def _solve_one(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Impute one ``(C, H, W)`` float64 image: the system built with one vectorised pass per neighbour offset."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu

    channels, height, width = image.shape
    flat = image.reshape(channels, -1)
    unknown = np.flatnonzero(removed.ravel())
    out = flat.copy()
    if unknown.size == 0:
        return image
    if unknown.size == height * width:  # nothing known: no neighbour to interpolate from
        out[:] = 0.0
        return out.reshape(image.shape)
    position = np.full(height * width, -1)
    position[unknown] = np.arange(unknown.size)
    rows, cols = unknown // width, unknown % width
    diagonal = np.zeros(unknown.size)
    rhs = np.zeros((unknown.size, channels))
    entries_r, entries_c, entries_v = [], [], []
    for (di, dj), weight in OFFSETS:
        r, c = rows + di, cols + dj
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        diagonal[inside] += weight
        equation = np.flatnonzero(inside)
        neighbour = r[inside] * width + c[inside]
        is_unknown = position[neighbour] >= 0
        entries_r.append(equation[is_unknown])
        entries_c.append(position[neighbour[is_unknown]])
        entries_v.append(np.full(int(is_unknown.sum()), -weight))
        np.add.at(rhs, equation[~is_unknown], weight * flat[:, neighbour[~is_unknown]].T)
    entries_r.append(np.arange(unknown.size))
    entries_c.append(np.arange(unknown.size))
    entries_v.append(diagonal)
    matrix = coo_matrix(
        (np.concatenate(entries_v), (np.concatenate(entries_r), np.concatenate(entries_c))),
        shape=(unknown.size, unknown.size),
    ).tocsc()
    solution = splu(matrix).solve(rhs)
    out[:, unknown] = solution.T
    return out.reshape(image.shape)


def noisy_linear_impute(
    x: Tensor,
    removed: Tensor,
    *,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fill the ``removed`` pixels of ``x`` by noisy linear imputation (ROAD, Rong et al. 2022).

    One sparse LU solve (scipy) per image for all its channels; needs scipy
    (``pip install 'camlens[metrics]'``).

    Args:
        x: images ``(N, C, H, W)``.
        removed: ``(N, H, W)`` bool, True where a pixel (all channels) is removed.
        noise: standard deviation of the Gaussian noise added to imputed pixels (0: plain linear).
        generator: for the noise (deterministic with a seeded generator).

    Returns:
        a new ``(N, C, H, W)`` tensor on ``x``'s device: ``x`` where kept, imputed values where removed.

    Example:
        >>> x = torch.tensor([[[[1.0, 1.0, 1.0], [1.0, 9.0, 1.0], [1.0, 1.0, 1.0]]]])
        >>> removed = torch.zeros(1, 3, 3, dtype=torch.bool); removed[0, 1, 1] = True
        >>> noisy_linear_impute(x, removed, noise=0.0)[0, 0, 1, 1].item()  # the neighbours' mean
        1.0
    """
    try:
        import scipy.sparse  # noqa: F401
    except ImportError:
        raise ImportError("ROAD's imputation needs scipy: pip install 'camlens[metrics]'") from None
    if removed.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"removed must be (N, H, W) = {(x.shape[0], *x.shape[2:])}, got {tuple(removed.shape)}")
    images = x.detach().double().cpu().numpy()
    holes = removed.detach().cpu().numpy().astype(bool)
    filled = torch.from_numpy(np.stack([_solve_one(images[n], holes[n]) for n in range(images.shape[0])]))
    if noise:
        mask = torch.from_numpy(holes)[:, None].expand_as(filled)
        filled = filled + noise * torch.randn(filled.shape, generator=generator, dtype=filled.dtype) * mask
    return filled.to(device=x.device, dtype=x.dtype)


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
