"""Pointing games, Gini sparseness, Complexity, Coherency, ADCC/ARCC, Max-Sensitivity, evaluate/summarise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import camlens
import camlens.metrics as cm
from helpers import assert_untouched, snapshot


def test_pointing_game_tolerance_is_fifteen_pixels_euclidean():
    masks = torch.zeros(4, 40, 60, dtype=torch.bool)
    masks[:, 10:20, 0:10] = True  # columns 0..9
    maps = torch.zeros(4, 40, 60)
    maps[0, 15, 24] = 1  # 15 columns right of column 9: hit
    maps[1, 15, 25] = 1  # 16: miss
    maps[2, 29, 18] = 1  # nearest mask pixel (19, 9): sqrt(100 + 81) = 13.5: hit
    maps[3, 31, 21] = 1  # (12, 12) from (19, 9): sqrt(144 + 144) = 17.0: miss
    assert cm.pointing_game(maps, masks).values.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert cm.pointing_game(maps, masks, tolerance=0).values.tolist() == [0.0, 0.0, 0.0, 0.0]
    empty = cm.pointing_game(maps[:1], torch.zeros(1, 40, 60, dtype=torch.bool)).values
    assert math.isnan(empty.item())
    with pytest.raises(TypeError, match="boolean"):
        cm.pointing_game(maps, masks.float())


def test_energy_pointing_game_and_boxes_by_hand():
    masks = cm.boxes_to_masks([[(0, 0, 2, 1)], [(1, 1, 3, 2), (0, 0, 1, 1)]], (2, 3))
    assert masks.int().tolist() == [[[1, 1, 0], [0, 0, 0]], [[1, 0, 0], [0, 1, 1]]]
    maps = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]], [[1.0, 1.0, 1.0], [1.0, 1.0, 5.0]]])
    assert cm.energy_pointing_game(maps, masks).values.tolist() == pytest.approx([3 / 10, 7 / 10])
    assert math.isnan(cm.energy_pointing_game(torch.zeros(1, 2, 3), masks[:1]).values.item())
    with pytest.raises(ValueError, match="non-negative"):
        cm.energy_pointing_game(-maps, masks)


def test_gini_by_hand_and_against_quantus():
    # sorted 1, 2, 3, 4: (-3*1 - 1*2 + 1*3 + 3*4) / (4 * 10) = 0.25
    maps = torch.tensor([[[4.0, 1.0], [3.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]]])
    assert cm.sparseness(maps).values.tolist() == pytest.approx([0.25, 0.0])
    assert cm.sparseness(torch.zeros(1, 2, 2)).values.item() == 0.0
    import quantus

    rng = np.random.default_rng(0)
    a = rng.random((3, 1, 8, 8)) ** 4
    theirs = quantus.Sparseness(disable_warnings=True, display_progressbar=False)(
        model=None, x_batch=rng.random((3, 1, 8, 8)), y_batch=np.zeros(3, dtype=int), a_batch=a,
        channel_first=True,
    )  # fmt: skip
    ours = cm.sparseness(torch.from_numpy(a[:, 0])).values
    assert ours.tolist() == pytest.approx(theirs, abs=1e-5)  # Quantus adds 1e-7 to every value


def test_pointing_and_mass_against_quantus():
    """Quantus' PointingGame has no tolerance (hit iff the maximum is in the mask); RelevanceMassAccuracy is
    the energy pointing game."""
    import quantus

    rng = np.random.default_rng(1)
    a = rng.random((4, 1, 16, 16))
    s = np.zeros((4, 1, 16, 16))
    s[:, :, 4:10, 3:12] = 1
    kwargs = dict(model=None, x_batch=rng.random((4, 1, 16, 16)), y_batch=np.zeros(4, dtype=int), a_batch=a,
                  s_batch=s, channel_first=True)  # fmt: skip
    pointing = quantus.PointingGame(disable_warnings=True, display_progressbar=False)(**kwargs)
    mass = quantus.RelevanceMassAccuracy(disable_warnings=True, display_progressbar=False)(**kwargs)
    maps, masks = torch.from_numpy(a[:, 0]), torch.from_numpy(s[:, 0] > 0)
    assert cm.pointing_game(maps, masks, tolerance=0).values.tolist() == [float(v) for v in pointing]
    assert cm.energy_pointing_game(maps, masks).values.tolist() == pytest.approx(mass, abs=1e-6)


class GapNet(nn.Module):
    """conv -> ReLU -> GAP -> linear: Grad-CAM at ``features`` is ReLU(sum_k W_ck A_k) exactly."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def test_complexity_coherency_adcc_by_hand():
    model = GapNet().eval()
    x = torch.rand(2, 3, 12, 12)
    import camlens

    maps = camlens.explain(model, x, ["gradcam"], "features")["gradcam"]
    before = snapshot(model)
    coh = cm.coherency(model, x, maps, method="gradcam", target_layer="features")
    assert_untouched(model, before)
    classes = model(x).argmax(1)
    again = camlens.explain(model, x * maps[:, None], ["gradcam"], "features", classes)["gradcam"]
    expected = [(1 + np.corrcoef(again[b].flatten(), maps[b].flatten())[0, 1]) / 2 for b in range(2)]
    assert coh.values.tolist() == pytest.approx(expected, abs=1e-5)
    com = cm.complexity(maps).values
    assert com.tolist() == pytest.approx(maps.abs().mean(dim=(1, 2)).tolist())
    drop = cm.average_drop(model, x, maps).values / 100
    adcc = cm.adcc(model, x, maps, method="gradcam", target_layer="features")
    hand = 3 / (1 / coh.values + 1 / (1 - com) + 1 / (1 - drop))
    assert torch.allclose(adcc.values, hand, atol=1e-5)
    arcc = cm.arcc(model, x, maps, method="gradcam", target_layer="features", percentages=[0.5])
    road = cm.road(model, x, maps, percentages=[0.5]).values
    term = (2 * road).clamp(0, 1)
    hand = torch.where(term > 0, 3 / (1 / coh.values + 1 / (1 - com) + 1 / term.clamp(min=1e-12)), torch.zeros(2))
    assert torch.allclose(arcc.values, hand, atol=1e-5)


