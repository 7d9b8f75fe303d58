"""What the perturbation methods cost before they start: :class:`Cost` and :func:`method_cost`.

:func:`camlens.cost` (in :mod:`camlens.explanation`, which finds the target layer's channels) states it for
a model and a batch; ``explain`` passes each perturbation method's cost to the progress reporter
(:mod:`camlens.progress`) as a note before the method runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: The methods :func:`method_cost` states a cost for (the others cost one forward and backward pass together).
COUNTED_METHODS = ("scorecam", "ablationcam", "sscam", "iscam", "smoothgradcam++", "sess")


@dataclass(frozen=True)
class Cost:
    """What one method costs on one batch: ``forward_passes`` single-image passes of the model (of the
    part after the target layer for Ablation-CAM), ``backward`` when each also needs a backward pass;
    ``note`` says it in one line."""

    method: str
    forward_passes: int
    backward: bool
    note: str


def _images(count: int) -> str:
    return f"{count} image{'s' * (count != 1)}"


def method_cost(
    name: str, channels: int, images: int, layer: str | None, size: Sequence[int], options: Any
) -> Cost | None:
    """The cost of perturbation method ``name`` with ``channels`` channels at ``layer``, ``images`` images of
    input ``size`` (H, W) and :class:`~camlens.methods.context.MethodOptions` ``options``; None for the
    methods that cost one forward and backward pass (the CAM methods, guided backprop, ...).

    Constant channels are skipped by Score-CAM and all-zero channels by Ablation-CAM, so those two may run
    fewer passes than stated.
    """
    at = f"{channels} channels of {layer!r}"
    chunk = f"{options.batch_size} at a time"
    if name in ("scorecam", "ablationcam"):
        total = channels * images
        what = "forward passes" if name == "scorecam" else "passes of the network after the layer"
        return Cost(name, total, False, f"{name}: {total} {what} ({at} x {_images(images)}), {chunk}")
    if name in ("sscam", "iscam"):
        samples = options.num_samples or (35 if name == "sscam" else 10)
        total = channels * samples * images
        text = f"{name}: {total} forward passes ({at} x {samples} samples x {_images(images)}), {chunk}"
        return Cost(name, total, False, text)
    if name == "smoothgradcam++":
        samples = options.num_samples or 4
        total = samples * images
        return Cost(name, total, True, f"{name}: {total} forward and backward passes ({samples} noisy copies x "
                    f"{_images(images)})")  # fmt: skip
    if name == "sess":
        from camlens.methods.sess import patch_count  # the method's own geometry, imported on use

        scales = options.num_samples or 12
        patches = patch_count(int(size[0]), int(size[1]), scales)
        total = patches * images
        return Cost(name, total, True, f"{name}: {total} forward and backward passes ({patches} patches over "
                    f"{scales} scales x {_images(images)}), {chunk}")  # fmt: skip
    return None
