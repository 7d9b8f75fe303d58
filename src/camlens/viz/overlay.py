"""A heatmap blended over its image. Numpy only."""

from __future__ import annotations

import numpy as np


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a colour heatmap over the image (both uint8 RGB of the same size)."""
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
