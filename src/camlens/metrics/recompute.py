"""Metrics that explain again: Coherency, Complexity, ADCC, ARCC (Poppi et al. 2021) and Max-Sensitivity.

They need the explanation method itself, given as ``method``: a camlens method name (``"gradcam"``,
explained through :func:`camlens.explain` with ``target_layer``) or a callable ``(x, targets) -> maps``.
The classes stay fixed (the clean prediction when ``targets`` is None).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from camlens.layers import LayerSpec
from camlens.layouts import LayoutSpec
from camlens.metrics._common import (
    MetricResult,
    check_maps,
    check_positive_int,
    fixed_classes,
    harmonic_mean,
    model_device,
    pearson_rows,
    saliency_2d,
)
from camlens.metrics.perturbation import average_drop
from camlens.metrics.road import road
from camlens.targets import Targets

MethodFn = Callable[[Tensor, Targets], Tensor]
Method = str | MethodFn
ARCC_PERCENTAGES = (0.2, 0.4, 0.6, 0.8)


def method_fn(model: nn.Module, method: Method, target_layer: LayerSpec = None, layout: LayoutSpec = None) -> MethodFn:
    """A method as ``(x, targets) -> (B, H, W)`` maps in [0, 1] (``saliency_2d`` for guided ``(B, C, H, W)``).

    Example:
        >>> import torchvision
        >>> explain_fn = method_fn(torchvision.models.resnet18(num_classes=4).eval(), "gradcam")
        >>> explain_fn(torch.rand(1, 3, 32, 32), 2).shape
        torch.Size([1, 32, 32])
    """
    if callable(method):
        user = method

        def call_user(x: Tensor, targets: Targets) -> Tensor:
            return user(x, targets)

        return call_user
    if not isinstance(method, str):
        raise TypeError(f"method must be a camlens method name or a callable (x, targets) -> maps, not {method!r}")
    from camlens.explanation import check_methods, explain

    check_methods([method])

    def call(x: Tensor, targets: Targets) -> Tensor:
        maps = explain(model, x, [method], target_layer, targets, layout=layout)[method]
        return saliency_2d(maps) if maps.dim() == 4 else maps

    return call


def complexity(maps: Tensor) -> MetricResult:
    """Complexity (Poppi et al., "Revisiting the Evaluation of Class Activation Mapping", CVPRW 2021): lower is better.

    The L1 norm of the ``[0, 1]`` map over its number of pixels: ``mean |map|``.

    Example:
        >>> complexity(torch.tensor([[[0.0, 1.0], [0.5, 0.5]]])).values
        tensor([0.5000])
    """
    if not isinstance(maps, Tensor) or maps.dim() != 3:
        raise ValueError("maps must be a tensor (B, H, W)")
    return MetricResult(values=maps.detach().abs().flatten(1).float().mean(dim=1).cpu(), higher_is_better=False)


def coherency(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    targets: Targets = None,
    *,
    method: Method = "gradcam",
    target_layer: LayerSpec = None,
) -> MetricResult:
    """Coherency (Poppi et al. 2021, Eq. 3): higher is better.

    ``(1 + Pearson(map(x * map), map)) / 2``: the map recomputed on the image multiplied by itself
    should be the same map; rescaled to [0, 1] as in the paper and pytorch-grad-cam's ``Coherency``.
    A constant map (no variance) scores 0.5.

    Example:
        >>> import camlens, torchvision
        >>> model = torchvision.models.resnet18(num_classes=4).eval()
        >>> x = torch.rand(1, 3, 32, 32)
        >>> maps = camlens.explain(model, x, ["gradcam"])["gradcam"]
        >>> 0 <= coherency(model, x, maps, method="gradcam").values.item() <= 1
        True
    """
    explain_fn = method_fn(model, method, target_layer)
    classes = fixed_classes(model, x, targets)
    device = model_device(model, x.device)
    x = x.detach().to(device)
    maps = check_maps(maps, x, unit=True)
    again = check_maps(explain_fn(x * maps[:, None], classes), x, name="recomputed maps")
    return MetricResult(values=((1 + pearson_rows(again, maps)) / 2).float().cpu(), higher_is_better=True)


def adcc(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    targets: Targets = None,
    *,
    method: Method = "gradcam",
    target_layer: LayerSpec = None,
    batch_size: int = 32,
) -> MetricResult:
    """ADCC (Poppi et al. 2021, Eq. 5): harmonic mean of Coherency, 1 - Complexity, 1 - Average Drop; higher is better.

    ``.extra`` holds the three parts (``average_drop`` as a fraction in [0, 1]).
    """
    drop = average_drop(model, x, maps, targets, batch_size=batch_size).values / 100
    return _with_coherency_and_complexity(model, x, maps, targets, method, target_layer, "average_drop", drop, 1 - drop)


def arcc(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    targets: Targets = None,
    *,
    method: Method = "gradcam",
    target_layer: LayerSpec = None,
    percentages: Sequence[float] = ARCC_PERCENTAGES,
    batch_size: int = 32,
    seed: int = 0,
) -> MetricResult:
    """ARCC (Domeniconi et al. 2026): ADCC with Average Drop replaced by ROAD; higher is better.

    Harmonic mean of Coherency, ``1 - Complexity`` and ``clip(2 * ROAD_combined, 0, 1)`` with ROAD at 20,
    40, 60, 80 % (``ROAD_combined`` lies in [-0.5, 0.5]), as pytorch-grad-cam's ``metrics/arcc.py``
    (which adds 1e-8 to every term; here a term of 0 gives 0, the limit).
    """
    road_values = road(model, x, maps, targets, percentages=percentages, batch_size=batch_size, seed=seed).values
    road_term = (2 * road_values).clamp(0, 1)
    return _with_coherency_and_complexity(model, x, maps, targets, method, target_layer, "road", road_values, road_term)


def _with_coherency_and_complexity(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    targets: Targets,
    method: Method,
    target_layer: LayerSpec,
    name: str,
    part: Tensor,
    term: Tensor,
) -> MetricResult:
    """ADCC's and ARCC's form: the harmonic mean of Coherency, ``1 - Complexity`` and ``term`` (from the part
    ``name``); ``.extra`` holds the three parts."""
    coh = coherency(model, x, maps, targets, method=method, target_layer=target_layer).values
    com = complexity(check_maps(maps, x, unit=True)).values
    values = harmonic_mean(coh, 1 - com, term)
    return MetricResult(values=values, higher_is_better=True, extra={"coherency": coh, "complexity": com, name: part})


def max_sensitivity(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    targets: Targets = None,
    *,
    method: Method = "gradcam",
    target_layer: LayerSpec = None,
    radius: float = 0.2,
    samples: int = 10,
    relative: bool = True,
    seed: int = 0,
    batch_size: int = 32,
) -> MetricResult:
    """Max-Sensitivity (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019): lower better.

    ``max_{||d||_inf <= r} ||Phi(x + d) - Phi(x)||``, estimated by Monte Carlo over ``samples`` draws of
    ``d`` uniform in the L-infinity ball of radius ``radius`` (on the tensor you pass); with ``relative``
    the norm (Frobenius) is divided by ``||Phi(x)||`` as in Quantus' ``MaxSensitivity`` defaults. The
    classes stay fixed; ``maps`` is ``Phi(x)``.
    """
    check_positive_int(samples, "samples")
    check_positive_int(batch_size, "batch_size")
    if not radius > 0:
        raise ValueError(f"radius must be positive, not {radius!r}")
    explain_fn = method_fn(model, method, target_layer)
    classes = fixed_classes(model, x, targets)
    device = model_device(model, x.device)
    x = x.detach().to(device)
    maps = check_maps(maps, x)
    batch = x.shape[0]
    generator = torch.Generator().manual_seed(seed)
    noise = (torch.rand((samples, *x.shape), generator=generator, dtype=torch.float64) * 2 - 1) * radius
    noisy = (x[None] + noise.to(device=device, dtype=x.dtype)).reshape(samples * batch, *x.shape[1:])
    repeated = classes.repeat(samples) if isinstance(classes, Tensor) else classes
    pieces = []
    for start in range(0, samples * batch, batch_size):
        stop = min(start + batch_size, samples * batch)
        chunk_targets = repeated[start:stop] if isinstance(repeated, Tensor) else repeated
        pieces.append(check_maps(explain_fn(noisy[start:stop], chunk_targets), noisy[start:stop]))
    perturbed = torch.cat(pieces).view(samples, batch, *maps.shape[1:])
    distance = (perturbed - maps[None]).flatten(2).double().norm(dim=2)  # (S, B)
    if relative:
        size = maps.flatten(1).double().norm(dim=1)
        distance = torch.where(size > 0, distance / size.clamp(min=1e-300), distance)
    return MetricResult(values=distance.amax(dim=0).float().cpu(), higher_is_better=False)
