"""The ground-truth benchmark (:mod:`camlens.metrics.ground_truth`): Kendall's tau against scipy, the
report on a linear model whose evidence is known in closed form, and the report on a tiny CNN trained
here on the coloured-patch task."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from camlens.metrics.ground_truth import box_masks, control_maps, ground_truth_report, kendall_tau
from camlens.synthetic import TinyCNN, inside, patch_dataset, train


def test_kendall_tau_is_scipys_tau_b_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 12)
        a = [rng.randint(0, 4) for _ in range(n)]
        b = [rng.randint(0, 4) for _ in range(n)]
        expected = stats.kendalltau(a, b, variant="b").statistic
        if expected != expected:
            assert kendall_tau(a, b) != kendall_tau(a, b)
        else:
            assert kendall_tau(a, b) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError):
        kendall_tau([1, 2], [1])


def test_box_masks_are_the_synthetic_boxes():
    data = patch_dataset(6, seed=3)
    masks = box_masks(data.boxes, 32, 32)
    for row in range(32):
        for col in range(32):
            point = torch.tensor([[row, col]] * 6)
            assert torch.equal(masks[:, row, col], inside(data.boxes, point))


class BoxSum(nn.Module):
    """Class 0's logit is the mean of the pixels in a fixed box (all channels); class 1's is 0."""

    def __init__(self, box: tuple[int, int, int, int], size: int = 32) -> None:
        super().__init__()
        self.box = box
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, left, bottom, right = self.box
        score = x[:, :, top:bottom, left:right].mean(dim=(1, 2, 3))
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def test_report_on_a_model_whose_evidence_is_known():
    """The model reads only a box in the top-right corner; the perfect map (the box), the inverted map
    and the two controls have known evidence masses (1, ~box share, small, 0), and deletion, insertion
    and Average Drop must rank them in exactly that order on this model (tau = 1)."""
    box = (0, 24, 8, 32)
    n = 24
    generator = torch.Generator().manual_seed(0)
    images = 0.2 * torch.rand(n, 3, 32, 32, generator=generator)
    images[:, :, box[0] : box[2], box[1] : box[3]] = 1.0
    boxes = torch.tensor([box] * n)
    mask = box_masks(boxes, 32, 32).float()
    report = ground_truth_report(
        BoxSum(box),
        images,
        boxes,
        {"perfect": mask, "inverted": 1 - mask},
        ["deletion", "insertion", "average_drop", "coherency"],
        targets=torch.zeros(n, dtype=torch.long),
        options={"deletion": {"steps": 32}, "insertion": {"steps": 32}},
    )
    order = [row["method"] for row in report.methods]
    assert order == ["perfect", "control:random", "control:centre", "inverted"]
    masses = {row["method"]: row["evidence_mass"] for row in report.methods}
    assert masses["perfect"] == pytest.approx(1.0) and masses["inverted"] == 0.0
    assert masses["control:random"] == pytest.approx(64 / 1024, abs=0.01)
    peaks = {row["method"]: row["evidence_peak"] for row in report.methods}
    assert peaks["perfect"] == 1.0 and peaks["inverted"] == 0.0
    agreement = {row["metric"]: row for row in report.agreement}
    for metric in ("deletion", "insertion", "average_drop"):
        assert agreement[metric]["kendall_tau"] == pytest.approx(1.0), metric
        assert agreement[metric]["n_methods"] == 4
        assert not agreement[metric]["controls_last"]  # the inverted map is worse than both controls
    assert agreement["coherency"]["n_methods"] == 0  # it explains again: not for maps given as tensors
    markdown = report.to_markdown()
    assert "| perfect | 1.000 | 1.000 |" in markdown


def test_control_maps():
    controls = control_maps(2, 8, 10, seed=1)
    centre = controls["control:centre"]
    assert centre.shape == (2, 8, 10) and torch.equal(centre[0], centre[1])
    assert centre[0].argmax() in (3 * 10 + 4, 3 * 10 + 5, 4 * 10 + 4, 4 * 10 + 5)  # the middle
    assert torch.equal(controls["control:random"], control_maps(2, 8, 10, seed=1)["control:random"])


@pytest.mark.slow
def test_report_on_a_tiny_cnn_trained_on_the_patch_task():
    """On a CNN trained here, Grad-CAM's evidence mass is far above both model-blind controls, methods
    that cannot run are said, and deletion agrees with the ground truth better than chance."""
    torch.manual_seed(0)
    model = TinyCNN()
    assert train(model, patch_dataset(1500, seed=0, distractor="colour"), steps=250) >= 0.95
    test = patch_dataset(24, seed=1, distractor="colour")
    methods = ["gradcam", "gradcam++", "layercam", "eigencam", "ablationcam", "guided_backprop", "legrad"]
    report = ground_truth_report(
        model, test.images, test.boxes, methods, ["deletion", "insertion"], targets=test.labels,
        options={"deletion": {"steps": 16}, "insertion": {"steps": 16}},
    )  # fmt: skip
    assert set(report.skipped) == {"legrad"}  # attention probabilities: transformers only
    masses = {row["method"]: row["evidence_mass"] for row in report.methods}
    chance = 64 / 1024
    assert masses["gradcam"] > 3 * chance
    assert masses["gradcam"] > 2 * max(masses["control:random"], masses["control:centre"])
    agreement = {row["metric"]: row for row in report.agreement}
    assert agreement["deletion"]["n_methods"] == len(methods) - 1 + 2
    assert agreement["deletion"]["kendall_tau"] > 0
