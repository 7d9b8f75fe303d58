"""Whether mixed precision keeps the maps: :func:`precision_deviation` measures how far each method's maps
move from float32 on a batch, :func:`pick_precision` keeps the low precision only within a tolerance.

The precisions themselves (autocast on CUDA and the CPU) are in :mod:`camlens.device`; the measurements
there are quoted in its module doc.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from camlens.explanation import explain
from camlens.layers import LayerSpec
from camlens.names import SEED_METHODS
from camlens.targets import Targets


def precision_deviation(
    model: nn.Module,
    x: Tensor,
    precision: str,
    methods: Sequence[str] | None = None,
    target_layer: LayerSpec = None,
    targets: Targets = None,
) -> dict[str, float]:
    """How far each method's maps move in ``precision`` from float32, for the same explained classes.

    The deviation of a method is ``max |M_mixed - M_float32| / max |M_float32|`` over the batch: the
    largest change as a fraction of the map's range (CAM maps are in [0, 1], so it is the absolute
    change there).
    """
    methods = SEED_METHODS if methods is None else methods
    reference = explain(model, x, methods, target_layer, targets)
    fixed = targets if targets is not None or reference.classes is None else reference.classes
    mixed = explain(model, x, methods, reference.target_layer or target_layer, fixed, precision=precision)
    deviation = {}
    for name, ref in reference.items():
        scale = ref.abs().max().clamp_min(torch.finfo(ref.dtype).tiny)
        deviation[name] = float((mixed[name].float() - ref).abs().max() / scale)
    return deviation


def pick_precision(
    model: nn.Module,
    x: Tensor,
    precision: str,
    methods: Sequence[str] | None = None,
    *,
    tolerance: float = 1e-3,
    target_layer: LayerSpec = None,
    targets: Targets = None,
) -> str:
    """``precision`` if every method's maps on ``x`` stay within ``tolerance`` of float32, else "float32".

    Meant for the first batch of a run: the check costs one float32 and one mixed-precision explanation.
    """
    if precision == "float32":
        return precision
    deviation = precision_deviation(model, x, precision, methods, target_layer, targets)
    return precision if max(deviation.values()) <= tolerance else "float32"
