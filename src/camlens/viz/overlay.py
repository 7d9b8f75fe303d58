"""A heatmap blended over its image. Numpy only."""

from __future__ import annotations

import numpy as np


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a colour heatmap over the image (both uint8 RGB of the same size)."""
    if alpha == 0.5 and image.dtype == np.uint8 and heat.dtype == np.uint8:
        # the float formula below in integers, exactly: floor((a + b) / 2 + 0.5) = (a + b + 1) >> 1
        total = image.astype(np.uint16)
        total += heat
        total += 1
        total >>= 1
        return total.astype(np.uint8)
    mixed = image.astype(np.float32)
    mixed *= np.float32(1.0 - alpha)
    mixed += np.float32(alpha) * heat  # (in place: no temporaries of the picture's size but one)
    mixed += np.float32(0.5)
    np.clip(mixed, 0, 255, out=mixed)
    return mixed.astype(np.uint8)
