"""The overlay's blend against its formula: ``clip((1 - alpha) * image + alpha * heat + 0.5, 0, 255)``, floored."""

from __future__ import annotations

import numpy as np
import pytest

from camlens.viz.overlay import overlay


def _formula(image: np.ndarray, heat: np.ndarray, alpha: float) -> np.ndarray:
    mixed = image.astype(np.float64) * (1.0 - alpha) + alpha * heat.astype(np.float64) + 0.5
    return np.floor(np.clip(mixed, 0, 255)).astype(np.uint8)


@pytest.mark.parametrize("alpha", [0.5, 0.3, 0.75])
def test_the_blend_is_the_formula_on_every_pair_of_values(alpha):
    values = np.arange(256, dtype=np.uint8)
    image, heat = (np.repeat(v[..., None], 3, axis=2) for v in np.meshgrid(values, values))
    got, want = overlay(image, heat, alpha).astype(int), _formula(image, heat, alpha).astype(int)
    if alpha == 0.5:  # the integer path: exact
        np.testing.assert_array_equal(got, want)
    else:  # float32 arithmetic: a value on a rounding boundary may land one level off
        assert np.abs(got - want).max() <= 1
