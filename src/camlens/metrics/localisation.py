"""Metrics of the map alone (no model): pointing games against object masks, and sparseness."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from camlens.metrics._common import MetricResult

POINTING_TOLERANCE = 15
Box = Sequence[float]


def _check_masks(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(maps, Tensor) or not isinstance(masks, Tensor):
        raise TypeError("maps and masks must be tensors (B, H, W)")
    if maps.dim() != 3:
        raise ValueError(f"maps must be (B, H, W), got shape {tuple(maps.shape)}")
    if masks.dtype != torch.bool:
        raise TypeError(f"masks must be boolean (B, H, W), not {masks.dtype}; e.g. masks > 0 or boxes_to_masks(...)")
    if masks.shape != maps.shape:
        raise ValueError(f"masks {tuple(masks.shape)} and maps {tuple(maps.shape)} must have the same shape")
    return maps.detach(), masks.to(maps.device)


def boxes_to_masks(boxes: Sequence[Sequence[Box]], size: tuple[int, int]) -> Tensor:
    """Boolean masks ``(B, H, W)`` from boxes ``(x0, y0, x1, y1)`` in pixels, several boxes per image.

    Pixel ``(row i, column j)`` is inside when ``x0 <= j < x1`` and ``y0 <= i < y1`` (``x1``, ``y1``
    exclusive, as in slicing). An image with no boxes gets an empty mask.

    Example:
        >>> boxes_to_masks([[(1, 0, 3, 1)]], (2, 4)).int()
        tensor([[[0, 1, 1, 0],
                 [0, 0, 0, 0]]], dtype=torch.int32)
    """
    height, width = size
    rows = torch.arange(height).view(-1, 1)
    cols = torch.arange(width).view(1, -1)
    masks = torch.zeros(len(boxes), height, width, dtype=torch.bool)
    for b, image_boxes in enumerate(boxes):
        for box in image_boxes:
            if len(box) != 4:
                raise ValueError(f"a box is (x0, y0, x1, y1), got {tuple(box)}")
            x0, y0, x1, y1 = (float(v) for v in box)
            if x1 < x0 or y1 < y0:
                raise ValueError(f"box {tuple(box)} has x1 < x0 or y1 < y0")
            masks[b] |= (cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)
    return masks


def pointing_game(maps: Tensor, masks: Tensor, *, tolerance: float = POINTING_TOLERANCE) -> MetricResult:
    """Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016): higher is better.

    A hit (1.0) when the map's maximum lies within ``tolerance`` pixels (Euclidean; 15 in the paper) of
    the object mask, else a miss (0.0); NaN for an image whose mask is empty (the paper skips those).
    Several maxima: the first in raster order.

    Example:
        >>> maps = torch.zeros(2, 40, 40); maps[0, 5, 5] = 1; maps[1, 35, 35] = 1
        >>> masks = torch.zeros(2, 40, 40, dtype=torch.bool); masks[:, 0:10, 0:10] = True
        >>> pointing_game(maps, masks).values  # 35 - 9 = 26 pixels away on each axis: a miss
        tensor([1., 0.])
    """
    maps, masks = _check_masks(maps, masks)
    batch, height, width = maps.shape
    peak = maps.flatten(1).argmax(dim=1)
    py, px = (peak // width).view(-1, 1, 1), (peak % width).view(-1, 1, 1)
    rows = torch.arange(height, device=maps.device).view(1, -1, 1)
    cols = torch.arange(width, device=maps.device).view(1, 1, -1)
    distance2 = ((rows - py) ** 2 + (cols - px) ** 2).double()
    nearest = torch.where(masks, distance2, torch.full_like(distance2, float("inf"))).flatten(1).amin(dim=1)
    hits = (nearest <= float(tolerance) ** 2).float()
    values = torch.where(masks.flatten(1).any(dim=1), hits, torch.full_like(hits, float("nan")))
    return MetricResult(values=values.cpu(), higher_is_better=True)


def energy_pointing_game(maps: Tensor, masks: Tensor) -> MetricResult:
    """Energy-based pointing game (Wang et al., Score-CAM, CVPRW 2020, section 5.2): higher is better.

    ``sum_{mask} L / sum L`` per image for a non-negative map ``L``: the share of the map's mass on the
    object. NaN where the map is all zero. Per-instance mass: call it with one instance's mask.

    Example:
        >>> maps = torch.tensor([[[1.0, 3.0]]]); masks = torch.tensor([[[False, True]]])
        >>> energy_pointing_game(maps, masks).values
        tensor([0.7500])
    """
    maps, masks = _check_masks(maps, masks)
    if (maps < 0).any():
        raise ValueError("energy_pointing_game needs non-negative maps: pass maps.clamp(min=0) or maps.abs()")
    total = maps.flatten(1).double().sum(dim=1)
    inside = (maps * masks).flatten(1).double().sum(dim=1)
    values = torch.where(total > 0, inside / total.clamp(min=1e-300), torch.full_like(total, float("nan")))
    return MetricResult(values=values.float().cpu(), higher_is_better=True)


def sparseness(maps: Tensor) -> MetricResult:
    """Sparseness: the Gini index of ``|map|`` (Chalasani et al., ICML 2020): higher is better (sparser).

    ``G = sum_i (2i - n - 1) a_(i) / (n sum_i a_i)`` over the ``n`` values sorted ascending (``i`` from
    1): 0 for a uniform map, ``1 - 1/n`` for a single non-zero pixel; 0 for an all-zero map. Quantus'
    ``Sparseness`` adds 1e-7 to every value first (a difference of order ``1e-7 n / sum |a|``).

    Example:
        >>> sparseness(torch.tensor([[[0.0, 0.0, 0.0, 1.0]]])).values
        tensor([0.7500])
    """
    if not isinstance(maps, Tensor) or maps.dim() < 2:
        raise ValueError("maps must be a tensor (B, H, W)")
    values = maps.detach().flatten(1).abs().double().sort(dim=1).values
    n = values.shape[1]
    weights = 2 * torch.arange(1, n + 1, dtype=torch.float64, device=values.device) - n - 1
    total = values.sum(dim=1)
    gini = (values * weights).sum(dim=1) / (n * total.clamp(min=1e-300))
    gini = torch.where(total > 0, gini, torch.zeros_like(gini))
    return MetricResult(values=gini.float().cpu(), higher_is_better=True)
