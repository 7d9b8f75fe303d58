"""Maps back to the original image's size (torch; imported only when called)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, H, W)`` or ``(B, C, H, W)`` maps to ``size`` (the original image's)."""
    import torch.nn.functional as F

    squeeze = maps.dim() == 3
    batch = maps[:, None] if squeeze else maps
    if tuple(batch.shape[-2:]) != tuple(size):
        batch = F.interpolate(batch.float(), size=size, mode="bilinear", align_corners=False)
    return batch[:, 0] if squeeze else batch
