"""Per-box metrics of detection maps: pointing game and energy inside the box, deletion and insertion of its score.

``maps`` are ``(n, H, W)``, one per box, with ``boxes`` ``(n, 4)`` (x1, y1, x2, y2 pixels) and ``labels`` ``(n,)``
(e.g. from :func:`camlens.explain_detections`: ``torch.stack([d.maps[m] for d in result.detections[i]])``).

For deletion and insertion the box's score is **re-matched at every step**: the detector runs on the perturbed
image and the score is that of its output box of the same label with the largest IoU with the explained box (at
least ``iou_threshold``; 0 when no box matches), the rule :func:`camlens.detection.match_boxes` applies to
reference boxes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from camlens.detection import DetectorAdapter, adapter_for, match_boxes
from camlens.guard import guard
from camlens.metrics._common import MetricResult, saliency_order
from camlens.metrics.localisation import POINTING_TOLERANCE, boxes_to_masks, energy_pointing_game, pointing_game
from camlens.metrics.perturbation import make_baseline, step_counts


def _box_masks(maps: Tensor, boxes: Any) -> Tensor:
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if maps.dim() != 3 or len(boxes) != maps.shape[0]:
        raise ValueError(f"maps must be (n, H, W) for n = {len(boxes)} boxes, got shape {tuple(maps.shape)}")
    return boxes_to_masks([[box.tolist()] for box in boxes], (int(maps.shape[-2]), int(maps.shape[-1])))


def box_pointing_game(maps: Tensor, boxes: Any, *, tolerance: float = POINTING_TOLERANCE) -> MetricResult:
    """Pointing game of each box's map against its own box (a hit when the maximum is within ``tolerance`` px).

    Example:
        >>> maps = torch.zeros(2, 20, 20); maps[0, 2, 2] = 1; maps[1, 2, 2] = 1
        >>> box_pointing_game(maps, [[0, 0, 5, 5], [10, 10, 20, 20]], tolerance=0).values
        tensor([1., 0.])
    """
    return pointing_game(maps, _box_masks(maps, boxes), tolerance=tolerance)


def box_energy(maps: Tensor, boxes: Any) -> MetricResult:
    """The share of each box's (non-negative) map inside its own box (energy-based pointing game): higher is better."""
    return energy_pointing_game(maps, _box_masks(maps, boxes))


def box_scores(
    model: nn.Module,
    images: list[Tensor],
    boxes: Tensor,
    labels: Tensor,
    *,
    adapter: DetectorAdapter | None = None,
    iou_threshold: float = 0.5,
    batch_size: int = 16,
) -> Tensor:
    """The score of box ``boxes[j]`` (class ``labels[j]``) re-found by IoU in ``images[j]``: ``(len(images),)``."""
    found = adapter_for(model, adapter)
    scores = torch.zeros(len(images))
    with torch.no_grad():
        for first in range(0, len(images), batch_size):
            outputs = found.forward(model, images[first : first + batch_size])
            for j, out in enumerate(outputs, start=first):
                ((index, _),) = match_boxes(out, boxes[j : j + 1], labels[j : j + 1], iou_threshold)
                if index is not None:
                    scores[j] = float(out["scores"][index])
    return scores


def _box_curve(
    model: nn.Module,
    image: Tensor,
    maps: Tensor,
    boxes: Any,
    labels: Any,
    *,
    insert: bool,
    adapter: DetectorAdapter | None,
    baseline: str | Tensor,
    steps: int | None,
    pixels_per_step: int | None,
    iou_threshold: float,
    batch_size: int,
) -> MetricResult:
    if not isinstance(image, Tensor) or image.dim() != 3:
        raise ValueError("image must be one (3, H, W) tensor; call once per image")
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    height, width = image.shape[-2:]
    if maps.shape != (len(boxes), height, width) or len(labels) != len(boxes):
        raise ValueError(
            f"maps must be (n, H, W) = ({len(boxes)}, {height}, {width}) and labels (n,), got "
            f"{tuple(maps.shape)} and {tuple(labels.shape)}"
        )
    x = image.detach()[None]
    other = make_baseline(x, baseline)[0]
    start, fill = (other, x[0]) if insert else (x[0], other)
    ranks = saliency_order(maps.detach().to(image.device))  # (n, HW)
    counts = step_counts(height * width, steps, pixels_per_step)
    perturbed, box_of = [], []
    for k in range(len(boxes)):
        for count in counts.tolist():
            changed = (ranks[k] < count).view(1, height, width)
            perturbed.append(torch.where(changed, fill, start))
            box_of.append(k)
    with guard(model) as guarded:
        scores = box_scores(
            guarded.model, perturbed, boxes[box_of], labels[box_of], adapter=adapter, iou_threshold=iou_threshold,
            batch_size=batch_size,
        )  # fmt: skip
    curve = scores.view(len(boxes), len(counts))
    fractions = counts.double() / (height * width)
    values = torch.trapezoid(curve.double(), fractions, dim=1).float()
    return MetricResult(values=values, higher_is_better=insert, curve=curve, fractions=fractions.float())


def box_deletion(
    model: nn.Module,
    image: Tensor,
    maps: Tensor,
    boxes: Any,
    labels: Any,
    *,
    adapter: DetectorAdapter | None = None,
    baseline: str | Tensor = "zeros",
    steps: int | None = 50,
    pixels_per_step: int | None = None,
    iou_threshold: float = 0.5,
    batch_size: int = 16,
) -> MetricResult:
    """Deletion AUC of each box's score (RISE's deletion, per box): lower is better.

    Pixels of ``image`` are set to ``baseline`` in order of decreasing saliency of the box's map (ties in raster
    order, ``ceil(H*W / steps)`` per step, as :func:`camlens.metrics.deletion`); after each step the detector runs on
    the image and the box's score is re-matched by IoU and label. ``.values`` ``(n,)``, ``.curve`` ``(n, T)``.
    """
    return _box_curve(
        model, image, maps, boxes, labels, insert=False, adapter=adapter, baseline=baseline, steps=steps,
        pixels_per_step=pixels_per_step, iou_threshold=iou_threshold, batch_size=batch_size,
    )  # fmt: skip


def box_insertion(
    model: nn.Module,
    image: Tensor,
    maps: Tensor,
    boxes: Any,
    labels: Any,
    *,
    adapter: DetectorAdapter | None = None,
    baseline: str | Tensor = "blur",
    steps: int | None = 50,
    pixels_per_step: int | None = None,
    iou_threshold: float = 0.5,
    batch_size: int = 16,
) -> MetricResult:
    """Insertion AUC of each box's score: pixels of ``image`` put back onto ``baseline`` (RISE: a blurred copy) in
    order of decreasing saliency, the box re-matched by IoU and label at each step: higher is better."""
    return _box_curve(
        model, image, maps, boxes, labels, insert=True, adapter=adapter, baseline=baseline, steps=steps,
        pixels_per_step=pixels_per_step, iou_threshold=iou_threshold, batch_size=batch_size,
    )  # fmt: skip
