"""Faithfulness by perturbation: deletion, insertion, Average Drop, Increase in Confidence, Average Gain.

All functions take ``(model, x, maps, targets=None, **options)`` with ``x`` the preprocessed images
``(B, C, H, W)`` and ``maps`` ``(B, H, W)`` saliency (upsampled bilinearly when smaller than ``x``).
The classes are fixed on the clean images (the prediction when ``targets`` is None) and the scores are
the softmax probability of that class (``score="logit"`` for the logit; a callable target gives its
own score). The model runs as found (call ``model.eval()`` yourself), without autograd, on its device,
``batch_size`` perturbed images per forward.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camlens.metrics._common import (
    MetricResult,
    check_choice,
    check_maps,
    check_positive_int,
    make_scorer,
    saliency_order,
)
from camlens.targets import Targets

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+

BASELINES = ("zeros", "mean", "blur")
RISE_BLUR_SIZE = 11
RISE_BLUR_SIGMA = 5.0


def gaussian_blur(x: Tensor, size: int = RISE_BLUR_SIZE, sigma: float = RISE_BLUR_SIGMA) -> Tensor:
    """RISE's blurred image: a ``size x size`` Gaussian (``sigma``), zero padding, per channel.

    RISE (Petsiuk et al. 2018) blurs with an 11 x 11 kernel of sigma 5 through ``conv2d(padding=5)``.

    Example:
        >>> gaussian_blur(torch.ones(1, 1, 16, 16))[0, 0, 8, 8].item()  # far from the border: unchanged
        1.0
    """
    radius = size // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).to(device=x.device, dtype=x.dtype)
    channels = x.shape[1]
    rows = weights.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = weights.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    out = F.conv2d(x, rows, padding=(radius, 0), groups=channels)
    return F.conv2d(out, cols, padding=(0, radius), groups=channels)


def make_baseline(x: Tensor, baseline: str | Tensor) -> Tensor:
    """The image a pixel takes when removed: ``"zeros"``, per-image channel ``"mean"``, ``"blur"`` or a tensor."""
    if isinstance(baseline, Tensor):
        try:
            return torch.broadcast_to(baseline.to(device=x.device, dtype=x.dtype), x.shape)
        except RuntimeError:
            shapes = f"{tuple(baseline.shape)} does not broadcast to {tuple(x.shape)}"
            raise ValueError(f"baseline of shape {shapes}") from None
    check_choice(baseline, "baseline", BASELINES)
    if baseline == "zeros":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    return gaussian_blur(x)


def step_counts(pixels: int, steps: int | None, pixels_per_step: int | None) -> Tensor:
    """Pixels perturbed at each point: ``0, p, 2p, ..., pixels`` with ``p`` fixed (the last step may be shorter)."""
    if pixels_per_step is None:
        steps = check_positive_int(50 if steps is None else steps, "steps")
        pixels_per_step = math.ceil(pixels / steps)
    else:
        pixels_per_step = check_positive_int(pixels_per_step, "pixels_per_step")
    counts = list(range(0, pixels, pixels_per_step)) + [pixels]
    return torch.tensor(counts, dtype=torch.long)


class CurveOptions(TypedDict, total=False):
    """The options :func:`deletion` and :func:`insertion` share (defaults: 50 steps, probability, 32 at a time)."""

    steps: int | None
    pixels_per_step: int | None
    score: str
    batch_size: int


def _curve(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    targets: Targets,
    *,
    insert: bool,
    baseline: str | Tensor,
    steps: int | None = 50,
    pixels_per_step: int | None = None,
    score: str = "probability",
    batch_size: int = 32,
) -> MetricResult:
    scorer, x, clean = make_scorer(model, x, targets, score, batch_size)
    maps = check_maps(maps, x)
    batch, _, height, width = x.shape
    pixels = height * width
    ranks = saliency_order(maps)  # (B, HW)
    counts = step_counts(pixels, steps, pixels_per_step).to(x.device)
    points = counts.shape[0]
    other = make_baseline(x, baseline)
    keep_x, fill = (other, x) if insert else (x, other)  # insertion: start from the baseline, put x back
    image_of = torch.arange(batch, device=x.device).repeat_interleave(points)
    count_of = counts.repeat(batch)
    # the point where the image is x itself (nothing deleted / everything inserted) is the clean score
    own = count_of == (pixels if insert else 0)
    todo = (~own).nonzero()[:, 0]

    def build(rows: slice) -> tuple[Tensor, Tensor]:
        picked = todo[rows]
        index = image_of[picked]
        changed = (ranks[index] < count_of[picked][:, None]).view(-1, 1, height, width)
        return torch.where(changed, fill[index], keep_x[index]), index

    flat = torch.empty(batch * points, device=x.device)
    flat[own] = clean.to(x.device)[image_of[own]]
    flat[todo] = scorer.stream(len(todo), build).to(x.device) if len(todo) else flat[todo]
    curve = flat.view(batch, points).cpu()
    fractions = counts.cpu().double() / pixels
    values = torch.trapezoid(curve.double(), fractions, dim=1).float()
    return MetricResult(values=values, higher_is_better=insert, curve=curve, fractions=fractions.float())


def deletion(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    targets: Targets = None,
    *,
    baseline: str | Tensor = "zeros",
    **options: Unpack[CurveOptions],
) -> MetricResult:
    """Deletion AUC (Petsiuk et al., RISE, BMVC 2018, section 4.1): lower is better.

    Pixels are set to ``baseline`` (all channels) in order of decreasing saliency, a fixed number per
    step (``ceil(H*W / steps)``, or ``pixels_per_step``; RISE used ``W`` per step), ties broken in
    raster order; the curve holds the score of the fixed class after ``0, p, 2p, ..., H*W`` pixels,
    and the value is its trapezoid area over the fraction of pixels removed, ``(B,)`` in ``.values``,
    ``(B, T)`` in ``.curve``, the fractions in ``.fractions``.

    Args:
        baseline: ``"zeros"`` (RISE; zeros of the tensor you pass, i.e. the dataset mean colour after
            normalisation), ``"mean"`` (each image's channel means), ``"blur"`` or a tensor.
        steps, pixels_per_step: the step size (default 50 steps; ``pixels_per_step`` wins when given).
        score: ``"probability"`` (softmax, RISE; the default) or ``"logit"``.
        batch_size: perturbed images per forward pass (default 32).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> result = deletion(model, torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4), steps=4)
        >>> result.values.shape, result.curve.shape
        (torch.Size([2]), torch.Size([2, 5]))
    """
    return _curve(model, x, maps, targets, insert=False, baseline=baseline, **options)


def insertion(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    targets: Targets = None,
    *,
    baseline: str | Tensor = "blur",
    **options: Unpack[CurveOptions],
) -> MetricResult:
    """Insertion AUC (Petsiuk et al., RISE, BMVC 2018, section 4.1): higher is better.

    Starts from ``baseline`` (RISE: the image blurred by an 11 x 11 Gaussian of sigma 5) and puts the
    original pixels back in order of decreasing saliency, a fixed number per step, ties in raster order;
    trapezoid area of the class score over the fraction inserted. Options as in :func:`deletion`.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> insertion(model, torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4), steps=4).fractions
        tensor([0.0000, 0.2500, 0.5000, 0.7500, 1.0000])
    """
    return _curve(model, x, maps, targets, insert=True, baseline=baseline, **options)


def _masked_scores(
    model: nn.Module, x: Tensor, maps: Tensor, targets: Targets, score: str, batch_size: int
) -> tuple[Tensor, Tensor]:
    scorer, x, clean = make_scorer(model, x, targets, score, batch_size)
    maps = check_maps(maps, x, unit=True)
    masked = scorer(x * maps[:, None], torch.arange(x.shape[0], device=x.device))
    return clean.cpu(), masked.cpu()


def average_drop(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    targets: Targets = None,
    *,
    score: str = "probability",
    batch_size: int = 32,
) -> MetricResult:
    """Average Drop % (Chattopadhyay et al., Grad-CAM++, WACV 2018, section 4.1, Eq. 21): lower is better.

    Per image ``100 * max(0, Y - O) / Y`` with ``Y`` the class probability on the image and ``O`` on
    the image multiplied by the ``[0, 1]`` map (``x * map``, the tensor you pass); the paper's number
    is the mean of ``.values``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> average_drop(model, torch.rand(3, 1, 2, 2), torch.ones(3, 2, 2)).values  # map of ones: no drop
        tensor([0., 0., 0.])
    """
    clean, masked = _masked_scores(model, x, maps, targets, score, batch_size)
    values = 100 * (clean - masked).clamp(min=0) / clean
    return MetricResult(values=values, higher_is_better=False)


def increase_in_confidence(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    targets: Targets = None,
    *,
    score: str = "probability",
    batch_size: int = 32,
) -> MetricResult:
    """% Increase in Confidence (Grad-CAM++ paper, section 4.1, Eq. 22): higher is better.

    Per image ``100 * [Y < O]`` (``Y``, ``O`` as in :func:`average_drop`); the paper's % is the mean.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> increase_in_confidence(model, torch.rand(2, 1, 2, 2), torch.ones(2, 2, 2)).values
        tensor([0., 0.])
    """
    clean, masked = _masked_scores(model, x, maps, targets, score, batch_size)
    return MetricResult(values=100 * (clean < masked).float(), higher_is_better=True)


def average_gain(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    targets: Targets = None,
    *,
    batch_size: int = 32,
) -> MetricResult:
    """Average Gain % (Zhang et al., Opti-CAM, 2023, Eq. 12): higher is better.

    Per image ``100 * max(0, O - Y) / (1 - Y)`` with softmax probabilities (``Y`` on the image, ``O`` on
    ``x * map``); the complement of Average Drop, normalised by the room left to gain.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> average_gain(model, torch.rand(2, 1, 2, 2), torch.ones(2, 2, 2)).values
        tensor([0., 0.])
    """
    clean, masked = _masked_scores(model, x, maps, targets, "probability", batch_size)
    room = (1 - clean).clamp(min=torch.finfo(clean.dtype).tiny)
    return MetricResult(values=100 * (masked - clean).clamp(min=0) / room, higher_is_better=True)
