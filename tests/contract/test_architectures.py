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
from camlens.names import CAM_METHODS
from helpers import assert_untouched, snapshot
from sweep_archs import SWEEP, build_sweep, sweep_id

# every method computed from the one capture (and FullGrad's one backward); the perturbation and head
# methods, which re-run the model or the layer's tail, are swept on the families below (and on tokens)
CAPTURE_METHODS = [
    *(m for m in CAM_METHODS if m not in ("fem", "kpcacam")),
    "fullgrad",
    "guided_backprop",
    "guided_gradcam",
]
TAIL_METHODS = [
    "fem",
    "cam",
    "finercam",
    "shapleycam",
    "ablationcam",
    "scorecam",
    "sscam",
    "iscam",
    "smoothgradcam++",
    "sess",
]
TAIL_SWEEP = [("resnet", "torchvision", "resnet18"), ("mobilenetv3", "timm", "mobilenetv3_small_050"),
              ("efficientnet", "timm", "efficientnet_b0"), ("regnet", "timm", "regnetx_002")]  # fmt: skip
VIT_SWEEP = [("vit", "timm", "vit_tiny_patch16_224"), ("deit", "timm", "deit_tiny_distilled_patch16_224")]


# the fast lane keeps one channels-first CNN, one token ViT and one channels-last Swin; the others are slow
# (each builds and explains a full-depth network: 10-100 s of CPU time on 2 cores)
FAST_SWEEP = {"timm-mobilenetv3_small_050", "timm-vit_tiny_patch16_224", "timm-swin_tiny_patch4_window7_224"}
SWEEP_PARAMS = [
    pytest.param(e, id=sweep_id(e), marks=() if sweep_id(e) in FAST_SWEEP else pytest.mark.slow) for e in SWEEP
]


@pytest.mark.parametrize("entry", SWEEP_PARAMS)
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
        # random weights: a map may be negative at every position for some image (said, and allowed here)
        warnings.filterwarnings("ignore", message=".*is zero everywhere for image", category=UserWarning)
        result = camlens.explain(model, x, CAPTURE_METHODS)
    assert_untouched(model, before)
    assert [note for note in result.warnings if "is zero everywhere for image" not in note] == []
    cap = result.capture
    layout = result.layout
    assert layout is not None and not layout.assumed
    assert layout.grid[0] * layout.grid[1] >= 2
    # informative: the gradient reaches the layer's positions, and every Grad-CAM map varies over them
    assert cap.gradients.flatten(2).abs().sum(dim=(1, 2)).gt(0).all()
    for method in CAPTURE_METHODS:
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


@pytest.mark.slow
@pytest.mark.parametrize("family,source,name", TAIL_SWEEP, ids=[e[0] for e in TAIL_SWEEP])
def test_tail_and_perturbation_methods_on_channels_first_families(family, source, name):
    model = build_sweep(source, name, {})
    before = snapshot(model)
    torch.manual_seed(2)
    x = torch.rand(1, 3, 64, 64)
    methods = TAIL_METHODS
    if family == "mobilenetv3":  # a conv head after the pooling: CAM does not apply, and says so
        with pytest.raises(ValueError, match="cam needs a classifier that is one nn.Linear"):
            camlens.explain(model, x, ["cam"])
        methods = [m for m in TAIL_METHODS if m != "cam"]
    result = camlens.explain(model, x, methods, batch_size=64, num_samples=2)
    assert_untouched(model, before)
    for method in methods:
        assert result[method].shape == (1, 64, 64) and torch.isfinite(result[method]).all(), method


@pytest.mark.slow
@pytest.mark.parametrize("family,source,name", VIT_SWEEP, ids=[e[0] for e in VIT_SWEEP])
def test_legrad_and_the_perturbation_methods_on_tokens(family, source, name):
    """On token layers (class and distillation tokens) LeGrad, the perturbation methods and the head methods
    (finercam, shapleycam: derivatives of the layer's own output, laid on the grid) run."""
    model = build_sweep(source, name, {"img_size": 64})
    before = snapshot(model)
    x = torch.rand(1, 3, 64, 64)
    perturbation = ["ablationcam", "scorecam", "sscam", "iscam", "smoothgradcam++", "sess"]
    head = ["finercam", "shapleycam"]
    result = camlens.explain(model, x, ["legrad", "gradcam", *perturbation, *head], batch_size=64, num_samples=2)
    assert_untouched(model, before)
    assert result.layout.kind == "tokens"
    for method in ["legrad", *perturbation, *head]:
        assert result[method].shape == (1, 64, 64) and torch.isfinite(result[method]).all(), method
    for method in ("ablationcam", "finercam", "shapleycam"):
        raw = result.raw[method].flatten(1)
        assert (raw.amax(dim=1) > raw.amin(dim=1)).all(), method
