"""Maps and gradients as colours: the 'jet' colour map and the papers' guided-backprop display. Numpy only."""

from __future__ import annotations

import numpy as np


def jet(values: np.ndarray) -> np.ndarray:
    """The classic 'jet' colour map (blue -> cyan -> yellow -> red) of values in [0, 1], as uint8 RGB."""
    v = np.clip(values.astype(np.float32), 0.0, 1.0)
    v *= np.float32(4.0)
    out = np.empty((*v.shape, 3), dtype=np.uint8)
    channel = np.empty_like(v)
    for c, centre in enumerate((3.0, 2.0, 1.0)):  # red, green, blue: clip(1.5 - |4 v - centre|, 0, 1), in place
        np.subtract(v, np.float32(centre), out=channel)
        np.abs(channel, out=channel)
        np.subtract(np.float32(1.5), channel, out=channel)
        np.clip(channel, 0.0, 1.0, out=channel)
        channel *= np.float32(255.0)
        channel += np.float32(0.5)
        out[..., c] = channel  # truncated, as astype(np.uint8)
    return out


def gradient_image(gradient: np.ndarray) -> np.ndarray:
    """Guided backprop shown as in the papers: standardise, scale by 0.1, centre on grey, clip.

    ``gradient`` is H x W x C (float). A zero gradient is plain grey. Other than three channels, the picture
    shows one channel as grey (one or two channels: the first) or the first three as RGB (more than three).
    """
    if gradient.ndim == 3 and gradient.shape[2] != 3:
        gradient = gradient[..., [0, 0, 0] if gradient.shape[2] < 3 else [0, 1, 2]]
    g = np.array(gradient, dtype=np.float32, order="C")  # float32, in place (numpy's sums are pairwise)
    g -= g.mean()
    std = float(np.sqrt(np.mean(np.square(g))))
    scale = 0.1 / std if std > 0 else 0.1
    g *= np.float32(scale * 255.0)
    g += np.float32(0.5 * 255.0 + 0.5)
    np.clip(g, 0.5, 255.5, out=g)  # = clip(g * 0.1 + 0.5, 0, 1) * 255 + 0.5
    return g.astype(np.uint8)
