"""Oracles for deletion, insertion, Average Drop, Increase in Confidence and Average Gain.

The toy model's class-0 logit is ``s * sum_{p in R} x_p`` over a known region ``R`` (class 1: 0), so
every curve and drop has a closed form.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import camlens.metrics as cm
from helpers import assert_untouched, snapshot

H = W = 8
N = H * W


class RegionSum(nn.Module):
    """Logits ``[s * sum_R x, 0]`` for a boolean region ``R`` (H, W)."""

    def __init__(self, region: torch.Tensor, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("region", region.float())
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = self.scale * (x.sum(dim=1) * self.region).flatten(1).sum(dim=1)
        return torch.stack([evidence, torch.zeros_like(evidence)], dim=1)


def region(rows: slice = slice(2, 4), cols: slice = slice(0, 8)) -> torch.Tensor:
    r = torch.zeros(H, W, dtype=torch.bool)
    r[rows, cols] = True
    return r


def trapezoid(ys: list[float], xs: list[float]) -> float:
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))


def test_deletion_perfect_and_inverted_maps_give_the_closed_form_curves():
    r = region()  # 16 pixels of 64
    model = RegionSum(r)
    x = torch.ones(1, 1, H, W)
    before = snapshot(model)
    perfect = cm.deletion(model, x, r.float()[None], targets=0, score="logit", pixels_per_step=8, baseline="zeros")
    inverted = cm.deletion(model, x, (~r).float()[None], targets=0, score="logit", pixels_per_step=8)
    assert_untouched(model, before)
    counts = list(range(0, N + 1, 8))
    # perfect: each removed pixel of R costs 1 until R is gone; inverted: R goes last
    expected_perfect = [max(16 - k, 0) for k in counts]
    expected_inverted = [min(16, N - k) for k in counts]
    assert perfect.curve[0].tolist() == pytest.approx(expected_perfect)
    assert inverted.curve[0].tolist() == pytest.approx(expected_inverted)
    fractions = [k / N for k in counts]
    assert perfect.fractions.tolist() == pytest.approx(fractions)
    # AUC: triangle 16 * (16/64) / 2 = 2; inverted: 16 * 48/64 + 2 = 14
    assert perfect.values.item() == pytest.approx(2.0)
    assert inverted.values.item() == pytest.approx(14.0)
    assert perfect.values.item() == pytest.approx(trapezoid(expected_perfect, fractions))
    assert not perfect.higher_is_better


def test_insertion_perfect_map_probability_curve():
    r = region()
    model = RegionSum(r, scale=0.25)
    x = torch.ones(2, 1, H, W)
    maps = torch.stack([r.float(), (~r).float()])
    result = cm.insertion(model, x, maps, targets=0, baseline="zeros", steps=8)  # ceil(64 / 8) = 8 per step
    counts = list(range(0, N + 1, 8))
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    expected = [[sig(0.25 * min(k, 16)) for k in counts], [sig(0.25 * max(0, k - 48)) for k in counts]]
    assert result.curve.tolist()[0] == pytest.approx(expected[0], abs=1e-6)
    assert result.curve.tolist()[1] == pytest.approx(expected[1], abs=1e-6)
    assert result.values[0] > result.values[1]
    assert result.higher_is_better


def test_ties_are_broken_in_raster_order():
    # a constant map removes row by row: region in the top rows is gone first
    top, bottom = region(slice(0, 2)), region(slice(6, 8))
    x = torch.ones(1, 1, H, W)
    flat = torch.ones(1, H, W)
    d_top = cm.deletion(RegionSum(top), x, flat, targets=0, score="logit", pixels_per_step=8)
    d_bottom = cm.deletion(RegionSum(bottom), x, flat, targets=0, score="logit", pixels_per_step=8)
    assert d_top.curve[0].tolist() == pytest.approx([16, 8, 0, 0, 0, 0, 0, 0, 0])
    assert d_bottom.curve[0].tolist() == pytest.approx([16] * 7 + [8, 0])


def test_mean_and_tensor_baselines_and_the_rise_blur():
    r = region()
    model = RegionSum(r)
    x = torch.rand(1, 3, H, W)
    mean_colour = x.mean(dim=(2, 3), keepdim=True)
    full = cm.deletion(model, x, r.float()[None], targets=0, score="logit", pixels_per_step=N, baseline="mean")
    # one step removes everything: the end point is the score of the mean image
    assert full.curve[0, -1].item() == pytest.approx(float(mean_colour.sum() * 16), rel=1e-5)
    given = cm.deletion(model, x, r.float()[None], targets=0, score="logit", pixels_per_step=N, baseline=mean_colour)
    assert torch.allclose(given.curve, full.curve)
    # blur: an 11 x 11 Gaussian of sigma 5 with zero padding, checked against a direct 2-D convolution
    img = torch.rand(1, 2, 12, 13, dtype=torch.float64)
    offsets = torch.arange(-5, 6, dtype=torch.float64)
    g = torch.exp(-(offsets[:, None] ** 2 + offsets[None] ** 2) / 50)
    g = g / g.sum()
    direct = torch.nn.functional.conv2d(img, g.expand(2, 1, 11, 11), padding=5, groups=2)
    assert torch.allclose(cm.gaussian_blur(img), direct)
    start = cm.insertion(model, x, r.float()[None], targets=0, score="logit", steps=2)
    assert start.curve[0, 0].item() == pytest.approx(float((cm.gaussian_blur(x).sum(dim=1)[0] * r).sum()), rel=1e-5)


def test_batching_does_not_change_the_curves():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    x, maps = torch.rand(3, 3, H, W), torch.rand(3, H, W)
    one = cm.deletion(model, x, maps, steps=10, batch_size=1)
    many = cm.deletion(model, x, maps, steps=10, batch_size=64)
    assert torch.allclose(one.curve, many.curve, atol=1e-6)
    assert torch.allclose(one.values, many.values, atol=1e-6)


def test_average_drop_increase_and_gain_by_hand():
    r = region()
    x = torch.ones(1, 1, H, W)
    half = torch.full((1, H, W), 0.5)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    model = RegionSum(r, scale=0.25)  # Y = sig(4), O = sig(2)
    y, o = sig(4), sig(2)
    assert cm.average_drop(model, x, half, targets=0).values.item() == pytest.approx(100 * (y - o) / y, rel=1e-5)
    assert cm.increase_in_confidence(model, x, half, targets=0).values.item() == 0
    assert cm.average_gain(model, x, half, targets=0).values.item() == 0
    negative = RegionSum(r, scale=-0.25)  # Y = sig(-4) < O = sig(-2): confidence goes up
    y, o = sig(-4), sig(-2)
    assert cm.average_drop(negative, x, half, targets=0).values.item() == 0
    assert cm.increase_in_confidence(negative, x, half, targets=0).values.item() == 100
    gain = cm.average_gain(negative, x, half, targets=0).values.item()
    assert gain == pytest.approx(100 * (o - y) / (1 - y), rel=1e-5)


def test_maps_outside_unit_range_are_refused_and_small_maps_upsampled():
    model = RegionSum(region())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cm.average_drop(model, torch.ones(1, 1, H, W), torch.full((1, H, W), 2.0))
    with pytest.raises(ValueError, match="B, H, W"):
        cm.deletion(model, torch.ones(1, 1, H, W), torch.ones(H, W))
    with pytest.raises(ValueError, match="score"):
        cm.deletion(model, torch.ones(1, 1, H, W), torch.ones(1, H, W), score="prob")
    small = cm.deletion(model, torch.ones(1, 1, H, W), torch.ones(1, 4, 4), targets=0, steps=4)
    assert small.curve.shape == (1, 5)


def test_against_torchcam_deletion_insertion():
    """torchcam's DeletionInsertionMetric: same step rule, stable descending ranking and trapezoid; its
    insertion starts from the same baseline as deletion (zeros), RISE's from a blur: set ours to zeros."""
    from functools import partial

    import torchvision
    from torchcam.methods import GradCAM as TorchcamGradCAM
    from torchcam.metrics import DeletionInsertionMetric

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.rand(2, 3, 32, 32)
    extractor = TorchcamGradCAM(model, "layer4")
    try:
        metric = DeletionInsertionMetric(extractor, partial(torch.softmax, dim=-1), steps=20)
        metric.update(x)
        theirs = metric.summary()
        scores = model(x)
        cams = extractor(scores.argmax(1).tolist(), scores)[0]
    finally:
        extractor.remove_hooks()
    maps = torch.nn.functional.interpolate(cams[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    ours_del = cm.deletion(model, x, maps.detach(), steps=20)
    ours_ins = cm.insertion(model, x, maps.detach(), steps=20, baseline="zeros")
    assert ours_del.values.mean().item() == pytest.approx(theirs["deletion_auc"], abs=1e-5)
    assert ours_ins.values.mean().item() == pytest.approx(theirs["insertion_auc"], abs=1e-5)


def test_against_pytorch_grad_cam_confidence_metrics():
    """pytorch-grad-cam's DropInConfidence is ``max(0, Y - O)`` (not divided by Y) on the target's score;
    with a softmax target, ours is 100 * that / Y. Its IncreaseInConfidence is ``[O > Y]``."""
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(4, 3, H, W)
    maps = torch.rand(4, H, W)
    classes = model(x).argmax(1).tolist()
    targets = [ClassifierOutputSoftmaxTarget(c) for c in classes]
    drop = DropInConfidence()(x, maps.numpy(), targets, model)
    rise = IncreaseInConfidence()(x, maps.numpy(), targets, model)
    y = model(x).softmax(1).gather(1, torch.tensor(classes)[:, None])[:, 0].detach()
    ours = cm.average_drop(model, x, maps).values
    assert torch.allclose(ours, 100 * torch.from_numpy(drop).flatten() / y, atol=1e-4)
    assert torch.equal(cm.increase_in_confidence(model, x, maps).values, 100 * torch.from_numpy(rise).flatten().float())
