"""From layer maps to image maps: ReLU, bilinear (trilinear for a clip or volume) upsampling, per-image min-max.
Torch only, never in place."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rounding(magnitude: Tensor) -> Tensor:
    """The spread that is rounding, not signal, for values of ``magnitude``: 64 ulps of it. A map (or a layer's
    activations) whose range over the positions is within this is flat."""
    return 64 * torch.finfo(magnitude.dtype).eps * magnitude


def normalize_per_image(maps: Tensor) -> Tensor:
    """Min-max normalise each ``(H, W)`` map of a ``(B, H, W)`` batch to [0, 1] (each ``(T, H, W)`` map of a
    ``(B, T, H, W)`` batch of clips or volumes: over all its frames or slices together).

    A constant map has no range: it becomes 0 where it is 0 (an all-zero map stays zero, never NaN)
    and 1 where it is a positive constant (uniform evidence everywhere). "Constant" allows for rounding:
    a range within 64 ulps of the map's magnitude (a 1x1 layer map after bilinear upsampling) is
    flat, not noise to stretch over [0, 1].
    """
    flat = maps.flatten(1)
    shape = (-1,) + (1,) * (maps.dim() - 1)
    low = flat.amin(dim=1).view(shape)
    high = flat.amax(dim=1).view(shape)
    span = high - low
    varies = span > rounding(high.abs())
    scaled = (maps - low) / torch.where(varies, span, torch.ones_like(span))
    return torch.where(varies, scaled, (high > 0).to(maps.dtype).expand_as(maps))


def resize(maps: Tensor, size: tuple[int, ...]) -> Tensor:
    """Resize maps to ``size`` (``align_corners=False``): bilinear for ``size = (H, W)`` and ``(B, H, W)`` or
    ``(B, C, H, W)`` maps, trilinear for ``size = (T, H, W)`` and ``(B, T, H, W)`` or ``(B, C, T, H, W)`` maps
    (clips, volumes); maps of that size already are returned as they are.

    Example:
        >>> resize(torch.tensor([[[0.0, 1.0]]]), (1, 4))
        tensor([[[0.0000, 0.2500, 0.7500, 1.0000]]])
        >>> resize(torch.zeros(2, 1, 2, 2), (4, 8, 8)).shape
        torch.Size([2, 4, 8, 8])
    """
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[-len(size) :]) == size:
        return maps
    mode = {2: "bilinear", 3: "trilinear"}.get(len(size))
    if mode is None:
        raise ValueError(f"size must be (H, W) or (T, H, W), got {size}")
    if maps.dim() == len(size) + 1:  # no channel axis
        return F.interpolate(maps[:, None], size=size, mode=mode, align_corners=False)[:, 0]
    return F.interpolate(maps, size=size, mode=mode, align_corners=False)


def cam_to_image(raw: Tensor, size: tuple[int, ...]) -> Tensor:
    """The displayed CAM: ``normalise(resize(ReLU(raw)))``, ``(B, H, W)`` (``(B, T, H, W)``) in [0, 1]."""
    return normalize_per_image(resize(torch.relu(raw), size))
