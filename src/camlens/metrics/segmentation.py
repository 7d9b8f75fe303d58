"""Per-class metrics of segmentation maps: pointing game and energy inside a mask, deletion and insertion of the
class's score within its region.

For one image, ``maps`` are ``(K, H, W)``, one per explained class, with ``classes`` ``(K,)`` and ``regions``
``(K, h, w)`` bool at the output's resolution (e.g. from :func:`camlens.explain_segmentation`:
``result["gradcam"][i]``, ``result.classes``, ``result.regions[i]``). The score of class ``c`` is Seg-Grad-CAM's:
``c``'s logit summed over its region, the region held fixed while the image is perturbed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from camlens.guard import guard
from camlens.metrics._common import MetricResult, saliency_order
from camlens.metrics.localisation import POINTING_TOLERANCE, energy_pointing_game, pointing_game
from camlens.metrics.perturbation import make_baseline, step_counts
from camlens.segmentation import segmentation_logits


def class_pointing_game(maps: Tensor, masks: Tensor, *, tolerance: float = POINTING_TOLERANCE) -> MetricResult:
    """Pointing game of each class's map against its mask ``(K, H, W)`` bool (the predicted or a given mask):
    higher is better.

    Example:
        >>> maps = torch.zeros(2, 20, 20); maps[:, 2, 2] = 1
        >>> masks = torch.zeros(2, 20, 20, dtype=torch.bool); masks[0, :5, :5] = True; masks[1, 10:, 10:] = True
        >>> class_pointing_game(maps, masks, tolerance=0).values
        tensor([1., 0.])
    """
    return pointing_game(maps, masks, tolerance=tolerance)


def class_energy(maps: Tensor, masks: Tensor) -> MetricResult:
    """The share of each class's (non-negative) map inside its mask (energy-based pointing game): higher is better."""
    return energy_pointing_game(maps, masks)


def _region_scores(model: nn.Module, images: Tensor, classes: Tensor, regions: Tensor, batch_size: int) -> Tensor:
    """``sum_{region_j} logit_{classes_j}`` of the model on ``images[j]``: ``(len(images),)``."""
    scores = []
    with guard(model) as guarded, torch.no_grad():
        for first in range(0, len(images), batch_size):
            logits = segmentation_logits(guarded.model(images[first : first + batch_size]))
            rows = torch.arange(len(logits), device=logits.device)
            picked = logits[rows, classes[first : first + batch_size].to(logits.device)]
            scores.append((picked * regions[first : first + batch_size].to(picked.dtype)).flatten(1).sum(1))
    return torch.cat(scores).float().cpu()


def _class_curve(
    model: nn.Module,
    image: Tensor,
    maps: Tensor,
    classes: Any,
    regions: Tensor,
    *,
    insert: bool,
    baseline: str | Tensor,
    steps: int | None,
    pixels_per_step: int | None,
    batch_size: int,
) -> MetricResult:
    if not isinstance(image, Tensor) or image.dim() != 3:
        raise ValueError("image must be one (3, H, W) tensor; call once per image")
    classes = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
    height, width = image.shape[-2:]
    if maps.shape != (len(classes), height, width):
        raise ValueError(f"maps must be (K, H, W) = ({len(classes)}, {height}, {width}), got {tuple(maps.shape)}")
    if (
        not isinstance(regions, Tensor)
        or regions.dtype != torch.bool
        or regions.dim() != 3
        or len(regions) != len(classes)
    ):
        raise ValueError(f"regions must be (K, h, w) bool for K = {len(classes)} classes")
    x = image.detach()[None]
    other = make_baseline(x, baseline)[0]
    start, fill = (other, x[0]) if insert else (x[0], other)
    ranks = saliency_order(maps.detach().to(image.device))  # (K, HW)
    counts = step_counts(height * width, steps, pixels_per_step)
    perturbed, index = [], []
    for k in range(len(classes)):
        for count in counts.tolist():
            changed = (ranks[k] < count).view(1, height, width)
            perturbed.append(torch.where(changed, fill, start))
            index.append(k)
    scores = _region_scores(model, torch.stack(perturbed), classes[index], regions[index], batch_size)
    curve = scores.view(len(classes), len(counts))
    fractions = counts.double() / (height * width)
    values = torch.trapezoid(curve.double(), fractions, dim=1).float()
    return MetricResult(values=values, higher_is_better=insert, curve=curve, fractions=fractions.float())


def class_deletion(
    model: nn.Module,
    image: Tensor,
    maps: Tensor,
    classes: Any,
    regions: Tensor,
    *,
    baseline: str | Tensor = "zeros",
    steps: int | None = 50,
    pixels_per_step: int | None = None,
    batch_size: int = 16,
) -> MetricResult:
    """Deletion AUC of each class's score within its region (RISE's deletion, per class): lower is better.

    Pixels of ``image`` are set to ``baseline`` in order of decreasing saliency of the class's map (ties in raster
    order, ``ceil(H*W / steps)`` per step, as :func:`camlens.metrics.deletion`); after each step the score is the
    class's logit summed over its (fixed) region. The AUC is over the fraction of pixels, in logit-sum units.
    ``.values`` ``(K,)``, ``.curve`` ``(K, T)``.
    """
    return _class_curve(
        model, image, maps, classes, regions, insert=False, baseline=baseline, steps=steps,
        pixels_per_step=pixels_per_step, batch_size=batch_size,
    )  # fmt: skip


def class_insertion(
    model: nn.Module,
    image: Tensor,
    maps: Tensor,
    classes: Any,
    regions: Tensor,
    *,
    baseline: str | Tensor = "blur",
    steps: int | None = 50,
    pixels_per_step: int | None = None,
    batch_size: int = 16,
) -> MetricResult:
    """Insertion AUC of each class's score within its region: pixels of ``image`` put back onto ``baseline``
    (RISE: a blurred copy) in order of decreasing saliency: higher is better."""
    return _class_curve(
        model, image, maps, classes, regions, insert=True, baseline=baseline, steps=steps,
        pixels_per_step=pixels_per_step, batch_size=batch_size,
    )  # fmt: skip
