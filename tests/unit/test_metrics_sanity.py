"""Sanity check: a layer whose randomisation provably keeps the map and one that provably changes it;
Spearman, SSIM and HOG against scipy and scikit-image."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import camlens.metrics as cm
from helpers import assert_untouched, snapshot


class PositiveScale(nn.Module):
    """``y = a * x`` with a scalar ``a > 0``: re-initialised to another positive value. A positive scale of
    the score scales Grad-CAM's weights, which the per-image normalisation removes: the map is unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(2.0))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.a.uniform_(0.5, 3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * x


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)
        self.scale = PositiveScale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(self.fc(self.pool(self.features(x)).flatten(1)))


def test_randomising_a_positive_scale_keeps_gradcam_and_the_classifier_changes_it():
    model = Net().eval()
    x = torch.rand(2, 3, 24, 24)
    before = snapshot(model)
    rows = cm.sanity_check(model, x, ["gradcam"], mode="cascading", target_layer="features", init="reset",
                           measures=["spearman_abs", "spearman", "ssim", "hog"])  # fmt: skip
    assert_untouched(model, before)
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    assert layers == ["scale", "fc", "features.0"]  # the forward's parameterised modules, last first
    by_layer = {name: [r for r in rows if r["layer"] == name] for name in layers}
    for r in by_layer["scale"]:
        assert r["spearman_abs"] == pytest.approx(1.0) and r["ssim"] == pytest.approx(1.0)
        assert r["hog"] == pytest.approx(1.0)
    # the map is ReLU(sum_k W_ck A_k): a new random W gives another map
    assert all(r["spearman_abs"] < 0.95 for r in by_layer["fc"])
    independent = cm.sanity_check(model, x, ["gradcam"], mode="independent", layers=["fc", "scale"],
                                  target_layer="features", measures=["spearman_abs"])  # fmt: skip
    assert [r["layer"] for r in independent] == ["fc", "fc", "scale", "scale"]
    assert independent[2]["spearman_abs"] == pytest.approx(1.0)  # only the scale randomised: unchanged
    assert_untouched(model, before)


def test_the_explained_class_stays_fixed():
    model = Net().eval()
    x = torch.rand(1, 3, 16, 16)
    rows = cm.sanity_check(model, x, ["gradcam"], targets=[3], layers=["scale"], target_layer="features",
                           measures=["spearman_abs"], keep_maps=True)  # fmt: skip
    import camlens

    original = camlens.explain(model, x, ["gradcam"], "features", 3)["gradcam"]
    assert torch.allclose(rows.maps["original"]["gradcam"].float(), original, atol=1e-6)
    assert set(rows.maps) == {"original", "scale"}
    with pytest.raises(ValueError, match="mode"):
        cm.sanity_check(model, x, ["gradcam"], mode="cascade")
    with pytest.raises(ValueError, match="no layer named"):
        cm.sanity_check(model, x, ["gradcam"], layers=["fcc"])


def test_spearman_ssim_hog_against_scipy_and_skimage():
    from scipy.stats import spearmanr
    from skimage.feature import hog
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = np.round(rng.random((3, 24, 28)) * 4) / 4  # many ties
    b = np.round(rng.random((3, 24, 28)) * 4) / 4 + 0.3 * a
    ours = cm.spearman(torch.from_numpy(a), torch.from_numpy(b))
    expected = [spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(3)]
    assert ours.tolist() == pytest.approx(expected, abs=1e-10)
    a01, b01 = a / a.max(), b / b.max()
    ours = cm.ssim(torch.from_numpy(a01), torch.from_numpy(b01))
    expected = [structural_similarity(a01[i], b01[i], data_range=1.0) for i in range(3)]
    assert ours.tolist() == pytest.approx(expected, abs=1e-10)
    from camlens.metrics.sanity import hog_similarity

    ours = hog_similarity(torch.from_numpy(a01), torch.from_numpy(b01))
    expected = [np.corrcoef(hog(a01[i]), hog(b01[i]))[0, 1] for i in range(3)]
    assert ours.tolist() == pytest.approx(expected, abs=1e-10)


def test_redraw_keeps_each_parameters_scale_and_the_buffers_and_reset_does_not():
    import torchvision

    from camlens.metrics.sanity import randomise

    torch.manual_seed(0)
    trained = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():  # trained-looking statistics: shifted, scaled weights and running stats
        for p in trained.parameters():
            p.mul_(3.0).add_(0.5).add_(0.1 * torch.randn_like(p))
        for name, b in trained.named_buffers():
            if name.endswith("running_mean"):
                b.add_(1.0)
    redrawn = copy.deepcopy(trained)
    randomise(redrawn, 0)
    for (name, before), after in zip(trained.named_parameters(), redrawn.parameters(), strict=True):
        assert not torch.equal(before, after), name
        if before.numel() >= 64:  # within 4 standard errors of the draw
            n, sd = before.numel(), float(before.std())
            assert float(after.mean()) == pytest.approx(float(before.mean()), abs=4 * sd / n**0.5), name
            truncated_sd = 0.8796 * sd  # the standard deviation of N(0, 1) truncated to [-2, 2]
            assert float(after.std()) == pytest.approx(truncated_sd, rel=4 / (2 * n) ** 0.5), name
            assert float((after - before.mean()).abs().max()) <= 2 * sd + 1e-5, name
    for (name, before), after in zip(trained.named_buffers(), redrawn.buffers(), strict=True):
        assert torch.equal(before, after), name
    reset = copy.deepcopy(trained)
    randomise(reset, 0, init="reset")
    assert torch.equal(reset.bn1.running_mean, torch.zeros(64)) and torch.equal(reset.bn1.weight, torch.ones(64))
    with pytest.raises(ValueError, match="init"):
        randomise(reset, 0, init="xavier")
