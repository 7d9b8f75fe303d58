"""Options around any method: test-time augmentation smoothing and multi-layer fusion.

Both call ``explain`` again (passed in as ``again``) and combine image-resolution maps, so they work
for every method. The explained classes are fixed to those of the plain image and layer first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from camlens.catalog import ROW
from camlens.names import GUIDED_METHODS
from camlens.postprocess import normalize_per_image, resize
from camlens.targets import Targets

Again = Callable[..., Any]  # functools.partial(explain, model, methods=..., ...)
SCALES = (1.0, 1.1, 0.9)
GUIDED = GUIDED_METHODS  # image-shaped maps: averaged as they are, not renormalised


def _fixed_targets(result: Any, targets: Targets) -> Targets:
    return targets if result.classes is None else result.classes


def augmented(again: Again, x: Tensor, target_layer: Any, targets: Targets) -> Any:
    """Every map averaged over horizontal flips x scales (1, 1.1, 0.9), each mapped back to ``x``'s grid.

    The test-time augmentation of pytorch-grad-cam's ``aug_smooth`` uses flips and intensity factors;
    here scales (resizes of the input) stand in for the latter, as the issue asks. CAM maps are
    renormalised to [0, 1] after averaging; guided maps are averaged as they are. A clip or volume
    ``(B, C, T, H, W)`` is flipped and scaled in its height and width only.
    """
    size = tuple(int(s) for s in x.shape[2:])
    base = again(x, target_layer=target_layer, targets=targets)
    fixed = _fixed_targets(base, targets)
    sums = {name: value.clone() for name, value in base.maps.items()}
    count = 1
    for flip in (False, True):
        for scale in SCALES:
            if not flip and scale == 1.0:
                continue
            view = torch.flip(x, dims=[-1]) if flip else x
            if scale != 1.0:
                view = resize(view, (*size[:-2], round(size[-2] * scale), round(size[-1] * scale)))
            result = again(view, target_layer=target_layer, targets=fixed)
            for name, value in result.maps.items():
                back = resize(value, size)
                sums[name] += torch.flip(back, dims=[-1]) if flip else back
            count += 1
    maps = {
        name: (value / count if name in GUIDED else normalize_per_image(value / count)) for name, value in sums.items()
    }
    return dataclasses.replace(base, maps=maps)


def fuse_layers(again: Again, x: Tensor, layers: Sequence[Any], targets: Targets) -> Any:
    """Each method at every layer of ``layers``, image maps fused by its catalog row's ``fuse``: LayerCAM max,
    Refine-CAM product, else mean.

    LayerCAM's fusion is the paper's (Jiang et al. 2021, section 3.3: per-layer maps normalised,
    upsampled, combined by the element-wise maximum); pytorch-grad-cam averages them. Refine-CAM
    multiplies them (Domeniconi et al. 2026). Other methods are averaged as pytorch-grad-cam does.
    ``raw`` keeps the first layer's raw maps.
    """
    if not layers:
        raise ValueError("target_layer is an empty list: pass one layer or several")
    results = []
    fixed = targets
    for layer in layers:
        result = again(x, target_layer=layer, targets=fixed)
        fixed = _fixed_targets(result, targets)
        results.append(result)
    first = results[0]
    maps: dict[str, Tensor] = {}
    for name in first.maps:
        stack = torch.stack([r.maps[name] for r in results])
        fuse = ROW[name].fuse if name in ROW else "mean"  # the catalog's rule; run-time methods: the mean
        if fuse == "first":  # layer-free (guided backprop)
            maps[name] = first.maps[name]
        elif fuse == "max":
            maps[name] = stack.amax(dim=0)
        elif fuse == "product":
            maps[name] = normalize_per_image(stack.prod(dim=0))
        elif name in GUIDED:
            maps[name] = stack.mean(dim=0)  # guided backprop times the mean of the Grad-CAM maps
        else:
            maps[name] = normalize_per_image(stack.mean(dim=0))
    ordered = {name: maps[name] for name in first.maps}
    name = "+".join(str(r.target_layer) for r in results)
    notes = tuple(dict.fromkeys(note for r in results for note in r.warnings))  # each names its layer
    per_image = tuple(
        tuple(dict.fromkeys(note for r in results for note in r.image_warnings[i]))
        for i in range(len(first.image_warnings))
    )
    return dataclasses.replace(first, maps=ordered, target_layer=name, warnings=notes, image_warnings=per_image)