def test_coherency_against_pytorch_grad_cam():
    """pytorch-grad-cam's Coherency with its own GradCAM as the base method; ours given the same method as a
    callable. It adds 1e-8 to the denominator."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.metrics.arcc import Coherency, Complexity
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = GapNet().eval()
    x = torch.rand(2, 3, 12, 12)
    classes = model(x).argmax(1).tolist()
    targets = [ClassifierOutputTarget(c) for c in classes]
    with GradCAM(model, [model.features]) as cam:
        maps = cam(x, targets)
        theirs = Coherency()(x, maps, targets, model, cam)

        def method(images, _targets):
            return torch.from_numpy(cam(images, targets))

        ours = cm.coherency(model, x, torch.from_numpy(maps), classes, method=method).values
    assert ours.tolist() == pytest.approx(theirs.tolist(), abs=1e-5)
    assert cm.complexity(torch.from_numpy(maps)).values.tolist() == pytest.approx(Complexity()(maps).tolist(), abs=1e-6)


def test_max_sensitivity_by_construction():
    # a method that ignores the input: sensitivity 0; a method equal to the input: ||d|| / ||x|| <= r sqrt(n)/||x||
    x = torch.rand(2, 1, 8, 8) + 1
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    fixed = cm.max_sensitivity(model, x, torch.ones(2, 8, 8), method=lambda images, t: torch.ones(len(images), 8, 8))
    assert fixed.values.tolist() == [0.0, 0.0]
    identity = cm.max_sensitivity(model, x, x[:, 0], method=lambda images, t: images[:, 0], radius=0.1, samples=5)
    bound = 0.1 * 8 / x.flatten(1).norm(dim=1)
    assert (identity.values <= bound + 1e-6).all() and (identity.values > bound / 4).all()
    absolute = cm.max_sensitivity(model, x, x[:, 0], method=lambda images, t: images[:, 0], radius=0.1,
                                  samples=5, relative=False)  # fmt: skip
    assert torch.allclose(absolute.values, identity.values * x.flatten(1).norm(dim=1), atol=1e-5)
    assert not identity.higher_is_better


def test_evaluate_and_summarise():
    model = GapNet().eval()
    x = torch.rand(3, 3, 12, 12)
    masks = torch.zeros(3, 12, 12, dtype=torch.bool)
    masks[:, :6] = True
    rows = cm.evaluate(model, x, ["gradcam", "guided_backprop"], ["deletion", "energy_pointing_game", "sparseness"],
                       masks=masks, target_layer="features", options={"deletion": {"steps": 6}})  # fmt: skip
    assert len(rows) == 2 * 3 * 3
    summary = cm.summarise(rows)
    cell = next(r for r in summary if r["method"] == "gradcam" and r["metric"] == "deletion")
    values = [r["value"] for r in rows if r["method"] == "gradcam" and r["metric"] == "deletion"]
    mean = sum(values) / 3
    assert cell["mean"] == pytest.approx(mean)
    assert cell["ci_low"] is None and cell["ci_high"] is None and cell["n"] == 3  # 3 images: n too small
    assert not cell["higher_is_better"]
    table = cm.to_markdown(summary)
    assert "deletion (lower better)" in table and "| guided_backprop |" in table
    with pytest.raises(ValueError, match="masks"):
        cm.evaluate(model, x, ["gradcam"], ["pointing_game"])
    with pytest.raises(ValueError, match="closest"):
        cm.evaluate(model, x, ["gradcam"], ["delition"])


class ChannelsLast(nn.Module):
    """A channels-last stage (B, H, W, C), pooled and classified: its layout can be stated either way."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 6, 2, stride=2)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.norm(self.stem(x).permute(0, 2, 3, 1)).mean(dim=(1, 2)))


def test_evaluate_takes_the_stated_layout_also_where_a_metric_explains_again():
    model = ChannelsLast().eval()
    x = torch.rand(2, 3, 16, 16)
    rows = {
        layout: cm.evaluate(model, x, ["gradcam"], ["coherency"], target_layer="norm", layout=layout)
        for layout in ("nhwc", "nchw")
    }
    for layout, got in rows.items():

        def explain_fn(images, targets, layout=layout):
            return camlens.explain(model, images, ["gradcam"], "norm", targets, layout=layout)["gradcam"]

        maps = explain_fn(x, None)
        want = cm.coherency(model, x, maps, method=explain_fn).values.tolist()
        assert [r["value"] for r in got] == pytest.approx(want, abs=1e-6), layout
    assert [r["value"] for r in rows["nhwc"]] != pytest.approx([r["value"] for r in rows["nchw"]], abs=1e-3)
