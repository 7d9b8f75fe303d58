"""Maps and gradients as colours: the 'jet' colour map and the papers' guided-backprop display. Numpy only."""

from __future__ import annotations

import numpy as np


def jet(values: np.ndarray) -> np.ndarray:
    """The classic 'jet' colour map (blue -> cyan -> yellow -> red) of values in [0, 1], as uint8 RGB."""
    v = np.clip(values.astype(np.float32), 0.0, 1.0)
    red = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    green = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    blue = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return (np.stack([red, green, blue], axis=-1) * 255.0 + 0.5).astype(np.uint8)


def gradient_image(gradient: np.ndarray) -> np.ndarray:
    """Guided backprop shown as in the papers: standardise, scale by 0.1, centre on grey, clip.

    ``gradient`` is H x W x 3 (float). A zero gradient is plain grey.
    """
    g = gradient.astype(np.float64)
    g = g - g.mean()
    std = g.std()
    if std > 0:
        g = g / std
    g = np.clip(g * 0.1 + 0.5, 0.0, 1.0)
    return (g * 255.0 + 0.5).astype(np.uint8)
