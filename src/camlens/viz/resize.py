"""Maps back to the original image's size (torch; imported only when called)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, H, W)`` or ``(B, C, H, W)`` maps to ``size`` (the original image's), in float32
    (:func:`camlens.postprocess.resize`)."""
    from camlens.postprocess import resize

    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return resize(maps.float(), size)
