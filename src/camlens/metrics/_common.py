"""What every metric shares: input checks, the fixed classes, batched scoring, results, rankings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from camlens.engine import check_input
from camlens.postprocess import normalize_per_image, resize
from camlens.targets import Targets, logits_of, target_scores

SCORES = ("probability", "logit")


@dataclass(frozen=True)
class MetricResult:
    """Per-image values of one metric, with the curve behind them where there is one.

    Attributes:
        values: ``(B,)`` one value per image.
        higher_is_better: the direction of ``values``.
        curve: ``(B, T)`` the scores along the perturbation (None for curve-free metrics).
        fractions: ``(T,)`` the fraction of pixels perturbed at each point of ``curve``.
        extra: further per-image tensors (e.g. ROAD's ``morf`` and ``lerf`` curves).
    """

    values: Tensor
    higher_is_better: bool
    curve: Tensor | None = None
    fractions: Tensor | None = None
    extra: dict[str, Tensor] | None = None

    def __len__(self) -> int:
        return int(self.values.shape[0])


def model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    """The device of the model's first parameter or buffer (``fallback`` for a parameter-free model)."""
    for tensor in model.parameters():
        return tensor.device
    for buffer in model.buffers():
        return buffer.device
    return fallback


def check_maps(maps: Any, x: Tensor, *, name: str = "maps", unit: bool = False) -> Tensor:
    """Validate ``(B, H, W)`` maps for images ``x``; maps of another size are upsampled bilinearly."""
    if not isinstance(maps, Tensor):
        raise TypeError(f"{name} must be a tensor (B, H, W), not {type(maps).__name__}")
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise ValueError(
            f"{name} must be (B, H, W), got shape {tuple(maps.shape)}; reduce (B, C, H, W) maps first, "
            "e.g. camlens.metrics.saliency_2d(maps)"
        )
    if maps.shape[0] != x.shape[0]:
        raise ValueError(f"{name} has {maps.shape[0]} maps for a batch of {x.shape[0]} images")
    if not maps.is_floating_point():
        maps = maps.float()
    if not torch.isfinite(maps).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    maps = maps.detach().to(device=x.device, dtype=x.dtype)
    maps = resize(maps, (x.shape[-2], x.shape[-1]))
    if unit and (maps.min() < -1e-6 or maps.max() > 1 + 1e-6):
        raise ValueError(
            f"{name} must lie in [0, 1] for this metric (it multiplies the image); "
            "normalise them first, e.g. camlens.metrics.saliency_2d(maps)"
        )
    return maps.clamp(0, 1) if unit else maps


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")
    return str(value)


def check_positive_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


@dataclass(frozen=True)
class Scorer:
    """Scores images for fixed classes: softmax probability or logit, or a user's callable."""

    model: nn.Module
    classes: Tensor | None  # (B,) the fixed classes, None with a callable target
    target_fn: Callable[[Any], Tensor] | None
    score: str
    batch_size: int
    device: torch.device

    def __call__(self, images: Tensor, image_index: Tensor) -> Tensor:
        """Scores of ``images`` (N, C, H, W), where row n belongs to image ``image_index[n]``."""
        out: list[Tensor] = []
        with torch.no_grad():
            for start in range(0, images.shape[0], self.batch_size):
                chunk = images[start : start + self.batch_size].to(self.device)
                out.append(self._score(chunk, image_index[start : start + self.batch_size]))
        return torch.cat(out).float()

    def stream(self, n: int, build: Callable[[slice], tuple[Tensor, Tensor]]) -> Tensor:
        """Scores of ``n`` perturbed images built ``batch_size`` at a time by ``build(slice)``."""
        out: list[Tensor] = []
        with torch.no_grad():
            for start in range(0, n, self.batch_size):
                images, image_index = build(slice(start, min(start + self.batch_size, n)))
                out.append(self._score(images.to(self.device), image_index))
        return torch.cat(out).float()

    def _score(self, images: Tensor, image_index: Tensor) -> Tensor:
        return self.of_output(self.model(images), image_index)

    def of_output(self, output: Any, image_index: Tensor) -> Tensor:
        """The scores of a model output whose row n belongs to image ``image_index[n]``."""
        if self.target_fn is not None:
            scores = self.target_fn(output)
            return scores.reshape(-1).detach()
        logits = logits_of(output)
        if logits is None:
            raise ValueError("the model returned no logits: pass targets=a callable output -> (B,) scores")
        assert self.classes is not None
        picked = self.classes.to(logits.device)[image_index.to(logits.device)]
        values = logits.softmax(dim=1) if self.score == "probability" else logits
        return values.gather(1, picked[:, None])[:, 0].detach()


def make_scorer(
    model: nn.Module, x: Tensor, targets: Targets, score: str = "probability", batch_size: int = 32
) -> tuple[Scorer, Tensor, Tensor]:
    """The scorer for fixed classes, the images on the model's device, and their clean scores ``(B,)``.

    ``targets=None`` fixes each image's predicted class on the clean image; a callable target gives
    its own scores (``score`` is then ignored: the callable decides).
    """
    check_input(model, x)
    check_choice(score, "score", SCORES)
    check_positive_int(batch_size, "batch_size")
    device = model_device(model, x.device)
    x = x.detach().to(device)
    with torch.no_grad():
        output = model(x)
    picked = target_scores(output, targets, x.shape[0])
    target_fn = targets if callable(targets) and not isinstance(targets, Tensor) else None
    scorer = Scorer(model, picked.classes, target_fn, score, batch_size, device)
    index = torch.arange(x.shape[0], device=device)
    clean = scorer.of_output(output, index).float()  # from the forward above: no second pass
    return scorer, x, clean


def fixed_classes(model: nn.Module, x: Tensor, targets: Targets) -> Targets:
    """The classes to keep while the input or the model changes: the clean prediction when None."""
    if targets is not None:
        return targets
    check_input(model, x)
    device = model_device(model, x.device)
    with torch.no_grad():
        output = model(x.detach().to(device))
    picked = target_scores(output, None, x.shape[0])
    assert picked.classes is not None
    return picked.classes


def saliency_order(maps: Tensor) -> Tensor:
    """Pixel ranks ``(B, H*W)``: 0 for the most salient; ties broken by raster order (row-major, first first)."""
    flat = maps.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    return torch.argsort(order, dim=1)


def pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of each pair of rows of ``(B, ...)`` tensors (float64; 0 where one is constant)."""
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denominator = a.norm(dim=1) * b.norm(dim=1)
    correlation = (a * b).sum(dim=1) / denominator.clamp(min=1e-300)
    return torch.where(denominator > 0, correlation, torch.zeros_like(denominator))


def harmonic_mean(*values: Tensor) -> Tensor:
    """Element-wise harmonic mean; 0 where any term is 0 or below (the limit of the formula)."""
    stacked = torch.stack([v.float() for v in values])
    positive = (stacked > 0).all(dim=0)
    safe = torch.where(stacked > 0, stacked, torch.ones_like(stacked))
    return torch.where(positive, len(values) / (1.0 / safe).sum(dim=0), torch.zeros_like(safe[0]))


def saliency_2d(maps: Tensor) -> Tensor:
    """Any map as a ``(B, H, W)`` saliency in [0, 1]: ``|channel sum|`` of ``(B, C, H, W)``, then min-max per image.

    Guided backprop and Guided Grad-CAM give signed ``(B, C, H, W)`` gradients; perturbation metrics rank
    pixels and multiply images by ``[0, 1]`` maps, so they need one non-negative value per pixel.

    Example:
        >>> saliency_2d(torch.tensor([[[[-2.0, 1.0]], [[0.0, 0.0]]]]))
        tensor([[[1., 0.]]])
    """
    if not isinstance(maps, Tensor):
        raise TypeError(f"maps must be a tensor, not {type(maps).__name__}")
    if maps.dim() == 4:
        maps = maps.sum(dim=1).abs()
    elif maps.dim() != 3:
        raise ValueError(f"maps must be (B, H, W) or (B, C, H, W), got shape {tuple(maps.shape)}")
    else:
        maps = maps.abs() if (maps < 0).any() else maps
    return normalize_per_image(maps.detach().float())
