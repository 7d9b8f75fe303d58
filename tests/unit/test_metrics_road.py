"""ROAD: the imputation against a dense solve of the linear system, and the metric against a hand-made pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import camlens.metrics as cm

OFFSETS = {(-1, -1): 1 / 12, (-1, 0): 1 / 6, (-1, 1): 1 / 12, (0, -1): 1 / 6, (0, 1): 1 / 6, (1, -1): 1 / 12,
           (1, 0): 1 / 6, (1, 1): 1 / 12}  # fmt: skip


def dense_impute(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Rong et al.'s system written out: for each removed pixel, its value is the weighted mean of its
    in-image neighbours, known or removed. Dense matrix, numpy solve, one channel at a time."""
    channels, height, width = image.shape
    unknown = [(i, j) for i in range(height) for j in range(width) if removed[i, j]]
    index = {p: n for n, p in enumerate(unknown)}
    a = np.zeros((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), channels))
    for n, (i, j) in enumerate(unknown):
        for (di, dj), w in OFFSETS.items():
            k, m = i + di, j + dj
            if not (0 <= k < height and 0 <= m < width):
                continue
            a[n, n] += w
            if removed[k, m]:
                a[n, index[(k, m)]] -= w
            else:
                b[n] += w * image[:, k, m]
    solution = np.linalg.solve(a, b)
    out = image.copy()
    for n, (i, j) in enumerate(unknown):
        out[:, i, j] = solution[n]
    return out


def test_imputation_matches_the_dense_solve():
    rng = np.random.default_rng(0)
    images = rng.random((3, 3, 6, 7))
    removed = rng.random((3, 6, 7)) < np.array([0.2, 0.5, 0.85])[:, None, None]
    removed[:, 0, 0] = False  # at least one known pixel per image
    ours = cm.noisy_linear_impute(torch.from_numpy(images), torch.from_numpy(removed), noise=0.0)
    for n in range(3):
        assert np.allclose(ours[n].numpy(), dense_impute(images[n], removed[n]), atol=1e-8)
    # known pixels are untouched, and noise goes only where pixels were removed
    noisy = cm.noisy_linear_impute(torch.from_numpy(images), torch.from_numpy(removed), noise=0.5)
    keep = ~torch.from_numpy(removed)[:, None].expand_as(noisy)
    assert torch.equal(noisy[keep], torch.from_numpy(images)[keep])
    assert not torch.allclose(noisy, ours)


def test_imputation_matches_pytorch_grad_cam():
    """pytorch-grad-cam ships the ROAD authors' imputer (scipy sparse LU); with noise 0 the systems agree."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    torch.manual_seed(0)
    image = torch.rand(3, 10, 9)
    removed = torch.rand(10, 9) < 0.6
    theirs = NoisyLinearImputer(noise=0.0)(image, (~removed).float())  # their mask: 1 = keep
    ours = cm.noisy_linear_impute(image[None], removed[None], noise=0.0)[0]
    assert torch.allclose(ours, theirs, atol=1e-5)


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.weight = nn.Parameter(torch.randn(2, 3 * 6 * 6, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


def test_road_curves_match_a_hand_made_pipeline():
    torch.manual_seed(0)
    model = Linear()
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    maps = torch.rand(2, 6, 6, dtype=torch.float64)  # distinct values: no ties
    percentages = [0.25, 0.5, 0.75]
    model = model.double()
    result = cm.road(model, x, maps, targets=1, percentages=percentages, noise=0.0, score="logit")
    for b in range(2):
        order = np.argsort(-maps[b].flatten().numpy())
        for p_index, p in enumerate(percentages):
            count = round(p * 36)
            for name, chosen in (("morf", order[:count]), ("lerf", order[36 - count :])):
                removed = np.zeros(36, dtype=bool)
                removed[chosen] = True
                imputed = dense_impute(x[b].numpy(), removed.reshape(6, 6))
                with torch.no_grad():
                    expected = float(model(torch.from_numpy(imputed)[None])[0, 1])
                assert result.extra[name][b, p_index].item() == pytest.approx(expected, abs=1e-4)
    combined = ((result.extra["lerf"] - result.extra["morf"]) / 2).mean(dim=1)
    assert torch.allclose(result.values, combined)
    assert result.higher_is_better
    morf = cm.road(model, x, maps, targets=1, percentages=percentages, noise=0.0, score="logit", order="morf")
    assert torch.allclose(morf.values, result.extra["morf"].mean(dim=1))
    assert not morf.higher_is_better


def test_road_is_deterministic_with_a_seed_and_checks_percentages():
    model = Linear()
    x, maps = torch.rand(1, 3, 6, 6), torch.rand(1, 6, 6)
    first = cm.road(model, x, maps, percentages=[0.5], seed=4)
    again = cm.road(model, x, maps, percentages=[0.5], seed=4)
    assert torch.equal(first.values, again.values)
    with pytest.raises(ValueError, match="fractions"):
        cm.road(model, x, maps, percentages=[20])
