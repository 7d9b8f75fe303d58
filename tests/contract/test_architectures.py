"""The sweep: every method on 30+ timm and torchvision classifiers from 12+ families, automatic layer.

Random weights, small inputs. Each must run without error and give finite, non-degenerate maps at an
informative automatic layer (the score's gradient is not zero at its positions), with a decided layout,
a guided rule applied at its activations, and the model left exactly as found.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import camlens
from helpers import assert_untouched, snapshot
from sweep_archs import SWEEP, build_sweep, sweep_id


@pytest.mark.parametrize("entry", SWEEP, ids=[sweep_id(e) for e in SWEEP])
def test_every_method_at_the_automatic_layer(entry):
    family, source, name, kwargs, size = entry
    model = build_sweep(source, name, kwargs)
    before = snapshot(model)
    height, width = size if isinstance(size, tuple) else (size, size)
    torch.manual_seed(1)
    x = torch.rand(2, 3, height, width)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a constant map or an unrouted guided rule fails here
        warnings.filterwarnings("ignore", module="timm|torchvision|torch")
        result = camlens.explain(model, x, camlens.available_methods())
    assert_untouched(model, before)
    assert result.warnings == ()
    cap = result.capture
    layout = result.layout
    assert layout is not None and not layout.assumed
    assert layout.grid[0] * layout.grid[1] >= 2
    # informative: the gradient reaches the layer's positions, and every Grad-CAM map varies over them
    assert cap.gradients.flatten(2).abs().sum(dim=(1, 2)).gt(0).all()
    for method in camlens.available_methods():
        assert torch.isfinite(result[method]).all(), method
    raw = result.raw["gradcam"].flatten(1)
    assert (raw.amax(dim=1) > raw.amin(dim=1)).all()
    assert result["gradcam"].shape == (2, height, width)
    assert result["guided_backprop"].shape == (2, 3, height, width)
    assert result.guided_rule and sum(result.guided_rule.values()) > 0
    # the cached choice gives the same maps through the fast path
    again = camlens.explain(model, x, ["gradcam"])
    assert again.target_layer == result.target_layer
    torch.testing.assert_close(again.raw["gradcam"], result.raw["gradcam"], rtol=1e-4, atol=1e-5)
    assert_untouched(model, before)
